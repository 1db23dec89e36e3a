"""All standard VAD metrics of one evaluation in one call, as flat ``name -> float`` values.

Keys (stable; benchmark tables and the CLI use them):
- always: ``image_auroc``, ``image_aupr``, ``image_f1_max``;
- when ``masks`` is given: ``pixel_auroc``, ``pixel_aupr``, ``pixel_f1_max``, ``pixel_aupro`` (FPR limit 0.3),
  ``pixel_aupro_005`` (FPR limit 0.05), ``aupimo_mean`` and ``aupimo_count`` (the mean of per-image AUPIMO
  over the anomalous images, and how many there are; the per-image values are ``MetricsReport.aupimo``).

Undefined metrics are *skipped, with the reason*, rather than NaN or an exception, so that one undefined
metric does not lose the others: e.g. a split of only defective images has no image AUROC but still has pixel
metrics (its masks contain normal pixels). ``MetricsReport.values`` holds what could be computed and
``MetricsReport.skipped`` maps each missing key to the reason (the ``UndefinedMetricError`` message). Bad
input (NaN scores, shape mismatch, labels other than 0/1) is a bug, not an undefined metric, and raises.

Why a small dataclass rather than a dict with NaN: NaN propagates silently through means and tables, and the
design rule is "never silent NaN"; the skip reason is what a user needs to fix the split.

The pixel curve is sorted once and shared by the three pixel metrics (AU-PRO sorts again, because it needs the
per-region weights in the same order; one PRO curve serves both FPR limits).

With ``keep_curves=True`` the report also keeps the curves for plots (``MetricsReport.curves``): ROC and PR of
images and pixels, the PRO curve, thinned to at most ``CURVE_POINTS`` points each (a pixel curve has one point
per distinct map value, millions of them; a plot cannot show more than a few thousand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.curves import binary_clf_curve
from vadkit.metrics.image import aupr_from_curve, auroc_from_curve, f1_max_from_curve
from vadkit.metrics.pixel import pixel_clf_curve
from vadkit.metrics.pimo import AUPIMOResult, aupimo
from vadkit.metrics.pro import aupro_from_curve, pro_curve

__all__ = ["CURVE_POINTS", "IMAGE_METRICS", "PIXEL_METRICS", "MetricsReport", "compute_metrics"]

IMAGE_METRICS = ("image_auroc", "image_aupr", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "pixel_aupr", "pixel_f1_max", "pixel_aupro", "pixel_aupro_005", "aupimo_mean")
CURVE_POINTS = 2000


@dataclass(frozen=True)
class MetricsReport:
    """Result of ``compute_metrics``.

    Attributes:
        values: metric name -> python float, only the metrics that are defined for this input.
        skipped: metric name -> why it is undefined (e.g. "there are no anomalous (label 1) items").
    """

    values: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    aupimo: AUPIMOResult | None = None

    def as_dict(self) -> dict[str, float]:
        """A copy of ``values``: the flat ``name -> float`` mapping for tables and JSON."""
        return dict(self.values)


def compute_metrics(labels, scores, masks=None, maps=None, *, keep_curves: bool = False,
                    fpr_bounds: tuple[float, float] = (1e-5, 1e-4)) -> MetricsReport:
    """Image metrics from ``labels``/``scores`` and, when ``masks`` is given, pixel metrics from ``masks``/``maps``.

    Args:
        labels: (N,) bool or 0/1 image labels, 1 = anomalous.
        scores: (N,) finite image anomaly scores.
        masks: optional (N, H, W) bool or 0/1 ground-truth masks. When None, no pixel metric is computed (and
            ``maps`` is ignored: a dataset without masks is normal, a model always has maps).
        maps: (N, H, W) anomaly maps; required when ``masks`` is given.
        keep_curves: also return thinned curves for plots: ``image_roc`` / ``pixel_roc`` as (fpr, tpr),
            ``image_pr`` / ``pixel_pr`` as (recall, precision), ``pro`` as (fpr, pro).
        fpr_bounds: the AUPIMO integration range of the shared (normal-image) false positive rate.

    Raises:
        ValueError: invalid input (see ``image.auroc`` and ``pixel.pixel_auroc``), or masks without maps.
    """
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    _add_curve_metrics(values, skipped, curves if keep_curves else None, "image",
                       binary_clf_curve(labels, scores), unit="images")
    pimo = None
    if masks is not None:
        if maps is None:
            raise ValueError("masks were given without maps: pixel metrics need the anomaly maps too.")
        _add_curve_metrics(values, skipped, curves if keep_curves else None, "pixel",
                           pixel_clf_curve(masks, maps), unit="pixels")
        try:
            fpr, pro, _ = pro_curve(masks, maps)
        except UndefinedMetricError as error:
            skipped["pixel_aupro"] = skipped["pixel_aupro_005"] = str(error)
        else:
            values["pixel_aupro"] = aupro_from_curve(fpr, pro, 0.3)
            values["pixel_aupro_005"] = aupro_from_curve(fpr, pro, 0.05)
            if keep_curves:
                curves["pro"] = thin_curve(np.append(0.0, fpr), np.append(0.0, pro))
        try:
            pimo = aupimo(masks, maps, fpr_bounds=fpr_bounds)
        except UndefinedMetricError as error:
            skipped["aupimo_mean"] = str(error)
        else:
            values["aupimo_mean"] = float(pimo.mean)
            values["aupimo_count"] = int(pimo.count)
    return MetricsReport(values=values, skipped=skipped, curves=curves, aupimo=pimo)


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` evenly spaced points of a curve, first and last kept (for plots only)."""
    if len(x) <= max_points:
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(np.int64))
    return np.asarray(x[keep], dtype=np.float64), np.asarray(y[keep], dtype=np.float64)


def _add_curve_metrics(values, skipped, curves, prefix: str, curve, unit: str) -> None:
    """AUROC, AUPR and F1-max from one sorted curve, under ``{prefix}_...`` keys (and the curves to plot)."""
    fps, tps, thresholds = curve
    _add_metric(values, skipped, f"{prefix}_auroc", lambda: auroc_from_curve(fps, tps, unit))
    _add_metric(values, skipped, f"{prefix}_aupr", lambda: aupr_from_curve(fps, tps, unit))
    _add_metric(values, skipped, f"{prefix}_f1_max", lambda: f1_max_from_curve(fps, tps, thresholds, unit)[0])
    if curves is not None and f"{prefix}_auroc" in values:
        fpr = np.append(0.0, fps / fps[-1])
        tpr = np.append(0.0, tps / tps[-1])
        curves[f"{prefix}_roc"] = thin_curve(fpr, tpr)
        precision = tps / np.maximum(tps + fps, 1)
        curves[f"{prefix}_pr"] = thin_curve(tps / tps[-1], precision)


def _add_metric(values, skipped, name: str, compute) -> None:
    try:
        values[name] = float(compute())
    except UndefinedMetricError as error:
        skipped[name] = str(error)
