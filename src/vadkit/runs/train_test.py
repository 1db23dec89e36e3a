"""What ``vadkit train``, ``test``, ``predict`` and ``demo`` do, as plain Python functions.

An app layer (DESIGN.md): it composes data, models and metrics and adds no algorithm. A training run writes
``OUT/model.vad``; a training or test run writes ``OUT/metrics.json``, ``OUT/predictions.npz`` (raw scores and
maps, see ``record.py``), ``OUT/per_image.csv`` and ``OUT/overlays/*.png``.

``metrics.json`` is stable so scripts can read it: the metric keys of ``evaluation.py`` (``image_auroc``,
``pixel_aupro``, ``pixel_aupro_005``, ``aupimo_mean``, ``per_defect``, ``intervals``, ...), then ``n_train``,
``n_test``, ``fit_seconds``, ``predict_ms_per_image``, ``model``, ``backbone``, ``params``, ``threshold``,
``threshold_rule``, ``data``, ``layout``, ``vadkit_version``, and ``skipped_metrics`` (metric -> reason, for
metrics undefined on this test set).

Threshold: after training, the model is calibrated on the test split (F1-optimal when it holds anomalies;
see ``AnomalyModel.calibrate``), the convention of MVTec-style benchmarks, which have no validation split.
It only affects the labels written by ``predict``, the thresholded metrics and the overlay masks; the
threshold-free metrics (AUROC, AUPR, F1-max, AU-PRO, AUPIMO) do not depend on it. For production, calibrate
on a held-out set instead.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vadkit.runs.evaluation import RecordEvaluation, evaluate_record, write_per_image_csv
from vadkit.runs.record import PredictionRecord

MODEL_FILE = "model.vad"
METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions.jsonl"


@dataclass
class Evaluation:
    metrics: dict[str, Any]
    record: PredictionRecord
    details: RecordEvaluation

    @property
    def scores(self) -> np.ndarray:
        return self.record.scores

    @property
    def maps(self) -> np.ndarray:
        return self.record.maps


def evaluate(model, dataset, *, batch_size: int | None = None, progress: bool | None = None,
             calibrate: bool = False, intervals: bool = True, run_info: dict[str, Any] | None = None) -> Evaluation:
    """Predict a labelled dataset and compute every metric its labels and masks allow.

    With ``calibrate=True`` the model's threshold is first set from these predictions (the test-split
    convention, see the module docstring), so that the thresholded metrics use it.
    """
    start = time.perf_counter()
    prediction = model.predict(dataset, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    if calibrate:
        _calibrate_on_test(model, prediction.scores, dataset.labels)
    meta = {**(run_info or {}), "threshold": model.threshold, "threshold_rule": model.threshold_rule,
            "transform": asdict(model.transform)}
    record = PredictionRecord.from_prediction(dataset, prediction.scores, prediction.maps, meta)
    details = evaluate_record(record, intervals=intervals)
    record = record.with_aupimo(_aupimo_per_image(details, len(record)))
    metrics = {**details.json_payload(), "predict_ms_per_image": 1000.0 * seconds / len(dataset)}
    return Evaluation(metrics, record, details)


def _calibrate_on_test(model, scores: np.ndarray, labels: np.ndarray) -> None:
    if labels.min() == 0:
        model.calibrate_from_scores(scores, labels, source="the test split")
    else:
        warnings.warn("the test split holds no normal images: the model is saved uncalibrated (no threshold; "
                      "predict writes label null) - run model.calibrate() on normal images", stacklevel=3)


def _aupimo_per_image(details: RecordEvaluation, n: int) -> np.ndarray:
    aupimo = details.report.aupimo
    return aupimo.per_image if aupimo is not None else np.full(n, np.nan)


def save_evaluation(out: Path, evaluation: Evaluation, run_facts: dict[str, Any]) -> dict[str, Any]:
    """Write metrics.json (metrics + run facts), predictions.npz and per_image.csv; returns the metrics."""
    metrics = {**evaluation.metrics, **run_facts}
    write_json(out / METRICS_FILE, metrics)
    evaluation.record.save(out)
    write_per_image_csv(out, evaluation.details.per_image)
    return metrics


def write_overlays(folder: Path, model, dataset, evaluation: Evaluation, count: int = 8) -> list[Path]:
    """Overlays for ``count`` test images spread over the score ranking (best to worst), one colour scale."""
    for stale in folder.glob("*.png") if folder.is_dir() else ():
        stale.unlink()  # a re-run into the same folder must not leave the previous run's overlays behind
    if count <= 0:
        return []
    order = np.argsort(evaluation.scores)
    picks = order[np.unique(np.linspace(0, len(order) - 1, min(count, len(order))).round().astype(int))]
    vmin, vmax = float(np.min(evaluation.maps)), float(np.max(evaluation.maps))
    written = []
    for index in picks:
        item = dataset[int(index)]
        image = dataset.transform.denormalise(item["image"])
        name = Path(item["path"]).stem
        truth = "anomalous" if item["label"] else "normal"
        caption = f"{item['defect_type']} ({truth})  score {evaluation.scores[index]:.3f}"
        written.append(_save(folder / f"{item['defect_type']}_{name}.png", image, evaluation.maps[index].astype(np.float32),
                             vmin, vmax, model.threshold, caption))
    return written


def _save(path, image, anomaly_map, vmin, vmax, threshold, caption) -> Path:
    from vadkit.visualize import save_overlay

    return save_overlay(path, image, anomaly_map, vmin=vmin, vmax=vmax, threshold=threshold, caption=caption)


def build_datasets(data: str | Path | None, layout: str, options: dict[str, Any], transform,
                   skip_bad_images: bool = False):
    """(train, test) ImageDatasets of a layout, with the model's transform; test is None when the layout
    leaves no test images (e.g. ``folder`` with ``test_ratio=0`` and no defect folders)."""
    from vadkit.data import ImageDataset, load_split

    split = load_split(layout, data, **options)
    train_set = ImageDataset(split.train, transform, skip_bad_images=skip_bad_images)
    test_set = ImageDataset(split.test, transform, skip_bad_images=skip_bad_images) if split.test else None
    return train_set, test_set


def train(*, data: str | Path | None, layout: str, model_name: str, params: dict[str, Any], out: str | Path,
          layout_options: dict[str, Any] | None = None, batch_size: int | None = None, overlays: int = 8,
          skip_bad_images: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Fit, evaluate, calibrate and save; returns the metrics written to ``out/metrics.json``."""
    from vadkit.models import create_model

    out = Path(out)
    model = create_model(model_name, **params)
    train_set, test_set = build_datasets(data, layout, layout_options or {}, model.transform, skip_bad_images)
    start = time.perf_counter()
    model.fit(train_set, batch_size=batch_size, progress=progress)
    fit_seconds = time.perf_counter() - start
    facts = {"n_train": len(train_set), "fit_seconds": fit_seconds,
             "skipped_images": [str(p) for p in train_set.skipped + (test_set.skipped if test_set else [])]}
    if test_set is None:
        warnings.warn("the test split is empty: the model is trained and saved, but not evaluated or calibrated",
                      stacklevel=2)
        model.save(out / MODEL_FILE)
        metrics = {"n_test": 0, **facts, **_run_info(model, data, layout, layout_options)}
        write_json(out / METRICS_FILE, metrics)
        return metrics
    evaluation = evaluate(model, test_set, batch_size=batch_size, progress=progress, calibrate=True,
                          run_info=_run_info(model, data, layout, layout_options))
    model.save(out / MODEL_FILE)
    # Run facts are read after calibration, so metrics.json carries the threshold the model was saved with.
    metrics = save_evaluation(out, evaluation, {**facts, **_run_info(model, data, layout, layout_options)})
    write_overlays(out / "overlays", model, test_set, evaluation, overlays)
    return metrics


def test(*, model_path: str | Path, data: str | Path | None, layout: str, out: str | Path,
         layout_options: dict[str, Any] | None = None, batch_size: int | None = None, overlays: int = 8,
         skip_bad_images: bool = False, progress: bool | None = None) -> dict[str, Any]:
    """Evaluate a saved model on a layout's test split; writes ``out/metrics.json``."""
    from vadkit.data import ImageDataset, load_split
    from vadkit.models import load_model

    model = load_model(model_path)
    split = load_split(layout, data, **(layout_options or {}))
    test_set = ImageDataset(split.test, model.transform, skip_bad_images=skip_bad_images)
    info = _run_info(model, data, layout, layout_options)
    evaluation = evaluate(model, test_set, batch_size=batch_size, progress=progress, run_info=info)
    metrics = save_evaluation(Path(out), evaluation, {**info, "model_file": str(Path(model_path)),
                                                      "skipped_images": [str(p) for p in test_set.skipped]})
    write_overlays(Path(out) / "overlays", model, test_set, evaluation, overlays)
    return metrics


# metrics.json keys that describe the run rather than measure the predictions (kept by ``vadkit eval``).
RUN_FACT_KEYS = frozenset({
    "n_train", "fit_seconds", "predict_ms_per_image", "skipped_images", "model_file", "model", "backbone",
    "params", "threshold", "threshold_rule", "data", "layout", "layout_options", "vadkit_version",
})


def _run_info(model, data, layout: str, layout_options: dict[str, Any] | None) -> dict[str, Any]:
    """The metrics.json keys that say what ran: model, parameters, threshold, data, vadkit version."""
    from vadkit import __version__

    return {
        "model": model.name,
        "backbone": getattr(model, "backbone", None),
        "params": model.get_params(),
        "threshold": model.threshold,
        "threshold_rule": model.threshold_rule,
        "data": None if data is None else str(Path(data).resolve()),
        "layout": layout,
        "layout_options": layout_options or {},
        "vadkit_version": __version__,
    }


def predict(*, model_path: str | Path, inputs: Sequence[str | Path], out: str | Path,
            batch_size: int | None = None, overlays: bool = True, skip_bad_images: bool = False,
            progress: bool | None = None) -> Path:
    """Score images (files or folders of images); writes ``out/predictions.jsonl`` and overlays.

    One JSON line per image: ``{"path": absolute input path, "score": float, "label": 0/1 or null when the
    model is not calibrated, "overlay": overlay path or null}``.
    """
    from vadkit.data import ImageDataset, Sample
    from vadkit.models import load_model

    model = load_model(model_path)
    paths = expand_inputs(inputs)
    dataset = ImageDataset([Sample(p) for p in paths], model.transform, skip_bad_images=skip_bad_images)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    position = 0
    from vadkit.progress import track

    total = model.n_batches(len(dataset), batch_size)
    for part in track(model.predict_batches(dataset, batch_size=batch_size), "predicting", total=total,
                      enabled=progress):
        for score, anomaly_map, label in zip(part.scores, part.maps, _labels(part)):
            sample = dataset.samples[position]
            overlay = None
            if overlays:
                image = dataset.transform.denormalise(dataset[position]["image"])
                overlay = str(_save(out / "overlays" / f"{position:05d}_{sample.image_path.stem}.png", image,
                                    anomaly_map, float(anomaly_map.min()), float(anomaly_map.max()),
                                    model.threshold, f"score {score:.3f}").resolve())
            lines.append({"path": str(Path(sample.image_path).resolve()), "score": float(score),
                          "label": None if label is None else int(label), "overlay": overlay})
            position += 1
    target = out / PREDICTIONS_FILE
    target.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return target


def _labels(part):
    return part.labels if part.labels is not None else [None] * len(part.scores)


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted); a missing path is a DataError."""
    from vadkit.data import list_images
    from vadkit.errors import DataError

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                raise DataError(f"no images in folder {path} (looked for png/jpg/bmp/tif/webp files)")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"input not found: {path} (give image files or folders of images)")
    return paths


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
