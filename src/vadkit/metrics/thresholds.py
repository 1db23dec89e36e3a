"""Metrics at one decision threshold, and the threshold that meets a target false-alarm or detection rate.

The threshold-free metrics (``image.py``) rank models; a production line runs *one* threshold, and the
engineer's questions are about that operating point: "at 1 false alarm per 1000 good parts
(``max_fpr=0.001``), what fraction of defective parts do I miss?" (``threshold_for_fpr``), or "to catch 99%
of defects (``min_recall=0.99``), how many good parts do I reject?" (``threshold_for_recall``).

Decision rule, the same everywhere in vadkit (``Model.predict``, ``f1_max_threshold``): an item is predicted
anomalous when ``score >= threshold``; a threshold equal to a score value flags every item tied at that value.
The comparison is exact: scores of any dtype are compared with the threshold in float64 (every float16/32
value is exactly a float64), so a float64 threshold such as a quantile is never rounded to the scores' dtype.

Definitions, from the confusion counts TP, FP, TN, FN (P = TP + FN anomalous items, N = FP + TN normal ones):

- precision = TP / (TP + FP); recall (true positive rate, detection rate) = TP / P; miss rate
  (false negative rate) = FN / P = 1 - recall; FPR (false alarm rate) = FP / N; specificity = TN / N;
- F1 = 2 TP / (2 TP + FP + FN), the harmonic mean of precision and recall written with counts, so it is
  defined (and 0) when nothing is flagged while defects exist.

Undefined ratios are ``None``, never NaN and never 0: precision with nothing flagged, recall / miss rate
without anomalous items, FPR / specificity without normal items, F1 with neither anomalous items nor flagged
ones. Why not scikit-learn's ``zero_division=0``: "precision 0" would claim every alarm was false when no
alarm was raised, and it silently drags down means; NaN propagates silently through tables (vadkit's rule is
"never silent NaN"). ``None`` is JSON ``null`` and fails loudly in arithmetic.

Choosing a threshold for a target is exact: the ROC curve of ``curves.binary_clf_curve`` holds the counts at
every distinct score, so the best admissible operating point is found by one search over it, ties included.
A threshold between two consecutive distinct scores behaves like the higher one, so the chosen threshold is
always reported as a score value (or, when only "flag nothing" meets the target, as the smallest float above
the highest score).

Pixel versions take (N, H, W) masks and maps; all pixels are pooled (``pixel_confusion_at``), or counted per
image (``per_image_pixel_scores``). They work image block by image block, so memory stays bounded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vadkit.metrics.curves import binary_clf_curve_of_valid, validate_labels, validate_pair, validate_scores
from vadkit.metrics.image import require_both_classes
from vadkit.metrics.pixel import as_mask_and_map_stacks

__all__ = [
    "ThresholdChoice",
    "ThresholdedMetrics",
    "confusion_at",
    "per_image_pixel_scores",
    "pixel_confusion_at",
    "threshold_for_fpr",
    "threshold_for_recall",
]

# Pixels handled per block by the pixel functions: bounds the temporaries (a few bytes per pixel).
_BLOCK_PIXELS = 1 << 22


@dataclass(frozen=True)
class ThresholdedMetrics:
    """Confusion counts and rates at one threshold (predicted anomalous when ``score >= threshold``).

    Attributes:
        threshold: the threshold, as a python float.
        tp, fp, tn, fn: counts (python ints) of anomalous-flagged, normal-flagged, normal-passed, anomalous-passed.
        precision, recall, f1, fpr, miss_rate, specificity: python floats in [0, 1], or ``None`` where undefined
            (see the module docstring): precision needs a flagged item, recall and miss rate an anomalous item,
            FPR and specificity a normal item, F1 an anomalous or a flagged item.
    """

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float | None
    recall: float | None
    f1: float | None
    fpr: float | None
    miss_rate: float | None
    specificity: float | None

    @classmethod
    def from_counts(cls, threshold: float, tp: int, fp: int, tn: int, fn: int) -> ThresholdedMetrics:
        tp, fp, tn, fn = int(tp), int(fp), int(tn), int(fn)
        return cls(
            threshold=float(threshold), tp=tp, fp=fp, tn=tn, fn=fn,
            precision=_ratio(tp, tp + fp), recall=_ratio(tp, tp + fn), f1=_ratio(2 * tp, 2 * tp + fp + fn),
            fpr=_ratio(fp, fp + tn), miss_rate=_ratio(fn, tp + fn), specificity=_ratio(tn, fp + tn),
        )


@dataclass(frozen=True)
class ThresholdChoice(ThresholdedMetrics):
    """The operating point chosen for a target, with its metrics (the ``ThresholdedMetrics`` fields).

    Attributes:
        criterion: the rule that chose it, e.g. ``"lowest threshold with FPR <= 0.001"``.
    """

    criterion: str = ""


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator  # python ints: correctly rounded


def _validate_threshold(threshold) -> np.float64:
    value = np.float64(threshold)
    if not math.isfinite(value):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}.")
    return value


def confusion_at(labels, scores, threshold) -> ThresholdedMetrics:
    """Confusion counts, precision, recall, F1, FPR, miss rate and specificity at ``threshold``.

    Args:
        labels: (n,) bool or 0/1, 1 = anomalous.
        scores: (n,) finite scores, higher = more anomalous.
        threshold: finite number; an item is flagged when ``score >= threshold`` (exact comparison).

    Returns:
        ``ThresholdedMetrics``; undefined ratios are ``None`` (e.g. precision when nothing is flagged). A single
        class is not an error here: the counts are still meaningful (e.g. the false alarm rate on good parts).

    Raises:
        ValueError: empty input, different lengths, labels other than 0/1, NaN/inf scores or threshold.
    """
    labels, scores = validate_pair(labels, scores)
    threshold = _validate_threshold(threshold)
    flagged = scores >= threshold
    tp = int(np.count_nonzero(flagged & labels))
    n_flagged = int(np.count_nonzero(flagged))
    n_pos = int(np.count_nonzero(labels))
    fp = n_flagged - tp
    return ThresholdedMetrics.from_counts(threshold, tp, fp, labels.size - n_pos - fp, n_pos - tp)


def _curve_with_both_classes(labels, scores, metric: str):
    labels, scores = validate_pair(labels, scores)
    fps, tps, thresholds = binary_clf_curve_of_valid(labels, scores)
    require_both_classes(fps, tps, metric)
    return fps, tps, thresholds


def _choice_at(fps, tps, thresholds, index: int, criterion: str) -> ThresholdChoice:
    """The operating point flagging the runs ``0..index`` of the curve; ``index = -1`` flags nothing."""
    n_neg, n_pos = int(fps[-1]), int(tps[-1])
    if index < 0:
        # Nothing may be flagged: the smallest threshold above every score (finite, so it stays JSON-able).
        threshold, tp, fp = np.nextafter(np.float64(thresholds[0]), np.inf), 0, 0
    else:
        threshold, tp, fp = thresholds[index], int(tps[index]), int(fps[index])
    counts = ThresholdedMetrics.from_counts(threshold, tp, fp, n_neg - fp, n_pos - tp)
    return ThresholdChoice(**vars(counts), criterion=criterion)


def _validate_rate(value, name: str) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}.")
    return value


def threshold_for_fpr(labels, scores, max_fpr: float) -> ThresholdChoice:
    """The most sensitive threshold whose false positive rate is at most ``max_fpr``.

    "At 1 false alarm per 1000 good parts, what do I miss?" is ``threshold_for_fpr(labels, scores, 0.001)``:
    the returned ``miss_rate`` is the fraction of defective items that pass, ``recall`` the fraction caught.

    The threshold is the lowest score value ``t`` with ``FPR(t) <= max_fpr`` (lower thresholds flag more items,
    so FPR only grows as ``t`` decreases; every threshold in (next lower score, t] gives the same result). When
    even the highest score is tied with too many normal items, only "flag nothing" respects the budget: the
    threshold is then just above the highest score, with recall 0.

    Args:
        labels: (n,) bool or 0/1, 1 = anomalous. scores: (n,) finite scores.
        max_fpr: false-alarm budget in [0, 1], a fraction of the normal items (not a percentage).

    Raises:
        UndefinedMetricError: a single class (FPR needs normal items, recall anomalous ones).
        ValueError: bad input or ``max_fpr`` outside [0, 1].
    """
    max_fpr = _validate_rate(max_fpr, "max_fpr")
    fps, tps, thresholds = _curve_with_both_classes(labels, scores, "threshold_for_fpr")
    # fps / n_neg is the FPR exactly as a user computes it; it is non-decreasing along the curve.
    admissible = np.count_nonzero(fps / fps[-1] <= max_fpr)
    return _choice_at(fps, tps, thresholds, admissible - 1, f"lowest threshold with FPR <= {max_fpr:g}")


def threshold_for_recall(labels, scores, min_recall: float) -> ThresholdChoice:
    """The least sensitive (highest) threshold whose recall is at least ``min_recall``, with the FPR it costs.

    "To catch 99% of defects, how many good parts do I reject?" is ``threshold_for_recall(labels, scores, 0.99)``:
    the returned ``fpr`` is the fraction of normal items flagged. The threshold is the highest score value
    ``t`` with ``recall(t) >= min_recall``; ``min_recall = 0`` is met by flagging nothing (threshold just above
    the highest score).

    Raises:
        UndefinedMetricError: a single class. ValueError: bad input or ``min_recall`` outside [0, 1].
    """
    min_recall = _validate_rate(min_recall, "min_recall")
    fps, tps, thresholds = _curve_with_both_classes(labels, scores, "threshold_for_recall")
    criterion = f"highest threshold with recall >= {min_recall:g}"
    if min_recall == 0.0:
        return _choice_at(fps, tps, thresholds, -1, criterion)
    # recall is non-decreasing along the curve and reaches 1 at its last point, so the search always succeeds.
    first = int(np.searchsorted(tps / tps[-1] >= min_recall, True))
    return _choice_at(fps, tps, thresholds, first, criterion)


def _pixel_blocks(masks: np.ndarray, maps: np.ndarray):
    """Yield validated (labels, scores) of consecutive image blocks, each (n_images, H*W)."""
    per_image = max(1, masks.shape[1] * masks.shape[2])
    step = max(1, _BLOCK_PIXELS // per_image)
    for start in range(0, masks.shape[0], step):
        block_masks, block_maps = masks[start:start + step], maps[start:start + step]
        labels = validate_labels(block_masks.reshape(-1), name="masks").reshape(len(block_masks), -1)
        scores = validate_scores(block_maps.reshape(-1), name="maps (flattened)").reshape(len(block_maps), -1)
        yield labels, scores


def _per_image_counts(masks, maps, threshold,
                      flagged_images=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(tp, fp, fn, tn) per image, each (N,) int64; the pixels of images not in ``flagged_images`` (N,) bool,
    when given, are predicted normal whatever their score."""
    masks, maps = as_mask_and_map_stacks(masks, maps)
    threshold = _validate_threshold(threshold)
    parts = []
    for labels, scores in _pixel_blocks(masks, maps):
        flagged = scores >= threshold
        tp = np.count_nonzero(flagged & labels, axis=1)
        n_flagged = np.count_nonzero(flagged, axis=1)
        n_pos = np.count_nonzero(labels, axis=1)
        parts.append(np.stack([tp, n_flagged - tp, n_pos - tp, labels.shape[1] - n_pos - (n_flagged - tp)]))
    tp, fp, fn, tn = np.concatenate(parts, axis=1).astype(np.int64)
    if flagged_images is not None:
        flagged_images = np.asarray(flagged_images, dtype=bool)
        if flagged_images.shape != tp.shape:
            raise ValueError(f"flagged_images must have one entry per image ({tp.shape[0]}), "
                             f"got {flagged_images.shape}")
        passed = ~flagged_images
        fn, tn = np.where(passed, fn + tp, fn), np.where(passed, tn + fp, tn)
        tp, fp = np.where(passed, 0, tp), np.where(passed, 0, fp)
    return tp, fp, fn, tn


def pixel_confusion_at(masks, maps, threshold, flagged_images=None) -> ThresholdedMetrics:
    """``confusion_at`` over all pixels of all images pooled (pixel precision, recall, F1, FPR...).

    Args:
        masks: (N, H, W) bool or 0/1 ground truth (one (H, W) pair is accepted as N=1).
        maps: (N, H, W) finite anomaly maps at mask resolution. threshold: pixel flagged when ``map >= threshold``.
        flagged_images: optional (N,) bool, the images judged anomalous: the pixels of the others are never
            flagged (the defect a user is shown is found in a flagged image only).

    Raises:
        ValueError: shapes differ or are not (N, H, W); mask values other than 0/1; NaN/inf in maps.
    """
    tp, fp, fn, tn = (int(count.sum()) for count in _per_image_counts(masks, maps, threshold, flagged_images))
    return ThresholdedMetrics.from_counts(threshold, tp, fp, tn, fn)


def per_image_pixel_scores(masks, maps, threshold, flagged_images=None) -> dict[str, np.ndarray]:
    """Pixel precision, recall and F1 of each image at ``threshold``: the per-image table of a test run.

    Returns:
        ``{"precision", "recall", "f1"}`` -> (N,) float64, and ``{"tp", "fp", "fn"}`` -> (N,) int64 pixel counts.
        NaN in these arrays means *not applicable*, and only that: precision of an image with no flagged pixel,
        recall of an image with no defective pixel (a normal image), F1 of a normal image with no flagged pixel
        (nothing to find, nothing found). A normal image with false alarms has F1 = 0, and a defective image
        where nothing is flagged has recall 0 and F1 0. NaN (rather than ``None``) because the table is a
        numeric array, the same convention as per-image AUPIMO; readers use ``np.isfinite`` to select the
        applicable images, and ``per_image.csv`` writes NaN as an empty cell.

    ``flagged_images`` (N,) bool, optional: as in :func:`pixel_confusion_at`.

    Raises:
        ValueError: as ``pixel_confusion_at``.
    """
    tp, fp, fn, _ = _per_image_counts(masks, maps, threshold, flagged_images)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN = not applicable, by definition above
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn}

