"""All standard VAD metrics of one evaluation in one call, as flat ``name -> float`` values.

Which keys: every metric of the registry (``registry.py``) whose input is given, computed by its ``statistic``.
With vadkit's registrations (keys are stable; benchmark tables and the CLI use them):

- always (``needs="labels"``): ``image_auroc``, ``image_aupr``, ``image_f1_max``;
- when ``masks`` is given (``needs="masks"``): ``pixel_auroc``, ``pixel_aupr``, ``pixel_f1_max``, ``pixel_aupro``
  (FPR limit 0.3), ``pixel_aupro_005`` (FPR limit 0.05), ``aupimo_mean`` and its companion ``aupimo_count`` (the
  mean of per-image AUPIMO over the anomalous images, and how many there are; the per-image values are
  ``MetricsReport.aupimo`` and ``MetricsReport.per_image["aupimo_mean"]``);
- when ``loco_regions`` is given (``needs="loco_regions"``): ``pixel_auspro``, AU-sPRO up to FPR 0.05 (MVTec LOCO
  AD, ``spro.py``).

Undefined metrics are *skipped, with the reason*, rather than NaN or an exception, so that one undefined
metric does not lose the others: e.g. a split of only defective images has no image AUROC but still has pixel
metrics (its masks contain normal pixels). ``MetricsReport.values`` holds what could be computed and
``MetricsReport.skipped`` maps each missing key to the reason (the ``UndefinedMetricError`` message). Bad
input (NaN scores, shape mismatch, labels other than 0/1, masks for another number of images than the labels) is a
bug, not an undefined metric, and raises.

Why a small dataclass rather than a dict with NaN: NaN propagates silently through means and tables, and the
design rule is "never silent NaN"; the skip reason is what a user needs to fix the split.

The pixel curve is sorted once and shared by the pixel metrics computed from it (AU-PRO sorts again, because it
needs the per-region weights in the same order; one PRO curve serves every FPR limit).

With ``keep_curves=True`` the report also keeps the curves for plots (``MetricsReport.curves``): ROC and PR of
images and pixels, the PRO curve, thinned to at most ``CURVE_POINTS`` points each (a pixel curve has one point
per distinct map value, millions of them; a plot cannot show more than a few thousand).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import registry
from vadkit.metrics.curves import ScoreRuns, binary_clf_curve
from vadkit.metrics.image import aupr_from_curve, auroc_from_curve, f1_max_from_curve
from vadkit.metrics.pimo import DEFAULT_AUPIMO_METHOD, AUPIMOResult, aupimo
from vadkit.metrics.pixel import pixel_clf_curve, pixel_runs
from vadkit.metrics.pro import aupro_from_curve, pro_curve
from vadkit.metrics.spro import SaturatedRegion, auspro

__all__ = ["CURVE_POINTS", "IMAGE_METRICS", "PIXEL_METRICS", "MetricsReport", "compute_metrics"]

#: Snapshots of the registry taken at import (vadkit's own metrics); code that must also see metrics registered
#: later calls ``registry.keys(needs="labels")`` / ``registry.keys(needs="masks", companion_of=None)``.
IMAGE_METRICS = registry.keys(needs="labels")
PIXEL_METRICS = registry.keys(needs="masks", companion_of=None)
CURVE_POINTS = 2000
_FROM_CURVE = {  # statistic -> value from one (fps, tps, thresholds) curve
    "auroc": lambda fps, tps, thresholds, unit: auroc_from_curve(fps, tps, unit),
    "aupr": lambda fps, tps, thresholds, unit: aupr_from_curve(fps, tps, unit),
    "f1_max": lambda fps, tps, thresholds, unit: f1_max_from_curve(fps, tps, thresholds, unit)[0],
}


@dataclass(frozen=True)
class MetricsReport:
    """Result of ``compute_metrics``.

    Attributes:
        values: metric name -> python float (int for counts), only the metrics that are defined for this input.
        skipped: metric name -> why it is undefined (e.g. "there are no anomalous (label 1) items").
        curves: curves for plots (``keep_curves=True``).
        aupimo: the full AUPIMO result (per-image values, bounds, method), None when AUPIMO was not computed.
        per_image: metric name -> (N,) per-image values of the ``per_image`` metrics (NaN: not applicable, e.g. the
            AUPIMO of a normal image); what ``vadkit compare`` pairs image by image.
    """

    values: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    aupimo: AUPIMOResult | None = None
    per_image: dict[str, np.ndarray] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        """A copy of ``values``: the flat ``name -> float`` mapping for tables and JSON."""
        return dict(self.values)


def compute_metrics(labels, scores, masks=None, maps=None, *, keep_curves: bool = False,
                    fpr_bounds: tuple[float, float] = (1e-5, 1e-4), aupimo_method: str = DEFAULT_AUPIMO_METHOD,
                    loco_regions=None, pixel_runs: ScoreRuns | None = None) -> MetricsReport:
    """Image metrics from ``labels``/``scores`` and, when ``masks`` is given, pixel metrics from ``masks``/``maps``.

    Args:
        labels: (N,) bool or 0/1 image labels, 1 = anomalous.
        scores: (N,) finite image anomaly scores.
        masks: optional (N, H, W) bool or 0/1 ground-truth masks. When None, no pixel metric is computed (and
            ``maps`` is ignored unless ``loco_regions`` is given: a dataset without masks is normal, a model always
            has maps).
        maps: (N, H, W) anomaly maps; required when ``masks`` or ``loco_regions`` is given.
        keep_curves: also return thinned curves for plots: ``image_roc`` / ``pixel_roc`` as (fpr, tpr),
            ``image_pr`` / ``pixel_pr`` as (recall, precision), ``pro`` as (fpr, pro).
        fpr_bounds: the AUPIMO integration range of the shared (normal-image) false positive rate.
        aupimo_method: ``"reference"`` (the published numbers) or ``"exact"``; see ``pimo.py``.
        loco_regions: MVTec LOCO AD ground truth for AU-sPRO (``pixel_auspro``, FPR limit 0.05): either a flat
            sequence of ``SaturatedRegion`` (each names its image), or one sequence per image (N of them, empty for
            a good image) of regions with ``mask`` and ``saturation``, such as the ``LocoRegion`` lists
            ``load_loco_regions`` returns for each test image. The FPR is measured on every pixel in no region.
        pixel_runs: the maps' pixels already sorted (``pixel.pixel_runs``, or ``curves.subset_runs`` of a larger
            set's); by default they are sorted here, once, for every pixel metric.

    Raises:
        ValueError: invalid input (see ``image.auroc`` and ``pixel.pixel_auroc``), masks or regions without maps,
            or masks / maps / regions for another number of images than ``labels`` and ``scores``.
    """
    values: dict[str, float] = {}
    skipped: dict[str, str] = {}
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    per_image: dict[str, np.ndarray] = {}
    kept = curves if keep_curves else None
    image_curve = binary_clf_curve(labels, scores)  # validates labels and scores (1-D, same length)
    n_images = int(image_curve[0][-1] + image_curve[1][-1])  # the curve's last point counts every image
    if masks is not None and maps is None:
        raise ValueError("masks were given without maps: pixel metrics need the anomaly maps too.")
    if loco_regions is not None and maps is None:
        raise ValueError("loco_regions were given without maps: AU-sPRO needs the anomaly maps too.")
    if masks is not None or loco_regions is not None:
        _require_same_images(n_images, masks, maps)

    _add_curve_metrics(values, skipped, kept, "image", image_curve, "images", registry.metrics(needs="labels"))
    pimo = None
    if masks is not None:
        pimo = _add_mask_metrics(values, skipped, kept, per_image, masks, maps, fpr_bounds, aupimo_method,
                                 pixel_runs)
    if loco_regions is not None:
        regions = _saturated_regions(loco_regions, n_images)
        for metric in registry.metrics(needs="loco_regions"):
            _add_metric(values, skipped, metric.key,
                        lambda metric=metric: auspro(regions, maps, fpr_limit=metric.fpr_limit))
    return MetricsReport(values=values, skipped=skipped, curves=curves, aupimo=pimo, per_image=per_image)


def _require_same_images(n_images: int, masks, maps) -> None:
    """Masks and maps must describe the labels' images: a silent mismatch would pair a mask with another image."""
    for name, stack in (("masks", masks), ("maps", maps)):
        if stack is None:
            continue
        shape = np.shape(stack)
        count = 1 if len(shape) == 2 else (shape[0] if shape else 0)
        if count != n_images:
            raise ValueError(
                f"labels and scores describe {n_images} images but {name} describe {count} "
                f"(shape {tuple(shape)}): they must be the same images, in the same order."
            )


def _add_mask_metrics(values, skipped, curves, per_image, masks, maps, fpr_bounds, aupimo_method, runs):
    """Every registered ``needs="masks"`` metric, from one sort of the pixels; returns the AUPIMO result (or None)."""
    from_curve = registry.metrics(needs="masks", statistic=tuple(_FROM_CURVE))
    with_pro = registry.metrics(needs="masks", statistic="aupro")
    if runs is None and (from_curve or curves is not None or with_pro):
        runs = pixel_runs(maps)
    if from_curve or curves is not None:
        _add_curve_metrics(values, skipped, curves, "pixel", pixel_clf_curve(masks, maps, runs), "pixels",
                           from_curve)
    if with_pro:
        try:
            fpr, pro, _ = pro_curve(masks, maps, runs)
        except UndefinedMetricError as error:
            skipped.update({metric.key: str(error) for metric in with_pro})
        else:
            values.update({metric.key: aupro_from_curve(fpr, pro, metric.fpr_limit) for metric in with_pro})
            if curves is not None:
                curves["pro"] = thin_curve(np.append(0.0, fpr), np.append(0.0, pro))
    pimo = None
    for metric in registry.metrics(needs="masks", statistic="aupimo"):
        try:
            pimo = aupimo(masks, maps, fpr_bounds=fpr_bounds, method=aupimo_method)
        except UndefinedMetricError as error:
            skipped[metric.key] = str(error)
        else:
            values[metric.key] = float(pimo.mean)
            per_image[metric.key] = pimo.per_image
            for companion in registry.metrics(companion_of=metric.key):
                values[companion.key] = int(pimo.count)  # AUPIMO's companion: how many images it scored
    return pimo


def _saturated_regions(loco_regions, n_images: int) -> list[SaturatedRegion]:
    """``loco_regions`` as a flat list of ``SaturatedRegion`` (see ``compute_metrics``)."""
    loco_regions = list(loco_regions)
    if all(isinstance(region, SaturatedRegion) for region in loco_regions):
        return loco_regions
    if len(loco_regions) == n_images and all(isinstance(regions, (list, tuple)) for regions in loco_regions):
        try:
            return [SaturatedRegion(index, region.mask, region.saturation)
                    for index, regions in enumerate(loco_regions) for region in regions]
        except AttributeError:
            pass
    raise ValueError(
        f"loco_regions must be a sequence of SaturatedRegion, or {n_images} sequences (one per image, empty for a "
        "good image) of regions with .mask and .saturation (e.g. load_loco_regions' LocoRegion lists)."
    )


def thin_curve(x: np.ndarray, y: np.ndarray, max_points: int = CURVE_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` evenly spaced points of a curve, first and last kept (for plots only)."""
    if len(x) <= max_points:
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(np.int64))
    return np.asarray(x[keep], dtype=np.float64), np.asarray(y[keep], dtype=np.float64)


def _add_curve_metrics(values, skipped, curves, prefix: str, curve, unit: str, metrics) -> None:
    """The ``metrics`` computed from one sorted (fps, tps) curve, and the ROC / PR curves to plot."""
    fps, tps, thresholds = curve
    for metric in metrics:
        compute = _FROM_CURVE[metric.statistic]
        _add_metric(values, skipped, metric.key, lambda compute=compute: compute(fps, tps, thresholds, unit))
    if curves is not None and fps[-1] > 0 and tps[-1] > 0:  # both classes: the curves exist
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
