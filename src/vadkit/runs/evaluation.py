"""Everything vadkit reports about a test run, computed from its raw predictions (``PredictionRecord``).

One function, ``evaluate_record``, serves ``vadkit train``, ``test`` and ``eval``, so a recomputation from
``predictions.npz`` gives exactly the numbers the test run wrote. It adds no algorithm: it calls the metrics
layer and arranges the results for ``metrics.json``, ``per_image.csv`` and the HTML report.

What is computed:
- every threshold-free metric (``compute_metrics``, i.e. the metric registry): image and pixel AUROC / AUPR /
  F1-max, AU-PRO at FPR 0.3 and 0.05 (``pixel_aupro``, ``pixel_aupro_005``), AUPIMO (``aupimo_mean``,
  ``aupimo_count``; with its settings ``aupimo_fpr_bounds`` and ``aupimo_method``: ``"reference"``, the published
  numbers, unless asked otherwise, see ``metrics.pimo``);
- the same per defect type (normal images + that type's images), under ``per_defect``;
- metrics at the model's calibrated threshold, image level (``image_precision``, ``image_recall``,
  ``image_f1``, ``image_fpr``, ``image_miss_rate``) and pixel level (``pixel_precision``...). The pixel
  threshold is the image threshold: vadkit models score an image by its map (PatchCore: the map maximum),
  so the same value separates defective pixels; overlays use the same rule;
- operating points: the threshold that keeps the image false-positive rate at or below 0.1%, 1% and 5%
  (what is missed there) and that reaches 90%, 95% and 99% recall (what false alarms that costs);
- seeded bootstrap 95% intervals (``intervals``) of every metric the registry says how to bootstrap: images
  resampled with replacement, 1000 times by default. Pixel-metric intervals use per-image histograms (binned, error
  bound in ``metrics.binned``); per-image metrics (AUPIMO) resample their per-image values.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vadkit.runs.record import PredictionRecord

__all__ = ["FPR_TARGETS", "RECALL_TARGETS", "RecordEvaluation", "evaluate_record", "write_per_image_csv"]

FPR_TARGETS = (0.001, 0.01, 0.05)
RECALL_TARGETS = (0.90, 0.95, 0.99)
PER_IMAGE_FILE = "per_image.csv"
PER_IMAGE_COLUMNS = ("path", "defect_type", "label", "score", "predicted", "pixel_precision", "pixel_recall",
                     "pixel_f1", "aupimo")


@dataclass
class RecordEvaluation:
    """The result of ``evaluate_record``.

    Attributes:
        metrics: flat metric name -> value (plus ``skipped_metrics``), the metric part of ``metrics.json``.
        per_defect: defect type -> metric name -> value.
        intervals: metric name -> (low, high) bootstrap interval; empty when intervals were not asked for.
        operating_points: one dict per target (``target``, ``threshold``, ``recall``, ``fpr``, ``miss_rate``...).
        per_image: one row per image with the ``PER_IMAGE_COLUMNS`` keys.
        report: the full ``MetricsReport`` (curves for plots, per-image AUPIMO).
    """

    metrics: dict[str, Any]
    per_defect: dict[str, dict[str, float]]
    intervals: dict[str, tuple[float, float]]
    operating_points: list[dict[str, Any]]
    per_image: list[dict[str, Any]]
    report: Any
    interval_info: dict[str, Any] = field(default_factory=dict)

    def json_payload(self) -> dict[str, Any]:
        """The metrics.json keys this evaluation owns (the run facts are added by the caller)."""
        return {
            **self.metrics,
            "per_defect": self.per_defect,
            "intervals": {name: list(bounds) for name, bounds in self.intervals.items()},
            "interval_info": self.interval_info,
            "operating_points": self.operating_points,
        }


def evaluate_record(record: PredictionRecord, *, intervals: bool = True, n_resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0, keep_curves: bool = False,
                    fpr_bounds: tuple[float, float] = (1e-5, 1e-4),
                    aupimo_method: str | None = None) -> RecordEvaluation:
    """Compute every metric the record's labels and masks allow (see the module docstring).

    ``aupimo_method``: ``"reference"`` or ``"exact"`` (``metrics.pimo``); None: the default, ``"reference"``.
    """
    from vadkit.metrics import compute_metrics, per_defect_metrics
    from vadkit.metrics.pimo import DEFAULT_AUPIMO_METHOD
    from vadkit.metrics.pixel import pixel_runs

    aupimo_method = aupimo_method or DEFAULT_AUPIMO_METHOD
    labels, scores, masks = record.labels, record.scores, record.masks
    maps = record.maps if masks is not None else None
    runs = pixel_runs(maps) if masks is not None else None  # one sort of the pixels for every pixel metric below
    report = compute_metrics(labels, scores, masks, maps, keep_curves=keep_curves, fpr_bounds=fpr_bounds,
                             aupimo_method=aupimo_method, pixel_runs=runs)
    metrics: dict[str, Any] = dict(report.values)
    metrics["n_test"] = len(record)
    if masks is not None:
        metrics["aupimo_fpr_bounds"] = list(fpr_bounds)
        metrics["aupimo_method"] = aupimo_method
    per_defect = {defect: dict(sub.values)
                  for defect, sub in per_defect_metrics(labels, scores, record.defect_types, masks, maps,
                                                        fpr_bounds=fpr_bounds, aupimo_method=aupimo_method,
                                                        runs=runs).items()}
    aupimo = report.aupimo.per_image if report.aupimo is not None else np.full(len(record), np.nan)
    metrics.update(_at_threshold(record))
    if report.skipped:
        metrics["skipped_metrics"] = dict(report.skipped)
    interval_values, interval_info = {}, {}
    if intervals:
        interval_values, interval_info = _intervals(record, report.per_image, n_resamples, confidence, seed)
    return RecordEvaluation(
        metrics=metrics, per_defect=per_defect, intervals=interval_values,
        operating_points=_operating_points(labels, scores), per_image=_per_image_rows(record, aupimo),
        report=report, interval_info=interval_info,
    )


def _at_threshold(record: PredictionRecord) -> dict[str, Any]:
    """Image and pixel precision, recall, F1, FPR and miss rate at the calibrated thresholds (None: undefined).

    A pixel is predicted defective when its image is flagged (image threshold) and its map value reaches the
    pixel threshold: what the overlays show."""
    from vadkit.metrics import confusion_at, pixel_confusion_at

    if record.threshold is None:
        return {}
    values: dict[str, Any] = {}
    image = confusion_at(record.labels, record.scores, record.threshold)
    parts = [("image", image)]
    if record.masks is not None and record.pixel_threshold is not None:
        parts.append(("pixel", pixel_confusion_at(record.masks, record.maps, record.pixel_threshold,
                                                  flagged_images=record.flagged())))
    for prefix, result in parts:
        for name in ("precision", "recall", "f1", "fpr", "miss_rate"):
            values[f"{prefix}_{name}"] = getattr(result, name)
    return values


def _operating_points(labels: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """The thresholds a line engineer asks for: 'at 1 false alarm per 1000 parts, what do I miss?'."""
    from vadkit.errors import UndefinedMetricError
    from vadkit.metrics import threshold_for_fpr, threshold_for_recall

    points = []
    targets = [("max_fpr", value, threshold_for_fpr) for value in FPR_TARGETS]
    targets += [("min_recall", value, threshold_for_recall) for value in RECALL_TARGETS]
    for kind, value, choose in targets:
        try:
            choice = choose(labels, scores, value)
        except UndefinedMetricError:
            continue  # one class only: no operating point exists, and compute_metrics already says why
        points.append({"target": kind, "value": value, **_plain(choice)})
    return points


def _plain(choice) -> dict[str, Any]:
    """A result dataclass as JSON-able numbers (numpy scalars -> Python)."""
    from dataclasses import asdict

    return {key: (value.item() if isinstance(value, np.generic) else value) for key, value in asdict(choice).items()}


def _intervals(record: PredictionRecord, per_image: dict[str, np.ndarray], n_resamples: int, confidence: float,
               seed: int) -> tuple[dict[str, tuple[float, float]], dict[str, Any]]:
    """Every registered metric's bootstrap interval, by the metric's ``bootstrap`` rule (``metrics.registry``)."""
    from vadkit.errors import UndefinedMetricError
    from vadkit.metrics import bootstrap_image_ci, bootstrap_mean_ci, bootstrap_pixel_ci, registry

    found: dict[str, Any] = {}
    try:
        found.update(bootstrap_image_ci(record.labels, record.scores, n_resamples=n_resamples,
                                        confidence=confidence, seed=seed))
    except UndefinedMetricError:
        pass  # single-class test set: the point metric is skipped with its reason already
    if record.masks is not None:
        try:
            found.update(bootstrap_pixel_ci(record.masks, record.maps, n_resamples=n_resamples,
                                            confidence=confidence, seed=seed))
        except UndefinedMetricError:
            pass
    for metric in registry.metrics(bootstrap="per_image_mean"):
        values = per_image.get(metric.key)
        if values is not None and np.isfinite(values).any():
            found[metric.key] = bootstrap_mean_ci(values, n_resamples=n_resamples, confidence=confidence, seed=seed)
    intervals = {name: (float(iv.low), float(iv.high)) for name, iv in found.items()}
    info = {"confidence": confidence, "n_resamples": n_resamples, "seed": seed, "unit": "images",
            "methods": {name: iv.method for name, iv in found.items()}}
    return intervals, info


def _per_image_rows(record: PredictionRecord, aupimo: np.ndarray) -> list[dict[str, Any]]:
    from vadkit.metrics import per_image_pixel_scores

    flagged = record.flagged()
    predicted = [None] * len(record) if flagged is None else flagged.astype(int).tolist()
    pixel: dict[str, np.ndarray] = {}
    if flagged is not None and record.pixel_threshold is not None and record.masks is not None:
        pixel = per_image_pixel_scores(record.masks, record.maps, record.pixel_threshold, flagged_images=flagged)
    rows = []
    for i in range(len(record)):
        rows.append({
            "path": record.paths[i], "defect_type": record.defect_types[i], "label": int(record.labels[i]),
            "score": float(record.scores[i]), "predicted": predicted[i],
            **{f"pixel_{name}": _finite_or_none(pixel[name][i]) if name in pixel else None
               for name in ("precision", "recall", "f1")},
            "aupimo": _finite_or_none(aupimo[i]),
        })
    return rows


def _finite_or_none(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def write_per_image_csv(folder: str | Path, rows: list[dict[str, Any]]) -> Path:
    """``per_image.csv``: one row per test image; empty cells are 'not applicable' (e.g. AUPIMO of a normal image)."""
    target = Path(folder) / PER_IMAGE_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PER_IMAGE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if row[key] is None else row[key] for key in PER_IMAGE_COLUMNS})
    return target
