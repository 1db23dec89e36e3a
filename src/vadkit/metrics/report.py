"""All standard VAD metrics of one evaluation in one call, as flat ``name -> float`` values.

Keys (stable; benchmark tables and the CLI use them):
- always: ``image_auroc``, ``image_aupr``, ``image_f1_max``;
- when ``masks`` is given: ``pixel_auroc``, ``pixel_aupr``, ``pixel_f1_max``, ``pixel_aupro`` (FPR limit 0.3).

Undefined metrics are *skipped, with the reason*, rather than NaN or an exception, so that one undefined
metric does not lose the others: e.g. a split of only defective images has no image AUROC but still has pixel
metrics (its masks contain normal pixels). ``MetricsReport.values`` holds what could be computed and
``MetricsReport.skipped`` maps each missing key to the reason (the ``UndefinedMetricError`` message). Bad
input (NaN scores, shape mismatch, labels other than 0/1) is a bug, not an undefined metric, and raises.

Why a small dataclass rather than a dict with NaN: NaN propagates silently through means and tables, and the
design rule is "never silent NaN"; the skip reason is what a user needs to fix the split.

The pixel curve is sorted once and shared by the three pixel metrics (AU-PRO sorts again, because it needs the
per-region weights in the same order).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.curves import binary_clf_curve
from vadkit.metrics.image import aupr_from_curve, auroc_from_curve, f1_max_from_curve
from vadkit.metrics.pixel import pixel_clf_curve
from vadkit.metrics.pro import aupro

__all__ = ["IMAGE_METRICS", "PIXEL_METRICS", "MetricsReport", "compute_metrics"]

IMAGE_METRICS = ("image_auroc", "image_aupr", "image_f1_max")
PIXEL_METRICS = ("pixel_auroc", "pixel_aupr", "pixel_f1_max", "pixel_aupro")


@dataclass(frozen=True)
class MetricsReport:
    """Result of ``compute_metrics``.

    Attributes:
        values: metric name -> python float, only the metrics that are defined for this input.
        skipped: metric name -> why it is undefined (e.g. "there are no anomalous (label 1) items").
    """

    values: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """A copy of ``values``: the flat ``name -> float`` mapping for tables and JSON."""
        return dict(self.values)


def compute_metrics(labels, scores, masks=None, maps=None) -> MetricsReport:
    """Image metrics from ``labels``/``scores`` and, when ``masks`` is given, pixel metrics from ``masks``/``maps``.

    Args:
        labels: (N,) bool or 0/1 image labels, 1 = anomalous.
        scores: (N,) finite image anomaly scores.
        masks: optional (N, H, W) bool or 0/1 ground-truth masks. When None, no pixel metric is computed (and
            ``maps`` is ignored: a dataset without masks is normal, a model always has maps).
        maps: (N, H, W) anomaly maps; required when ``masks`` is given.

    Raises:
        ValueError: invalid input (see ``image.auroc`` and ``pixel.pixel_auroc``), or masks without maps.
    """
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    _add_curve_metrics(values, skipped, "image", lambda: binary_clf_curve(labels, scores), unit="images")
    if masks is not None:
        if maps is None:
            raise ValueError("masks were given without maps: pixel metrics need the anomaly maps too.")
        _add_curve_metrics(values, skipped, "pixel", lambda: pixel_clf_curve(masks, maps), unit="pixels")
        _add_metric(values, skipped, "pixel_aupro", lambda: aupro(masks, maps))
    return MetricsReport(values=values, skipped=skipped)


def _add_curve_metrics(values, skipped, prefix: str, make_curve, unit: str) -> None:
    """AUROC, AUPR and F1-max from one sorted curve, under ``{prefix}_...`` keys."""
    fps, tps, thresholds = make_curve()
    _add_metric(values, skipped, f"{prefix}_auroc", lambda: auroc_from_curve(fps, tps, unit))
    _add_metric(values, skipped, f"{prefix}_aupr", lambda: aupr_from_curve(fps, tps, unit))
    _add_metric(values, skipped, f"{prefix}_f1_max", lambda: f1_max_from_curve(fps, tps, thresholds, unit)[0])


def _add_metric(values, skipped, name: str, compute) -> None:
    try:
        values[name] = float(compute())
    except UndefinedMetricError as error:
        skipped[name] = str(error)
