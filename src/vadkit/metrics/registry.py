"""The one list of the metrics vadkit reports: each metric is registered once, here, with everything the rest of
vadkit needs to know about it.

Why: a metric used to be a key repeated in a dozen lists (compute_metrics' keys, the bootstrap's, compare's, the
CLI's summary and per-defect columns, the report's labels), so adding one meant finding every list, and sPRO was in
none of them. Now every consumer derives its list from this registry at the time it runs:

- ``compute_metrics`` (``report.py``) computes every metric whose ``needs`` its inputs satisfy, by ``statistic``
  (one sorted curve per family, so a new AU-PRO limit is one registration);
- ``bootstrap.py`` draws intervals for ``bootstrap="images"`` (image labels/scores resampled) and
  ``"pixel_histogram"`` (per-image pixel histograms resampled) metrics; ``runs/evaluation.py`` adds
  ``"per_image_mean"`` ones (the mean of per-image values, resampled);
- ``runs/recompute.py`` (``vadkit compare``) pairs ``compare="paired_bootstrap"`` metrics by resampling the same
  images for both runs (and runs DeLong's test when ``delong``), ``"wilcoxon"`` ones image by image, and reports
  ``"unpaired"`` ones with each run's own interval;
- the CLI shows ``summary`` metrics in its table and ``per_defect_column`` ones in the per-defect table;
- ``report.formatting.metric_label`` writes ``label``.

Keys are stable (``metrics.json``, benchmark tables and scripts read them). Registration order is display order.
A metric computed elsewhere (``needs="threshold"``: at the calibrated threshold, in ``runs/evaluation.py``) is
registered too, so that every key a run writes has a label and a direction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Metric", "get", "keys", "metrics", "register", "registered", "unregister"]

KINDS = ("image", "pixel", "region", "per_image")
NEEDS = ("labels", "masks", "loco_regions", "threshold")
BOOTSTRAPS = ("images", "pixel_histogram", "per_image_mean", "none")
COMPARISONS = ("paired_bootstrap", "wilcoxon", "unpaired", "none")
#: Functions of a score ranking that compute_metrics and the bootstraps know how to evaluate.
STATISTICS = ("auroc", "aupr", "f1_max", "aupro", "aupimo", "auspro")
_CURVE_STATISTICS = ("auroc", "aupr", "f1_max")  # from the (fps, tps) curve: image or pixel
_WITH_FPR_LIMIT = ("aupro", "auspro")


@dataclass(frozen=True)
class Metric:
    """One registered metric.

    Attributes:
        key: the flat name in ``MetricsReport.values`` and ``metrics.json``, e.g. ``pixel_aupro_005``.
        label: how reports write it, e.g. ``Pixel AU-PRO (FPR ≤ 0.05)``.
        kind: ``"image"`` (one score per image), ``"pixel"`` (all pixels pooled), ``"region"`` (per defect region,
            AU-PRO / AU-sPRO) or ``"per_image"`` (a per-image value and its mean, AUPIMO).
        higher_is_better: the direction; None for a count that accompanies a metric (``aupimo_count``).
        needs: the input it is computed from: ``"labels"`` (image labels and scores), ``"masks"`` (masks and maps),
            ``"loco_regions"`` (MVTec LOCO regions and maps) or ``"threshold"`` (a calibrated threshold; computed by
            ``runs/evaluation.py``, not by ``compute_metrics``).
        statistic: what ``compute_metrics`` and the bootstraps compute (see ``STATISTICS``); None when computed
            elsewhere (``needs="threshold"``) or when the value comes with another metric (``companion_of``).
        fpr_limit: the FPR integration limit of ``"aupro"`` / ``"auspro"``.
        bootstrap: how its interval is drawn: ``"images"``, ``"pixel_histogram"``, ``"per_image_mean"`` or ``"none"``.
        compare: how ``vadkit compare`` pairs two runs: ``"paired_bootstrap"``, ``"wilcoxon"``, ``"unpaired"``, or
            ``"none"`` (not compared).
        delong: ``compare`` also runs DeLong's paired AUROC test.
        summary: a row of the CLI summary table.
        per_defect_column: a column of the CLI per-defect table.
        companion_of: the key of the metric whose computation yields this value too (skipped with it).
    """

    key: str
    label: str
    kind: str
    higher_is_better: bool | None
    needs: str
    statistic: str | None = None
    fpr_limit: float | None = None
    bootstrap: str = "none"
    compare: str = "none"
    delong: bool = False
    summary: bool = False
    per_defect_column: bool = False
    companion_of: str | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("kind", KINDS), ("needs", NEEDS), ("bootstrap", BOOTSTRAPS),
                              ("compare", COMPARISONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"metric {self.key!r}: {name} must be one of {allowed}, got {getattr(self, name)!r}.")
        problems = []
        if not self.key or not self.key.replace("_", "").isalnum() or self.key != self.key.lower():
            problems.append("the key must be lower-case letters, digits and underscores")
        if self.statistic is not None and self.statistic not in STATISTICS:
            problems.append(f"statistic must be one of {STATISTICS} or None")
        computable = {"labels": _CURVE_STATISTICS, "masks": _CURVE_STATISTICS + ("aupro", "aupimo"),
                      "loco_regions": ("auspro",), "threshold": ()}[self.needs]
        if self.companion_of is None and self.needs != "threshold" and self.statistic not in computable:
            problems.append(f"compute_metrics computes a metric that needs {self.needs!r} with a statistic among "
                            f"{computable}")
        if self.companion_of is not None and self.statistic is not None:
            problems.append("a companion value has no statistic of its own")
        if (self.statistic in _WITH_FPR_LIMIT) != (self.fpr_limit is not None):
            problems.append("fpr_limit is required by (and only by) the aupro / auspro statistics")
        if self.fpr_limit is not None and not 0.0 < self.fpr_limit <= 1.0:
            problems.append("fpr_limit must be in (0, 1]")
        if self.bootstrap == "images" and not (self.needs == "labels" and self.statistic in _CURVE_STATISTICS):
            problems.append("bootstrap 'images' resamples image labels/scores: needs 'labels', statistic auroc/aupr/"
                            "f1_max")
        if self.bootstrap == "pixel_histogram" and not (
                self.needs == "masks" and self.statistic in _CURVE_STATISTICS + ("aupro",)):
            problems.append("bootstrap 'pixel_histogram' needs 'masks' and statistic auroc/aupr/f1_max/aupro")
        if self.bootstrap == "per_image_mean" and self.kind != "per_image":
            problems.append("bootstrap 'per_image_mean' is for per_image metrics")
        if self.compare == "paired_bootstrap" and self.bootstrap != "images":
            problems.append("compare 'paired_bootstrap' resamples images for both runs: needs bootstrap 'images'")
        if self.compare == "wilcoxon" and self.kind != "per_image":
            problems.append("compare 'wilcoxon' pairs per-image values: kind must be per_image")
        if self.delong and not (self.statistic == "auroc" and self.needs == "labels"):
            problems.append("delong is DeLong's test of image AUROC: needs 'labels' and statistic auroc")
        if self.companion_of is not None and (self.bootstrap != "none" or self.compare != "none"):
            problems.append("a companion value is neither bootstrapped nor compared")
        if problems:
            raise ValueError(f"metric {self.key!r}: " + "; ".join(problems) + ".")


_REGISTRY: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    """Add ``metric`` (after the ones already registered); its key must be new. Returns it."""
    if not isinstance(metric, Metric):
        raise TypeError(f"register() takes a Metric, got {type(metric).__name__}.")
    if metric.key in _REGISTRY:
        raise ValueError(f"a metric with key {metric.key!r} is already registered.")
    if metric.companion_of is not None and metric.companion_of not in _REGISTRY:
        raise ValueError(f"metric {metric.key!r} is a companion of {metric.companion_of!r}, which is not registered.")
    _REGISTRY[metric.key] = metric
    return metric


def unregister(key: str) -> Metric:
    """Remove and return the metric registered under ``key``."""
    try:
        return _REGISTRY.pop(key)
    except KeyError:
        raise KeyError(f"no metric is registered under {key!r}.") from None


@contextmanager
def registered(metric: Metric) -> Iterator[Metric]:
    """Register ``metric`` for the duration of a ``with`` block (tests, experiments)."""
    register(metric)
    try:
        yield metric
    finally:
        unregister(metric.key)


def get(key: str) -> Metric:
    """The metric registered under ``key`` (KeyError naming the known keys otherwise)."""
    try:
        return _REGISTRY[key]
    except KeyError:
        raise KeyError(f"no metric is registered under {key!r}; known: {', '.join(_REGISTRY)}.") from None


def metrics(**criteria) -> tuple[Metric, ...]:
    """The registered metrics, in registration order, whose attributes equal every ``criteria`` value.

    A criterion's value may also be a tuple/list/set of accepted values: ``metrics(needs=("masks", "labels"))``.
    """
    unknown = set(criteria) - set(Metric.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown metric attribute(s) {sorted(unknown)}.")

    def accepts(value, wanted) -> bool:
        return value in wanted if isinstance(wanted, (tuple, list, set, frozenset)) else value == wanted

    return tuple(m for m in _REGISTRY.values()
                 if all(accepts(getattr(m, name), wanted) for name, wanted in criteria.items()))


def keys(**criteria) -> tuple[str, ...]:
    """The keys of ``metrics(**criteria)``."""
    return tuple(m.key for m in metrics(**criteria))


# --- vadkit's metrics ----------------------------------------------------------------------------------------------
# Threshold-free, from image labels and scores (metrics/image.py).
register(Metric("image_auroc", "Image AUROC", "image", True, "labels", "auroc", bootstrap="images",
                compare="paired_bootstrap", delong=True, summary=True, per_defect_column=True))
register(Metric("image_aupr", "Image AUPR (AP)", "image", True, "labels", "aupr", bootstrap="images",
                compare="paired_bootstrap", summary=True))
# F1-max is F1 at the best threshold *for the test set*: an oracle figure, named so (the thresholded metrics below
# use the threshold calibrated on validation images)
register(Metric("image_f1_max", "Image F1-max (oracle: best test-set threshold)", "image", True, "labels", "f1_max",
                bootstrap="images",
                compare="paired_bootstrap", summary=True))
# Threshold-free, from masks and maps (metrics/pixel.py, pro.py, pimo.py). Pixel metrics are compared unpaired:
# pixels of one image are not independent, and a paired pixel bootstrap would need both runs on one binning.
register(Metric("pixel_auroc", "Pixel AUROC", "pixel", True, "masks", "auroc", bootstrap="pixel_histogram",
                compare="unpaired", summary=True, per_defect_column=True))
register(Metric("pixel_aupr", "Pixel AUPR (AP)", "pixel", True, "masks", "aupr", bootstrap="pixel_histogram",
                compare="unpaired", summary=True))
register(Metric("pixel_f1_max", "Pixel F1-max (oracle: best test-set threshold)", "pixel", True, "masks", "f1_max",
                bootstrap="pixel_histogram",
                compare="unpaired", summary=True))
register(Metric("pixel_aupro", "Pixel AU-PRO (FPR ≤ 0.3)", "region", True, "masks", "aupro", fpr_limit=0.3,
                bootstrap="pixel_histogram", compare="unpaired", summary=True, per_defect_column=True))
register(Metric("pixel_aupro_005", "Pixel AU-PRO (FPR ≤ 0.05)", "region", True, "masks", "aupro", fpr_limit=0.05,
                bootstrap="pixel_histogram", compare="unpaired", summary=True))
register(Metric("aupimo_mean", "Mean AUPIMO", "per_image", True, "masks", "aupimo", bootstrap="per_image_mean",
                compare="wilcoxon", summary=True, per_defect_column=True))
register(Metric("aupimo_count", "Images with AUPIMO", "per_image", None, "masks", companion_of="aupimo_mean"))
# MVTec LOCO AD's localisation metric (metrics/spro.py): AU-sPRO up to FPR 0.05, the limit Bergmann et al. (IJCV
# 2022) report in their main tables. Needs the per-defect saturation areas, so only with `loco_regions`.
register(Metric("pixel_auspro", "Pixel AU-sPRO (FPR ≤ 0.05)", "region", True, "loco_regions", "auspro",
                fpr_limit=0.05, compare="unpaired", summary=True))
# At the calibrated threshold (runs/evaluation.py `_at_threshold`).
for _level in ("image", "pixel"):
    for _name, _label, _higher, _summary in (("precision", "precision", True, True), ("recall", "recall", True, True),
                                             ("f1", "F1", True, False), ("fpr", "FPR", False, True),
                                             ("miss_rate", "miss rate", False, False)):
        register(Metric(f"{_level}_{_name}", f"{_level.capitalize()} {_label}", _level, _higher,
                        "threshold", summary=_summary and _level == "image"))
del _level, _name, _label, _higher, _summary
