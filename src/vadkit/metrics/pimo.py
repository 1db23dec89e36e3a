"""PIMO curves and AUPIMO: per-image recall at a very low false positive rate on normal images (Bertoldo, Ameln,
Vaidya, Akcay, "AUPIMO: Redefining Visual Anomaly Detection Benchmarks with High Speed and Low Tolerance", BMVC 2024,
arXiv:2401.01984; reference code github.com/jpcbertoldo/aupimo, also ``anomalib.metrics.pimo``).

Why AUPIMO: pixel AUROC and AU-PRO integrate up to FPR 0.3, where almost every method looks near-perfect on MVTec AD
and VisA. AUPIMO asks how much of each defect is found while the model raises (almost) no alarm on defect-free
images, and it gives one score *per anomalous image*, so results can be compared image by image.

Definition. Images whose mask has no anomalous pixel are *normal*, the others *anomalous*. A pixel is flagged when
``score >= t``.

- Shared FPR: ``F(t)`` = mean over the normal images of the fraction of that image's pixels flagged at ``t`` (the
  paper's and the reference's "mean per-image FPR"). The images of an (N, H, W) stack all have H*W pixels, so this
  is exactly the pooled fraction of flagged pixels of all normal images, which is what is computed here (integer
  counts, no rounding). Pixels of anomalous images never enter the FPR: the operating point is set on normal
  images only.
- Per-image TPR: for each anomalous image ``i``, ``T_i(t)`` = fraction of its anomalous pixels flagged at ``t``.
- The PIMO curve of image ``i`` is ``T_i`` against ``F`` with FPR on a log axis, and
  ``AUPIMO_i = integral of T_i d(log F)`` over ``[log L, log U]`` divided by ``log(U / L)``, in [0, 1];
  default ``(L, U) = (1e-5, 1e-4)``. A perfect map scores 1; a map that ignores the mask scores about
  ``(U - L) / log(U / L)`` (3.9e-5 for the default bounds).

Exact computation. ``F`` only changes at the scores of normal pixels, so the curve has one vertex per distinct normal
score ``t_k`` (descending): between the threshold just above ``t_k`` and ``t_k`` itself the shared FPR goes from
``F_{k-1}`` to ``F_k`` while ``T_i`` goes from ``T_i(> t_k)`` to ``T_i(>= t_k)`` (anomalous pixels tied with
``t_k`` move with it). The trapezoid rule in log-FPR space (the paper's and reference's numerical rule) on these
vertices is the limit of the reference's result as its threshold grid gets infinitely fine, and it is what we
compute, without a grid:

1. only the top ``ceil(U * n_normal)`` normal scores matter (FPR <= U); they are found with ``np.partition`` (O(n),
   no full sort) and only they are sorted;
2. the integration range is cut exactly at ``log L`` and ``log U`` by linear interpolation inside the segment that
   crosses each bound (the trapezoid rule's own interpolant), so a perfect map gives exactly 1; the reference
   instead starts and stops at the grid threshold whose FPR is closest to each bound (and warns when it is more than
   1% off), which is an approximation of this;
3. the integral is linear in the per-threshold counts, so each segment's trapezoid becomes two weights, one on
   ``T_i(> t_k)`` and one on ``T_i(>= t_k)``. Summed over thresholds, the integral of image ``i`` is the mean over
   its anomalous pixels of a cumulative weight looked up with ``np.searchsorted`` at the pixel's score. That is one
   binary search per anomalous pixel and one ``np.bincount`` over images, with no (images x thresholds) matrix and
   no Python loop over images or thresholds.

Edge cases (reference behaviour in brackets):

- no normal image, or no anomalous image: ``UndefinedMetricError`` [reference: error];
- normal images get no AUPIMO: NaN in ``per_image``, excluded from ``mean`` and ``count`` [same];
- lower bound unreachable, i.e. the smallest non-zero shared FPR (the top normal score and its ties) is above ``L``:
  there is no threshold with an FPR at ``L``. This happens with fewer than ``1 / L`` normal pixels (100,000 for the
  default) or with ties at the top of coarsely quantised maps, and raises ``UndefinedMetricError`` with the
  numbers [reference: its FPR=0 points are dropped with a warning and its bound-mismatch warning fires];
- few curve vertices in the range: the reference refuses to integrate over 30 points or fewer (unless ``force``)
  and warns below 300. Its points are grid thresholds, so there the check is about grid resolution. Here the
  vertices are the distinct normal-score levels with ``L <= F <= U``, i.e. how many normal pixels actually decide
  the score (about ``(U - L) * n_normal``: 118 for 20 normal images of 256 x 256). We keep the reference's hard
  limit on that count: 30 or fewer raises ``UndefinedMetricError`` unless ``force=True``, which computes the exact
  value anyway and emits a ``RuntimeWarning``. The count is returned as ``AUPIMOResult.n_points``; the soft
  warning below 300 is not repeated, because the value is exact however many vertices there are.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.curves import sort_score_runs, validate_labels, validate_scores
from vadkit.metrics.pixel import as_mask_and_map_stacks

__all__ = ["AUPIMOResult", "PIMOCurves", "aupimo", "pimo_curves"]

DEFAULT_FPR_BOUNDS = (1e-5, 1e-4)
# The reference implementation refuses to integrate over this many points or fewer (without `force`).
MIN_POINTS = 30


@dataclass(frozen=True)
class PIMOCurves:
    """PIMO curves of every anomalous image on a shared FPR axis, for plotting (log x-axis).

    Attributes:
        thresholds: (K,) score thresholds, **descending**: distinct normal-image scores (see ``pimo_curves``).
        shared_fpr: (K,) shared FPR at each threshold, ascending (mean over normal images of the flagged fraction).
        per_image_tpr: (N, K) float64, fraction of each anomalous image's defect pixels with ``score >= threshold``;
            rows of normal images are NaN.
        image_classes: (N,) int64, 0 = normal image (no anomalous pixel), 1 = anomalous image.
    """

    thresholds: np.ndarray
    shared_fpr: np.ndarray
    per_image_tpr: np.ndarray
    image_classes: np.ndarray


@dataclass(frozen=True)
class AUPIMOResult:
    """AUPIMO scores (see the module docstring).

    Attributes:
        per_image: (N,) float64 AUPIMO of each image in [0, 1]; NaN for normal images.
        mean: mean AUPIMO over the anomalous images.
        count: number of anomalous images scored.
        fpr_bounds: ``(L, U)`` the integration range of the shared FPR.
        thresholds_bounds: ``(threshold at U, threshold at L)``, ascending: the highest threshold at which the shared
            FPR reaches U, and the highest at which it reaches L. Flagging ``score >= thresholds_bounds[1]`` keeps the
            shared FPR at or just above L.
        n_points: number of curve vertices (distinct shared-FPR levels) with ``L <= FPR <= U``.
    """

    per_image: np.ndarray
    mean: float
    count: int
    fpr_bounds: tuple[float, float]
    thresholds_bounds: tuple[float, float]
    n_points: int


@dataclass(frozen=True)
class _Stacks:
    """Validated inputs split by image class."""

    image_classes: np.ndarray  # (N,) bool, True = anomalous image
    normal_scores: np.ndarray  # (n_normal,) every pixel of every normal image
    defect_scores: np.ndarray  # (P,) every anomalous pixel of the anomalous images, image by image (C order)
    defect_counts: np.ndarray  # (A,) anomalous pixels per anomalous image, all >= 1


@dataclass(frozen=True)
class _Levels:
    """The shared-FPR step function restricted to FPR <= U: its vertices at distinct normal scores."""

    thresholds: np.ndarray  # (K,) distinct normal scores, descending, from the top one to the first with F >= U
    fpr: np.ndarray  # (K,) float64 shared FPR at each threshold, strictly ascending, fpr[-1] >= U


def _validate_fpr_bounds(fpr_bounds) -> tuple[float, float]:
    try:
        lower, upper = (float(b) for b in fpr_bounds)
    except (TypeError, ValueError):
        raise ValueError(f"fpr_bounds must be two numbers (lower, upper), got {fpr_bounds!r}.") from None
    if not (0.0 < lower < upper <= 1.0):
        raise ValueError(f"fpr_bounds must satisfy 0 < lower < upper <= 1, got ({lower}, {upper}).")
    return lower, upper


def _split_stacks(masks, maps) -> _Stacks:
    masks, maps = as_mask_and_map_stacks(masks, maps)
    labels = validate_labels(masks.ravel(), name="masks").reshape(masks.shape)
    validate_scores(maps.ravel(), name="maps (flattened)")
    if labels.shape[1] * labels.shape[2] == 0:
        raise ValueError(f"masks and maps have no pixels (shape {labels.shape}).")
    anomalous = labels.any(axis=(1, 2))
    n_anomalous = int(anomalous.sum())
    if n_anomalous == len(anomalous):
        raise UndefinedMetricError(
            "PIMO/AUPIMO is undefined: every image has anomalous pixels, so there is no normal image to set the "
            "shared false positive rate on; add defect-free test images."
        )
    if n_anomalous == 0:
        raise UndefinedMetricError(
            "PIMO/AUPIMO is undefined: no image has an anomalous pixel, so there is no per-image recall to measure."
        )
    defect_masks = labels[anomalous]
    return _Stacks(
        image_classes=anomalous,
        normal_scores=maps[~anomalous].ravel(),
        defect_scores=maps[anomalous][defect_masks],
        defect_counts=defect_masks.sum(axis=(1, 2), dtype=np.int64),
    )


def _min_count_reaching(rate: float, n: int) -> int:
    """Smallest count c with ``c / n >= rate`` in float64 (the same arithmetic as the FPR values themselves)."""
    c = min(n, max(1, math.ceil(rate * n)))
    while c > 1 and (c - 1) / n >= rate:
        c -= 1
    while c < n and c / n < rate:
        c += 1
    return c


def _shared_fpr_levels(normal_scores: np.ndarray, upper: float) -> _Levels:
    """Vertices of the shared-FPR step function from the top normal score down to the first level with FPR >= U."""
    n = normal_scores.size
    needed = _min_count_reaching(upper, n)
    # The `needed`-th largest normal score: every level above it has FPR < U, and it has FPR >= U.
    cut = np.partition(normal_scores, n - needed)[n - needed]
    top = normal_scores[normal_scores >= cut]
    runs = sort_score_runs(top)
    return _Levels(thresholds=runs.thresholds, fpr=runs.counts / n)


def _segment_weights(levels: _Levels, lower: float, upper: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Trapezoid weights of the segments that overlap ``[log L, log U]``.

    Segment k runs from ``(log F_{k-1}, T(> t_k))`` to ``(log F_k, T(>= t_k))``. Its part inside the range
    ``[a, b]`` integrates to ``w_gt * T(> t_k) + w_ge * T(>= t_k)``.

    Returns:
        ``(thresholds, w_gt, w_ge)`` for those segments, thresholds **ascending**.
    """
    fpr = levels.fpr
    first = int(np.searchsorted(fpr, lower, side="right"))  # first level with F > L; >= 1 (F_0 := fpr[0] <= L)
    x = np.log(fpr)
    x_left, x_right = x[first - 1 : -1], x[first:]
    log_lower, log_upper = math.log(lower), math.log(upper)
    a = np.maximum(x_left, log_lower)
    b = np.minimum(x_right, log_upper)
    width = x_right - x_left
    lam_a = (a - x_left) / width
    lam_b = (b - x_left) / width
    span = b - a
    w_gt = span * (2.0 - lam_a - lam_b) / 2.0
    w_ge = span * (lam_a + lam_b) / 2.0
    return levels.thresholds[first:][::-1], w_gt[::-1], w_ge[::-1]


def _require_reachable_lower_bound(levels: _Levels, lower: float, n_normal: int) -> None:
    smallest = float(levels.fpr[0])
    if smallest <= lower:
        return
    if 1.0 / n_normal > lower:
        reason = (
            f"the normal images have only {n_normal} pixels, so the smallest non-zero shared FPR is "
            f"1/{n_normal} = {1.0 / n_normal:.3g}; it needs at least {math.ceil(1.0 / lower)} normal pixels "
            "(more defect-free test images or a higher resolution)"
        )
    else:
        tied = round(smallest * n_normal)
        reason = (
            f"the highest normal-image score ({levels.thresholds[0]!r}) is shared by {tied} pixels, so the shared FPR "
            f"jumps from 0 to {smallest:.3g}; the maps are too coarsely quantised (e.g. uint8) to resolve FPR {lower}"
        )
    raise UndefinedMetricError(f"AUPIMO is undefined at the lower FPR bound {lower}: {reason}.")


def aupimo(masks, maps, fpr_bounds=DEFAULT_FPR_BOUNDS, *, force: bool = False) -> AUPIMOResult:
    """Area under each anomalous image's PIMO curve for shared FPR in ``fpr_bounds``, log-scaled, in [0, 1].

    Args:
        masks: (N, H, W) bool or 0/1 ground truth, 1 = anomalous pixel. Images without one are the normal images.
        maps: (N, H, W) finite anomaly maps at mask resolution, higher = more anomalous.
        fpr_bounds: ``(L, U)`` with ``0 < L < U <= 1``; the paper's default is ``(1e-5, 1e-4)``.
        force: compute even when 30 or fewer curve vertices lie in the FPR range (emits a ``RuntimeWarning``).

    Raises:
        UndefinedMetricError: no normal or no anomalous image; the shared FPR cannot go as low as ``L`` (too few
            normal pixels, or ties at the top of the normal scores); 30 or fewer vertices in range without ``force``.
        ValueError: bad ``fpr_bounds``, shape mismatch, mask values other than 0/1, NaN/inf in maps.
    """
    lower, upper = _validate_fpr_bounds(fpr_bounds)
    stacks = _split_stacks(masks, maps)
    n_normal = stacks.normal_scores.size
    levels = _shared_fpr_levels(stacks.normal_scores, upper)
    _require_reachable_lower_bound(levels, lower, n_normal)

    in_range = (levels.fpr >= lower) & (levels.fpr <= upper)
    n_points = int(in_range.sum())
    if n_points <= MIN_POINTS:
        message = (
            f"only {n_points} distinct shared-FPR level(s) lie in [{lower}, {upper}] (the normal images have "
            f"{n_normal} pixels); the AUPIMO reference refuses to integrate over {MIN_POINTS} points or fewer. Add "
            "normal images, use finer maps or wider fpr_bounds"
        )
        if not force:
            raise UndefinedMetricError(f"AUPIMO is unreliable: {message}, or pass force=True.")
        warnings.warn(f"AUPIMO computed with force=True although {message}.", RuntimeWarning, stacklevel=2)

    thresholds, w_gt, w_ge = _segment_weights(levels, lower, upper)
    cum_gt = np.concatenate(([0.0], np.cumsum(w_gt)))
    cum_ge = np.concatenate(([0.0], np.cumsum(w_ge)))
    scores = stacks.defect_scores
    # Weight a defect pixel contributes: segments whose threshold it clears (>= and >), summed.
    pixel_weight = cum_ge[np.searchsorted(thresholds, scores, side="right")]
    pixel_weight += cum_gt[np.searchsorted(thresholds, scores, side="left")]
    n_images = len(stacks.defect_counts)
    image_of_pixel = np.repeat(np.arange(n_images), stacks.defect_counts)
    integral = np.bincount(image_of_pixel, weights=pixel_weight, minlength=n_images) / stacks.defect_counts
    scored = np.clip(integral / (math.log(upper) - math.log(lower)), 0.0, 1.0)
    # An image whose every defect pixel clears the highest threshold in range has TPR 1 throughout: exactly 1,
    # not 1 - 1e-16 from summing the weights.
    starts = np.concatenate(([0], np.cumsum(stacks.defect_counts)[:-1]))
    scored[np.minimum.reduceat(scores, starts) > thresholds[-1]] = 1.0

    per_image = np.full(len(stacks.image_classes), np.nan)
    per_image[stacks.image_classes] = scored
    first_at_lower = int(np.searchsorted(levels.fpr, lower, side="left"))  # first level with F >= L
    return AUPIMOResult(
        per_image=per_image,
        mean=float(scored.mean()),
        count=n_images,
        fpr_bounds=(lower, upper),
        thresholds_bounds=(levels.thresholds[-1].item(), levels.thresholds[first_at_lower].item()),
        n_points=n_points,
    )


def pimo_curves(masks, maps, fpr_bounds=DEFAULT_FPR_BOUNDS, *, max_points: int = 4096) -> PIMOCurves:
    """PIMO curves (per-image TPR against the shared FPR) around the FPR range ``fpr_bounds``, for plotting.

    The curves are evaluated at the distinct normal-image scores whose shared FPR covers ``[L, U]``: from the last
    level at or below ``L`` (or the top normal score when none is) to the first level at or above ``U``. These are
    exactly the vertices ``aupimo`` integrates over (at ``score >= t``; the ``score > t`` end of each vertical step
    is left out of the plot). If there are more than ``max_points`` such levels, ``max_points`` of them evenly spaced
    in log FPR are kept (first and last included), so memory stays (N x max_points) whatever the FPR range.
    Unlike ``aupimo``, an unreachable lower bound or few levels in range are not errors here.

    Args:
        masks: (N, H, W) bool or 0/1 ground truth, 1 = anomalous pixel.
        maps: (N, H, W) finite anomaly maps at mask resolution, higher = more anomalous.
        fpr_bounds: ``(L, U)`` with ``0 < L < U <= 1``.
        max_points: the most thresholds returned (>= 2).

    Raises:
        UndefinedMetricError: no normal or no anomalous image.
        ValueError: bad ``fpr_bounds`` or ``max_points``, shape mismatch, mask values other than 0/1, NaN/inf in maps.
    """
    lower, upper = _validate_fpr_bounds(fpr_bounds)
    if int(max_points) != max_points or max_points < 2:
        raise ValueError(f"max_points must be an integer >= 2, got {max_points!r}.")
    stacks = _split_stacks(masks, maps)
    levels = _shared_fpr_levels(stacks.normal_scores, upper)
    start = max(0, int(np.searchsorted(levels.fpr, lower, side="right")) - 1)  # last level with F <= L
    thresholds, fpr = levels.thresholds[start:], levels.fpr[start:]
    if len(fpr) > max_points:
        log_fpr = np.log(fpr)
        targets = np.linspace(log_fpr[0], log_fpr[-1], int(max_points))
        keep = np.unique(np.searchsorted(log_fpr, targets, side="left").clip(0, len(fpr) - 1))
        thresholds, fpr = thresholds[keep], fpr[keep]

    # Count, per anomalous image, the defect pixels >= each threshold: histogram of "how many thresholds does the
    # pixel clear" per image, then a reverse cumulative sum. Vectorised over images and thresholds.
    ascending = thresholds[::-1]
    k = len(ascending)
    cleared = np.searchsorted(ascending, stacks.defect_scores, side="right")  # thresholds <= score, 0..k
    n_images = len(stacks.defect_counts)
    image_of_pixel = np.repeat(np.arange(n_images), stacks.defect_counts)
    histogram = np.bincount(image_of_pixel * (k + 1) + cleared, minlength=n_images * (k + 1)).reshape(n_images, k + 1)
    at_least = np.cumsum(histogram[:, ::-1], axis=1)[:, :k]  # column j: pixels clearing >= k - j thresholds
    # Column j counts pixels >= ascending[k - 1 - j] = thresholds[j] (descending order): already aligned.
    tpr = at_least / stacks.defect_counts[:, None]

    per_image_tpr = np.full((len(stacks.image_classes), k), np.nan)
    per_image_tpr[stacks.image_classes] = tpr
    return PIMOCurves(
        thresholds=thresholds,
        shared_fpr=fpr,
        per_image_tpr=per_image_tpr,
        image_classes=stacks.image_classes.astype(np.int64),
    )
