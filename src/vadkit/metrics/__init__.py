"""Evaluation metrics for visual anomaly detection: image, pixel and region (AU-PRO) level.

Every metric is exact (ties included) and computed from one sort of the scores (``curves.py``), in numpy and
scipy only, so it runs on millions of pixels without per-threshold Python loops and without importing torch.

- ``image.py``: ``auroc``, ``aupr`` (average precision), ``f1_max`` / ``f1_max_threshold`` on 1-D arrays;
- ``pixel.py``: the same on (N, H, W) masks and maps, all pixels pooled;
- ``pro.py``: ``aupro``, the area under the per-region-overlap curve up to an FPR limit;
- ``report.py``: ``compute_metrics`` -> ``MetricsReport`` with every standard metric under flat keys.

Undefined metrics (a single class) raise ``vadkit.errors.UndefinedMetricError``; ``compute_metrics`` records
them as skipped with the reason instead. Invalid input (NaN scores, shape mismatch) raises ``ValueError``.
"""

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.curves import binary_clf_curve
from vadkit.metrics.image import (
    aupr,
    aupr_from_curve,
    auroc,
    auroc_from_curve,
    f1_max,
    f1_max_from_curve,
    f1_max_threshold,
)
from vadkit.metrics.pixel import pixel_aupr, pixel_auroc, pixel_clf_curve, pixel_f1_max
from vadkit.metrics.pro import aupro, pro_curve
from vadkit.metrics.report import IMAGE_METRICS, PIXEL_METRICS, MetricsReport, compute_metrics

__all__ = [
    "IMAGE_METRICS",
    "PIXEL_METRICS",
    "MetricsReport",
    "UndefinedMetricError",
    "aupr",
    "aupr_from_curve",
    "aupro",
    "auroc",
    "auroc_from_curve",
    "binary_clf_curve",
    "compute_metrics",
    "f1_max",
    "f1_max_from_curve",
    "f1_max_threshold",
    "pixel_aupr",
    "pixel_auroc",
    "pixel_clf_curve",
    "pixel_f1_max",
    "pro_curve",
]
