"""PIMO curves and AUPIMO: per-image recall at a very low false positive rate on normal images (Bertoldo, Ameln,
Vaidya, Akcay, "AUPIMO: Redefining Visual Anomaly Detection Benchmarks with High Speed and Low Tolerance", BMVC 2024,
arXiv:2401.01984; reference code github.com/jpcbertoldo/aupimo, ``aupimo/pimo_numpy.py``, copied into anomalib as
``anomalib.metrics.pimo``).

Why AUPIMO: pixel AUROC and AU-PRO integrate up to FPR 0.3, where almost every method looks near-perfect on MVTec AD
and VisA. AUPIMO asks how much of each defect is found while the model raises (almost) no alarm on defect-free
images, and it gives one score *per anomalous image*, so results can be compared image by image.

Definition. Images whose mask has no anomalous pixel are *normal*, the others *anomalous*. A pixel is flagged when
``score >= t``.

- Shared FPR: ``F(t)`` = mean over the normal images of the fraction of that image's pixels flagged at ``t`` (the
  paper's and the reference's "mean per-image FPR"). The images of an (N, H, W) stack all have H*W pixels, so this
  is the pooled fraction of flagged pixels of all normal images (up to float rounding). Pixels of anomalous images
  never enter the FPR: the operating point is set on normal images only.
- Per-image TPR: for each anomalous image ``i``, ``T_i(t)`` = fraction of its anomalous pixels flagged at ``t``.
- The PIMO curve of image ``i`` is ``T_i`` against ``F`` with FPR on a log axis, and
  ``AUPIMO_i = integral of T_i d(log F)`` over ``[log L, log U]`` divided by ``log(U / L)``, in [0, 1];
  default ``(L, U) = (1e-5, 1e-4)``. A perfect map scores (about) 1; a map that ignores the mask scores about
  ``(U - L) / log(U / L)`` (3.9e-5 for the default bounds).

Two methods (``aupimo(..., method=...)``; ``AUPIMOResult.method`` and the runs' ``aupimo_method`` say which):

``"reference"`` (default): the numbers the reference code gives, which are the ones papers report. The reference
evaluates the curves on a grid of 300,000 thresholds evenly spaced (``np.linspace``, in the maps' float type) from the
lowest to the highest score of the normal images; the shared FPR at each grid point is the mean of the normal
images' per-image FPRs. For each bound it takes the grid point whose shared FPR is nearest (``argmin |F - bound|``,
the lowest threshold on ties), integrates with the trapezoid rule over log FPR through every grid point between the
two (both included), divides by ``log(U / L)`` and clips to [0, 1]. So the range actually integrated is
``[F_L', F_U']``, the achievable FPRs nearest the bounds, not ``[L, U]``. ``aupimo`` returns the reference's values
(tested against a plain port of its steps on generated maps, equal to 1e-9 and in practice to 1e-14) without its
(images x 300,000) matrices: see ``_reference_aupimo``; 400 maps of 256 x 256 take about 0.1 s. Departures, all
outside what the reference accepts: float16 maps (how run folders store them) are promoted to float32 and integer
maps to float64 before the grid is built, i.e. the value is the reference's on ``maps.astype(np.float32)`` (float16
cannot hold 300,000 distinct thresholds; the reference stops there, and rejects integer maps).

``"exact"``: the exact PIMO curve, integrated exactly from ``L`` to ``U``. ``F`` only changes at the scores of normal
pixels, so the curve has one vertex per distinct normal score ``t_k`` (descending): between the threshold just above
``t_k`` and ``t_k`` itself the shared FPR goes from ``F_{k-1}`` to ``F_k`` while ``T_i`` goes from ``T_i(> t_k)`` to
``T_i(>= t_k)`` (anomalous pixels tied with ``t_k`` move with it). The trapezoid rule in log-FPR space on these
vertices is what the reference converges to as its grid gets finer *between* the bounds; the integration range is
cut exactly at ``log L`` and ``log U`` by linear interpolation inside the segment that crosses each bound, so a
perfect map gives exactly 1. Computed with ``np.partition`` (only the top ``ceil(U * n_normal)`` normal scores are
sorted) and, since the integral is linear in the per-threshold counts, one cumulative weight per anomalous pixel
looked up with ``np.searchsorted`` and one ``np.bincount`` over images.

How far apart they are: the grid is fine enough (thousands of grid points in range for typical maps) that the
difference is the bound matching (on 4 normal images of 256 x 256, the reference's values equal the exact curve
integrated over ``[F_L', F_U']`` and divided by ``log(U / L)`` to 2e-16: ``tests/metrics/test_pimo.py``). ``F_L'`` is
a count of normal pixels over ``n``, so it misses ``L`` by up to ``1 / (2 n)``, relatively ``1 / (2 L n)``; the
reference's integral then covers ``log(F_U' / F_L')`` instead of ``log(U / L)`` (a perfect map scores
``log(F_U' / F_L') / log(U / L)``, clipped to 1) and a per-image value moves by up to about
``T_i(L) / (2 L n log(U / L))`` (measured by number of normal images: BENCHMARKS.md, "AUPIMO as published",
``benchmarks/bench_aupimo_methods.py``; a few 1e-2 with 4 to 10 normal images, a few 1e-3 from 20 on). It is
not "the same in the limit": it depends on where ``L * n`` falls between two integers, not only on ``n``. Report
``"reference"`` to compare with papers; ``"exact"`` when comparing runs on test sets of different sizes matters more.

``pimo_curves`` (the plots) draws the exact curve, whichever method the AUPIMO in the title used; at plot scale the
two curves are the same, they differ in where the integral starts and stops.

Edge cases (both methods unless said; the reference's behaviour, which ``"reference"`` follows, in brackets):

- no normal image, or no anomalous image: ``UndefinedMetricError`` [error];
- normal images get no AUPIMO: NaN in ``per_image``, excluded from ``mean`` and ``count`` [same];
- lower bound unreachable, i.e. the smallest non-zero shared FPR (the top normal score and its ties) is above ``L``.
  This happens with fewer than ``1 / L`` normal pixels (100,000 for the default) or with ties at the top of coarsely
  quantised maps, and raises ``UndefinedMetricError`` with the numbers [error: the level is outside the shared FPR
  range];
- ``"reference"``: both bounds select the same grid point, the normal maps are constant, or the grid's float type
  cannot hold 300,000 distinct thresholds between the normal min and max: ``UndefinedMetricError`` [error];
- few points in the range: the reference refuses to integrate over 30 points or fewer unless ``force`` and warns
  below 300. ``"reference"`` does exactly that (points = grid points in range, ``AUPIMOResult.n_points``). The
  reference's other warning, a chosen grid point's FPR more than 1% from its bound, is not repeated: with tens of
  normal images it fires on most test sets (``L * n`` is a few tens of pixels), so the achieved range is returned
  as ``AUPIMOResult.achieved_fpr_bounds`` and the HTML report states it. ``"exact"`` counts
  the distinct shared-FPR levels with ``L <= F <= U`` instead, i.e. how many normal pixels actually decide the score
  (about ``(U - L) * n_normal``: 118 for 20 normal images of 256 x 256), keeps the hard limit of 30 (``force=True``
  computes anyway with a ``RuntimeWarning``) and not the soft warning, because its value is exact however many
  vertices there are.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.curves import sort_score_runs, validate_labels, validate_scores
from vadkit.metrics.pixel import as_mask_and_map_stacks

__all__ = ["AUPIMOResult", "AUPIMO_METHODS", "DEFAULT_AUPIMO_METHOD", "PIMOCurves", "aupimo", "pimo_curves"]

DEFAULT_FPR_BOUNDS = (1e-5, 1e-4)
#: ``"reference"``: the published numbers (threshold grid of the reference code); ``"exact"``: the exact curve.
AUPIMO_METHODS = ("reference", "exact")
DEFAULT_AUPIMO_METHOD = "reference"
#: The reference's ``num_threshs`` default: thresholds evenly spaced between the lowest and highest normal score.
REFERENCE_NUM_THRESHOLDS = 300_000
# The reference refuses to integrate over this many points or fewer (without `force`) and warns below SOFT_POINTS.
MIN_POINTS = 30
SOFT_POINTS = 300


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
        fpr_bounds: ``(L, U)`` the requested integration range of the shared FPR.
        thresholds_bounds: ``(threshold at U, threshold at L)``, ascending. ``"reference"``: the grid thresholds
            the integration starts and stops at (the reference's ``thresh_bounds``). ``"exact"``: the highest
            threshold at which the shared FPR reaches U, and the highest at which it reaches L, so flagging
            ``score >= thresholds_bounds[1]`` keeps the shared FPR at or just above L.
        n_points: curve points the integral runs through. ``"reference"``: grid thresholds from the one chosen for
            U to the one chosen for L, both included (the reference's ``num_points_integral``). ``"exact"``: curve
            vertices (distinct shared-FPR levels) with ``L <= FPR <= U``.
        method: ``"reference"`` or ``"exact"`` (see the module docstring).
        achieved_fpr_bounds: ``(F_L', F_U')``, the shared-FPR range actually integrated over: ``fpr_bounds`` for
            ``"exact"``; for ``"reference"`` the shared FPR of the grid points chosen for L and U (where the
            reference warns if one is more than 1% off, vadkit reports both; with tens of normal images a miss of a
            few percent is the rule).
    """

    per_image: np.ndarray
    mean: float
    count: int
    fpr_bounds: tuple[float, float]
    thresholds_bounds: tuple[float, float]
    n_points: int
    method: str
    achieved_fpr_bounds: tuple[float, float]


@dataclass(frozen=True)
class _Stacks:
    """Validated inputs split by image class."""

    image_classes: np.ndarray  # (N,) bool, True = anomalous image
    normal_scores: np.ndarray  # (n_normal,) every pixel of every normal image, image by image (C order)
    n_normal_images: int
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
        n_normal_images=len(anomalous) - n_anomalous,
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


def _validate_method(method: str) -> str:
    if method not in AUPIMO_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, AUPIMO_METHODS))}, got {method!r}.")
    return method


def _per_image_means(pixel_values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of ``pixel_values`` over each image's run of ``counts`` consecutive pixels (one bincount)."""
    image_of_pixel = np.repeat(np.arange(len(counts)), counts)
    return np.bincount(image_of_pixel, weights=pixel_values, minlength=len(counts)) / counts


def _result(stacks: _Stacks, scored: np.ndarray, bounds, thresholds_bounds, n_points, method,
            achieved) -> AUPIMOResult:
    per_image = np.full(len(stacks.image_classes), np.nan)
    per_image[stacks.image_classes] = scored
    return AUPIMOResult(per_image=per_image, mean=float(scored.mean()), count=len(scored), fpr_bounds=bounds,
                        thresholds_bounds=thresholds_bounds, n_points=n_points, method=method,
                        achieved_fpr_bounds=achieved)


def _few_points(n_points: int, where: str, advice: str, force: bool) -> None:
    """The reference's hard limit: 30 points or fewer raise, unless ``force`` (then a warning)."""
    message = (f"only {n_points} point(s) lie in {where}; the AUPIMO reference refuses to integrate over "
               f"{MIN_POINTS} points or fewer. {advice}")
    if not force:
        raise UndefinedMetricError(f"AUPIMO is unreliable: {message} Or pass force=True.")
    warnings.warn(f"AUPIMO computed with force=True although {message}", RuntimeWarning, stacklevel=4)


def aupimo(masks, maps, fpr_bounds=DEFAULT_FPR_BOUNDS, *, method: str = DEFAULT_AUPIMO_METHOD,
           force: bool = False, num_thresholds: int = REFERENCE_NUM_THRESHOLDS) -> AUPIMOResult:
    """Area under each anomalous image's PIMO curve for shared FPR in ``fpr_bounds``, log-scaled, in [0, 1].

    Args:
        masks: (N, H, W) bool or 0/1 ground truth, 1 = anomalous pixel. Images without one are the normal images.
        maps: (N, H, W) finite anomaly maps at mask resolution, higher = more anomalous.
        fpr_bounds: ``(L, U)`` with ``0 < L < U <= 1``; the paper's default is ``(1e-5, 1e-4)``.
        method: ``"reference"`` (default): the values the reference code gives and papers report (threshold grid,
            integration between the grid points nearest the bounds); ``"exact"``: the exact curve, integrated
            exactly from L to U. The module docstring says how they differ and by how much.
        force: compute even when 30 or fewer curve points lie in the FPR range (emits a ``RuntimeWarning``).
        num_thresholds: size of the reference's threshold grid (``"reference"`` only; the reference's default).

    Warns:
        RuntimeWarning (``"reference"`` only, as the reference does): fewer than 300 grid points lie in the
        integration range. (The reference also warns when the grid point chosen for a bound has an FPR more than 1%
        away from it; that is returned instead, as ``achieved_fpr_bounds``.)

    Raises:
        UndefinedMetricError: no normal or no anomalous image; the shared FPR cannot go as low as ``L`` (too few
            normal pixels, or ties at the top of the normal scores); 30 or fewer points in range without ``force``;
            ``"reference"`` only: both bounds select the same grid threshold, the normal maps are constant, or the
            maps' float type cannot hold ``num_thresholds`` distinct thresholds between the normal min and max.
        ValueError: bad ``fpr_bounds``, ``method`` or ``num_thresholds``, shape mismatch, mask values other than
            0/1, NaN/inf in maps.
    """
    lower, upper = _validate_fpr_bounds(fpr_bounds)
    _validate_method(method)
    if method == "reference" and (int(num_thresholds) != num_thresholds or num_thresholds < 2):
        raise ValueError(f"num_thresholds must be an integer >= 2, got {num_thresholds!r}.")
    stacks = _split_stacks(masks, maps)
    if method == "reference":
        return _reference_aupimo(stacks, lower, upper, force, int(num_thresholds))
    return _exact_aupimo(stacks, lower, upper, force)


# --- "reference": the reference's threshold grid -----------------------------------------------------------------


def _grid_dtype(dtype: np.dtype) -> np.dtype:
    """The float type of the threshold grid: the maps' own, as the reference, except float16 and integers."""
    if dtype == np.float16:
        return np.dtype(np.float32)  # 300,000 distinct float16 values rarely exist between a min and a max
    if dtype.kind == "f":
        return dtype
    return np.dtype(np.float64)  # the reference rejects integer maps; float64 holds them exactly


def _grid_shared_fpr(per_image: np.ndarray, thresholds) -> np.ndarray:
    """Shared FPR at a few thresholds with the reference's own float arithmetic.

    The reference divides each normal image's count by its pixel count and averages the (images x thresholds)
    matrix over axis 0, which numpy sums image after image (the order ``cumsum`` follows). Doing the same here
    makes a choice between two grid points exactly as far from a bound (possible when ``2 * bound * n`` is an
    integer) fall as it falls in the reference.
    """
    counts = np.stack([np.count_nonzero(per_image >= t, axis=1) for t in thresholds], axis=1)
    rates = counts.astype(np.float64) / np.float64(per_image.shape[1])
    return np.cumsum(rates, axis=0)[-1] / per_image.shape[0]


def _require_reachable_lower_bound(smallest_fpr: float, lower: float, n_normal: int, top_score) -> None:
    if smallest_fpr <= lower:
        return
    if 1.0 / n_normal > lower:
        reason = (
            f"the normal images have only {n_normal} pixels, so the smallest non-zero shared FPR is "
            f"1/{n_normal} = {1.0 / n_normal:.3g}; it needs at least {math.ceil(1.0 / lower)} normal pixels "
            "(more defect-free test images or a higher resolution)"
        )
    else:
        tied = round(smallest_fpr * n_normal)
        reason = (
            f"the highest normal-image score ({top_score!r}) is shared by {tied} pixels, so the shared FPR "
            f"jumps from 0 to {smallest_fpr:.3g}; the maps are too coarsely quantised (e.g. uint8) to resolve FPR "
            f"{lower}"
        )
    raise UndefinedMetricError(f"AUPIMO is undefined at the lower FPR bound {lower}: {reason}.")


def _reference_grid(normal: np.ndarray, num_thresholds: int) -> np.ndarray:
    """The reference's thresholds: ``num_thresholds`` evenly spaced from the lowest to the highest normal score."""
    low, high = normal.min().item(), normal.max().item()
    if not low < high:
        raise UndefinedMetricError(
            f"AUPIMO (method 'reference') is undefined: every normal-image pixel scores {low!r}, so the reference's "
            "threshold grid (from the lowest to the highest normal score) is empty."
        )
    grid = np.linspace(low, high, num_thresholds, dtype=normal.dtype)
    if not np.all(grid[1:] > grid[:-1]):
        raise UndefinedMetricError(
            f"AUPIMO (method 'reference') is undefined: {normal.dtype} cannot hold {num_thresholds} distinct "
            f"thresholds between the normal scores {low!r} and {high!r} (the reference stops here too); cast the "
            "maps to float64 or use method='exact'."
        )
    return grid


def _reference_aupimo(stacks: _Stacks, lower: float, upper: float, force: bool,
                      num_thresholds: int) -> AUPIMOResult:
    """AUPIMO as the reference computes it, without its (images x thresholds) matrices.

    The reference's shared FPR at grid point k is ``C_k / n`` (``C_k`` normal pixels >= threshold k, n normal
    pixels: all images have H*W pixels, up to float rounding of the mean, see ``_grid_shared_fpr``), non-increasing
    in k. Only the grid points with FPR close to U or below matter:

    1. ``np.partition`` finds the normal score ``cut`` at which the FPR first reaches U; the normal scores above it
       (about ``U * n``) are sorted, and ``searchsorted`` gives ``C_k`` for every grid point above ``cut``;
    2. the last grid point at or below ``cut`` (``k_a``, the smallest FPR >= U) is counted with one pass, and so is
       the first grid point of its plateau (grid points with the same count), which is the index the reference's
       ``argmin`` returns for it;
    3. each bound is matched as the reference matches it: ``argmin |F_k - bound|``, first index on ties. The grid
       points with the two FPR values around the bound are the only candidates; their FPR is recomputed with the
       reference's arithmetic;
    4. the trapezoid rule through the points from the one for U to the one for L (x = log F) is linear in the
       TPRs, so it is a weight per grid point; each defect pixel adds the cumulative weight of the grid points at
       or below its score (``searchsorted``), and one ``bincount`` sums them per image.
    """
    dtype = _grid_dtype(stacks.normal_scores.dtype)
    normal = stacks.normal_scores.astype(dtype, copy=False)
    n = normal.size
    per_image = normal.reshape(stacks.n_normal_images, -1)
    grid = _reference_grid(normal, num_thresholds)

    needed = _min_count_reaching(upper, n)
    cut = np.partition(normal, n - needed)[n - needed]  # FPR(cut) >= U; FPR of any higher threshold < U
    top = np.sort(normal[normal > cut])
    k_a = int(np.searchsorted(grid, cut, side="right")) - 1  # grid[0] is the lowest normal score: k_a >= 0
    counts = np.concatenate((
        [np.count_nonzero(normal >= grid[k_a])],
        top.size - np.searchsorted(top, grid[k_a + 1:], side="left"),
    ))  # counts[p] = C at grid index k_a + p, non-increasing
    below = normal.max(initial=-np.inf, where=normal < grid[k_a])
    plateau_start = 0 if below == -np.inf else int(np.searchsorted(grid, below, side="right"))

    # Runs of equal counts: the reference's argmin returns the first grid index of a run.
    run_first = np.flatnonzero(np.concatenate(([True], counts[1:] != counts[:-1])))
    run_fpr = counts[run_first] / n  # strictly decreasing
    run_grid_index = run_first + k_a
    run_index_returned = run_grid_index.copy()
    run_index_returned[0] = plateau_start

    smallest = _grid_shared_fpr(per_image, [grid[-1]])[0]
    _require_reachable_lower_bound(smallest, lower, n, grid[-1].item())

    def chosen(bound: float) -> tuple[int, int, float]:
        """(run, grid index, its shared FPR) the reference picks for ``bound``."""
        reaching = int(np.searchsorted(-run_fpr, -bound, side="right"))  # runs with FPR >= bound
        candidates = [r for r in (reaching - 1, reaching) if 0 <= r < len(run_fpr)]
        fpr = _grid_shared_fpr(per_image, grid[run_grid_index[candidates]])
        best = int(np.argmin(np.abs(fpr - bound)))
        return candidates[best], int(run_index_returned[candidates[best]]), float(fpr[best])

    run_lower, index_lower, achieved_lower = chosen(lower)
    _, index_upper, achieved_upper = chosen(upper)
    if index_upper >= index_lower:
        raise UndefinedMetricError(
            f"AUPIMO (method 'reference') is undefined: the FPR bounds {lower} and {upper} select the same "
            f"threshold of the reference's grid (shared FPR {run_fpr[run_lower]:.3g}); the normal images have "
            f"{n} pixels. Add normal images, use finer maps or wider fpr_bounds."
        )
    n_points = index_lower - index_upper + 1
    if n_points <= MIN_POINTS:
        _few_points(n_points, f"the reference's threshold grid between FPR {lower} and {upper}",
                    f"Add normal images, use finer maps or wider fpr_bounds (or more num_thresholds, now "
                    f"{num_thresholds}).", force)
    if n_points < SOFT_POINTS:
        warnings.warn(
            f"AUPIMO (method 'reference') may be inaccurate: only {n_points} grid thresholds lie in the FPR range "
            f"[{lower}, {upper}] (the reference warns below {SOFT_POINTS}).", RuntimeWarning, stacklevel=3)

    # Grid points from the one for U to the one for L; a plateau before k_a only adds zero-width trapezoids.
    first = max(index_upper - k_a, 0)
    last = index_lower - k_a
    log_fpr = np.log(counts[first : last + 1] / n)
    weights = (np.concatenate((log_fpr[:1], log_fpr[:-1])) - np.concatenate((log_fpr[1:], log_fpr[-1:]))) / 2.0
    cumulative = np.concatenate(([0.0], np.cumsum(weights)))
    thresholds = grid[k_a + first : k_a + last + 1]  # ascending
    scores = stacks.defect_scores.astype(dtype, copy=False)
    integral = _per_image_means(cumulative[np.searchsorted(thresholds, scores, side="right")], stacks.defect_counts)
    scored = np.clip(integral / float(np.log(upper / lower)), 0.0, 1.0)
    return _result(stacks, scored, (lower, upper), (grid[index_upper].item(), grid[index_lower].item()),
                   n_points, "reference", (achieved_lower, achieved_upper))


# --- "exact": the exact curve, cut exactly at the bounds ---------------------------------------------------------


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


def _exact_aupimo(stacks: _Stacks, lower: float, upper: float, force: bool) -> AUPIMOResult:
    n_normal = stacks.normal_scores.size
    levels = _shared_fpr_levels(stacks.normal_scores, upper)
    _require_reachable_lower_bound(float(levels.fpr[0]), lower, n_normal, levels.thresholds[0])

    in_range = (levels.fpr >= lower) & (levels.fpr <= upper)
    n_points = int(in_range.sum())
    if n_points <= MIN_POINTS:
        _few_points(n_points, f"[{lower}, {upper}] as distinct shared-FPR levels (the normal images have "
                    f"{n_normal} pixels)", "Add normal images, use finer maps or wider fpr_bounds.", force)

    thresholds, w_gt, w_ge = _segment_weights(levels, lower, upper)
    cum_gt = np.concatenate(([0.0], np.cumsum(w_gt)))
    cum_ge = np.concatenate(([0.0], np.cumsum(w_ge)))
    scores = stacks.defect_scores
    # Weight a defect pixel contributes: segments whose threshold it clears (>= and >), summed.
    pixel_weight = cum_ge[np.searchsorted(thresholds, scores, side="right")]
    pixel_weight += cum_gt[np.searchsorted(thresholds, scores, side="left")]
    integral = _per_image_means(pixel_weight, stacks.defect_counts)
    scored = np.clip(integral / (math.log(upper) - math.log(lower)), 0.0, 1.0)
    # An image whose every defect pixel clears the highest threshold in range has TPR 1 throughout: exactly 1,
    # not 1 - 1e-16 from summing the weights.
    starts = np.concatenate(([0], np.cumsum(stacks.defect_counts)[:-1]))
    scored[np.minimum.reduceat(scores, starts) > thresholds[-1]] = 1.0
    first_at_lower = int(np.searchsorted(levels.fpr, lower, side="left"))  # first level with F >= L
    return _result(stacks, scored, (lower, upper),
                   (levels.thresholds[-1].item(), levels.thresholds[first_at_lower].item()), n_points, "exact",
                   (lower, upper))


def pimo_curves(masks, maps, fpr_bounds=DEFAULT_FPR_BOUNDS, *, max_points: int = 4096) -> PIMOCurves:
    """PIMO curves (per-image TPR against the shared FPR) around the FPR range ``fpr_bounds``, for plotting.

    The curves are evaluated at the distinct normal-image scores whose shared FPR covers ``[L, U]``: from the last
    level at or below ``L`` (or the top normal score when none is) to the first level at or above ``U``. These are
    exactly the vertices ``aupimo(..., method="exact")`` integrates over (at ``score >= t``; the ``score > t`` end of
    each vertical step is left out of the plot); the curve is the exact one whichever AUPIMO method is reported (the
    reference's grid samples the same curve, see the module docstring). If there are more than ``max_points`` such
    levels, ``max_points`` of them evenly spaced in log FPR are kept (first and last included), so memory stays
    (N x max_points) whatever the FPR range.
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
