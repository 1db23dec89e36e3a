"""Threshold-free ranking metrics on 1-D labels and scores: AUROC, average precision, F1-max.

They are called "image" metrics because that is their main use (one score per image), but they take any 1-D
arrays, and the pixel metrics (``pixel.py``) call them on flattened masks and maps.

Definitions (all exact, ties included, computed from one sort by ``curves.binary_clf_curve``):

- **AUROC**: area under the ROC curve (FPR, TPR) with the trapezoid rule, through (0, 0) and every distinct
  score. Equals the Mann-Whitney U statistic / (n_pos * n_neg), i.e. P(score_anomalous > score_normal) with
  ties counting half; equals ``sklearn.metrics.roc_auc_score``. Computed in integer arithmetic (twice the
  trapezoid area is an integer) so it is exact up to the final division.
- **AUPR / average precision**: ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (step-wise, no
  interpolation), scikit-learn's definition (``average_precision_score``); no trapezoid, because linear
  interpolation between PR points is wrong and optimistic (Davis & Goadrich, "The relationship between
  Precision-Recall and ROC curves", ICML 2006).
- **F1-max**: best F1 = 2 TP / (2 TP + FP + FN) over all thresholds, with its threshold; the
  "F1-max" reported by VAD papers since WinCLIP (Jeong et al., CVPR 2023). An item is predicted
  anomalous when ``score >= threshold``. When several thresholds tie for the best F1, the highest one is
  returned (the fewest alarms).

Edge cases (never a silent NaN):
- only one class present (all normal or all anomalous): ``UndefinedMetricError`` naming the missing class.
  AUROC is mathematically undefined there; AP and F1 are undefined without positives and trivial (1.0)
  without negatives, which would only hide a broken test split, so all three refuse.
- constant scores: well defined: AUROC 0.5, AP = fraction of anomalous items, F1 of predicting everything
  anomalous, threshold = that constant.
- empty input, different lengths, labels other than 0/1, NaN/inf scores: ``ValueError``.
"""

from __future__ import annotations

import numpy as np

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.curves import binary_clf_curve

__all__ = [
    "aupr",
    "aupr_from_curve",
    "auroc",
    "auroc_from_curve",
    "f1_max",
    "f1_max_from_curve",
    "f1_max_threshold",
    "require_both_classes",
]


def require_both_classes(fps: np.ndarray, tps: np.ndarray, metric: str, unit: str = "items") -> None:
    """Raise ``UndefinedMetricError`` unless the curve counts both normal and anomalous ``unit``."""
    n_neg, n_pos = int(fps[-1]), int(tps[-1])
    if n_pos == 0 or n_neg == 0:
        missing, present = ("anomalous (label 1)", "normal") if n_pos == 0 else ("normal (label 0)", "anomalous")
        raise UndefinedMetricError(
            f"{metric} is undefined: there are no {missing} {unit}, all {n_pos + n_neg} are {present}; "
            "it needs both normal and anomalous examples."
        )


def auroc_from_curve(fps: np.ndarray, tps: np.ndarray, unit: str = "items") -> float:
    """Exact trapezoidal ROC AUC from the counts of ``binary_clf_curve``."""
    require_both_classes(fps, tps, "AUROC", unit)
    fps_prev = np.concatenate(([0], fps[:-1]))
    tps_prev = np.concatenate(([0], tps[:-1]))
    # Twice the trapezoid area in count units is an integer: sum of dFP * (TP + TP_prev).
    twice_area = int(np.dot(fps - fps_prev, tps + tps_prev))
    return twice_area / (2 * int(fps[-1]) * int(tps[-1]))  # python ints: exact, correctly rounded division


def aupr_from_curve(fps: np.ndarray, tps: np.ndarray, unit: str = "items") -> float:
    """Average precision (step-wise, scikit-learn's definition) from the counts of ``binary_clf_curve``."""
    require_both_classes(fps, tps, "AUPR (average precision)", unit)
    recall_gain = np.diff(tps, prepend=0)  # new true positives at each threshold
    precision = tps / (tps + fps)  # tps + fps >= 1 at every threshold
    return float(np.dot(recall_gain, precision) / tps[-1])


def f1_max_from_curve(
    fps: np.ndarray, tps: np.ndarray, thresholds: np.ndarray, unit: str = "items"
) -> tuple[float, float]:
    """``(best F1, its threshold)`` from ``binary_clf_curve``; the highest threshold wins ties."""
    require_both_classes(fps, tps, "F1-max", unit)
    n_pos = tps[-1]
    f1 = 2 * tps / (tps + fps + n_pos)  # = 2TP / (2TP + FP + FN); denominator >= n_pos > 0
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def auroc(labels, scores) -> float:
    """Area under the ROC curve, exact with ties (equals ``sklearn.metrics.roc_auc_score``).

    Args:
        labels: (n,) bool or 0/1, 1 = anomalous.
        scores: (n,) finite floats or ints, higher = more anomalous.
    """
    fps, tps, _ = binary_clf_curve(labels, scores)
    return auroc_from_curve(fps, tps)


def aupr(labels, scores) -> float:
    """Average precision (equals ``sklearn.metrics.average_precision_score``). Same arguments as ``auroc``."""
    fps, tps, _ = binary_clf_curve(labels, scores)
    return aupr_from_curve(fps, tps)


def f1_max_threshold(labels, scores) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (predict anomalous when score >= threshold).

    Returns:
        ``(f1, threshold)`` as python floats; ``threshold`` is one of the scores.
    """
    fps, tps, thresholds = binary_clf_curve(labels, scores)
    return f1_max_from_curve(fps, tps, thresholds)


def f1_max(labels, scores) -> float:
    """Best F1 over all thresholds. Same arguments as ``auroc``."""
    return f1_max_threshold(labels, scores)[0]
