"""Evaluation metrics for visual anomaly detection: image, pixel and region (AU-PRO) level.

Every metric is exact (ties included) and computed from one sort of the scores (``curves.py``), in numpy and
scipy only, so it runs on millions of pixels without per-threshold Python loops and without importing torch. One
deliberate exception: AUPIMO by default reproduces the published reference code, threshold grid included (its
exact counterpart is ``aupimo(..., method="exact")``; ``pimo.py`` says how far apart they are).

- ``image.py``: ``auroc``, ``aupr`` (average precision), ``f1_max`` / ``f1_max_threshold`` on 1-D arrays;
- ``pixel.py``: the same on (N, H, W) masks and maps, all pixels pooled;
- ``pro.py``: ``aupro``, the area under the per-region-overlap curve up to an FPR limit;
- ``pimo.py``: ``aupimo`` (per-image AUPIMO: ``method="reference"``, the published numbers, or ``"exact"``) and
  ``pimo_curves``; ``spro.py``: ``auspro`` (MVTec LOCO AD);
- ``registry.py``: the one list of reported metrics (key, label, kind, direction, bootstrap and compare rules,
  where the CLI shows them) that every consumer reads;
- ``report.py``: ``compute_metrics`` -> ``MetricsReport`` with every registered metric under flat keys.

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
from vadkit.metrics import registry
from vadkit.metrics.registry import Metric
from vadkit.metrics.pimo import AUPIMO_METHODS, AUPIMOResult, PIMOCurves, aupimo, pimo_curves
from vadkit.metrics.pixel import pixel_aupr, pixel_auroc, pixel_clf_curve, pixel_f1_max
from vadkit.metrics.pro import aupro, aupro_from_curve, pro_curve
from vadkit.metrics.report import CURVE_POINTS, IMAGE_METRICS, PIXEL_METRICS, MetricsReport, compute_metrics
from vadkit.metrics.breakdown import per_defect_metrics
from vadkit.metrics.binned import PixelHistogram, per_image_histograms, quantile_edges, uniform_edges
from vadkit.metrics.bootstrap import Interval, bootstrap_image_ci, bootstrap_mean_ci, bootstrap_pixel_ci
from vadkit.metrics.paired import PairedTest, delong_test, paired_bootstrap, wilcoxon_per_image
from vadkit.metrics.thresholds import (
    ThresholdChoice,
    ThresholdedMetrics,
    confusion_at,
    per_image_pixel_scores,
    pixel_confusion_at,
    threshold_for_fpr,
    threshold_for_recall,
)
from vadkit.metrics.spro import LocoRegion, SaturatedRegion, auspro, load_loco_regions, spro_curve

__all__ = [
    "Interval",
    "PairedTest",
    "PixelHistogram",
    "ThresholdChoice",
    "ThresholdedMetrics",
    "bootstrap_image_ci",
    "bootstrap_mean_ci",
    "bootstrap_pixel_ci",
    "confusion_at",
    "delong_test",
    "paired_bootstrap",
    "per_image_histograms",
    "per_image_pixel_scores",
    "pixel_confusion_at",
    "quantile_edges",
    "registry",
    "threshold_for_fpr",
    "threshold_for_recall",
    "uniform_edges",
    "wilcoxon_per_image",
    "CURVE_POINTS",
    "IMAGE_METRICS",
    "PIXEL_METRICS",
    "AUPIMOResult",
    "AUPIMO_METHODS",
    "Metric",
    "LocoRegion",
    "MetricsReport",
    "PIMOCurves",
    "SaturatedRegion",
    "UndefinedMetricError",
    "aupimo",
    "aupr",
    "aupr_from_curve",
    "aupro",
    "aupro_from_curve",
    "auroc",
    "auroc_from_curve",
    "auspro",
    "binary_clf_curve",
    "compute_metrics",
    "f1_max",
    "f1_max_from_curve",
    "f1_max_threshold",
    "load_loco_regions",
    "per_defect_metrics",
    "pimo_curves",
    "pixel_aupr",
    "pixel_auroc",
    "pixel_clf_curve",
    "pixel_f1_max",
    "pro_curve",
    "spro_curve",
]
