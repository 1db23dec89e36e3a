"""What ``vadkit train``, ``test``, ``predict`` and ``demo`` do, as plain Python functions.

An app layer (docs/architecture.md): it composes data, models and metrics and adds no algorithm. A training run writes
``OUT/model.vad``; a training or test run writes ``OUT/metrics.json``, ``OUT/predictions.npz`` (raw scores and
maps, see ``record.py``), ``OUT/per_image.csv`` and ``OUT/overlays/*.png``.

``metrics.json`` is stable so scripts can read it: the metric keys of ``evaluation.py`` (``image_auroc``,
``pixel_aupro``, ``pixel_aupro_005``, ``aupimo_mean``, ``per_defect``, ``intervals``, ...), then ``n_train``,
``n_test``, ``fit_seconds``, ``predict_ms_per_image``, ``model``, ``backbone``, ``params``, ``threshold``,
``threshold_rule``, ``data``, ``layout``, ``vadkit_version``, and ``skipped_metrics`` (metric -> reason, for
metrics undefined on this test set).

Thresholds: after training, the image and pixel thresholds are calibrated on the split's validation part
(:mod:`vadkit.data.validation`: by default a tenth of the training normals, held out from the fit; or a
folder given with ``val``), never on the test labels, so the precision, recall and false-alarm rate reported
at the threshold are what a user can expect. ``metrics.json`` says where the threshold came from in
``threshold_source``: ``validation`` (a validation part with defects: F1-optimal), ``validation_normals``
(normals only: a quantile of their scores), ``test`` (only when asked with ``calibrate_on_test``, the
MVTec habit, which makes the thresholded figures optimistic) or None (no validation images: saved
uncalibrated). The threshold-free metrics (AUROC, AUPR, AU-PRO, AUPIMO, and F1-max, which is F1 at the
best threshold *for the test set*, an oracle figure) do not depend on it.
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
CHECKPOINT_FILE = "training.ckpt"
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

    With ``calibrate=True`` the model's thresholds are first set from these predictions (calibration on the
    test split, see the module docstring), so that the thresholded metrics use them.
    """
    start = time.perf_counter()
    prediction = model.predict(dataset, batch_size=batch_size, progress=progress)
    seconds = time.perf_counter() - start
    if calibrate:
        _calibrate_on_test(model, prediction, dataset)
    meta = {**(run_info or {}), **_threshold_facts(model), "transform": asdict(model.transform)}
    record = PredictionRecord.from_prediction(dataset, prediction.scores, prediction.maps, meta)
    details = evaluate_record(record, intervals=intervals)
    record = record.with_aupimo(_aupimo_per_image(details, len(record)))
    metrics = {**details.json_payload(), "predict_ms_per_image": 1000.0 * seconds / len(dataset)}
    return Evaluation(metrics, record, details)


def _calibrate_on_test(model, prediction, dataset) -> None:
    labels = dataset.labels
    if labels.min() == 0:
        model.calibrate_from_scores(prediction.scores, labels, source="the test split")
        model.calibrate_pixels(prediction.maps, labels, dataset.masks_array() if dataset.has_masks else None,
                               source="the test split")
        model.threshold_source = "test"
    else:
        warnings.warn("the test split holds no normal images: the model is saved uncalibrated (no threshold; "
                      "predict writes label null) - run model.calibrate() on normal images", stacklevel=3)


def _threshold_facts(model) -> dict[str, Any]:
    """The thresholds a run used and where they came from (metrics.json and predictions.npz meta)."""
    return {"threshold": model.threshold, "threshold_rule": model.threshold_rule,
            "threshold_source": model.threshold_source if model.threshold is not None else None,
            "pixel_threshold": model.pixel_threshold, "pixel_threshold_rule": model.pixel_threshold_rule}


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
        flagged = model.threshold is not None and float(evaluation.scores[index]) >= model.threshold
        written.append(_save(folder / f"{item['defect_type']}_{name}.png", image,
                             evaluation.maps[index].astype(np.float32), vmin, vmax,
                             model.pixel_threshold if flagged else None, caption))
    return written


def _save(path, image, anomaly_map, vmin, vmax, threshold, caption) -> Path:
    from vadkit.visualize import save_overlay

    return save_overlay(path, image, anomaly_map, vmin=vmin, vmax=vmax, threshold=threshold, caption=caption)


@dataclass
class RunData:
    """The datasets of a training run, built with the model's transform (``val``/``test`` None when empty)."""

    train: Any
    val: Any
    test: Any

    @property
    def skipped(self) -> list[Path]:
        return [path for part in (self.train, self.val, self.test) if part is not None for path in part.skipped]


def build_datasets(data: str | Path | None, layout: str, options: dict[str, Any], transform,
                   skip_bad_images: bool = False, *, val_ratio: float | None = None,
                   val: str | Path | None = None, seed: int = 0) -> RunData:
    """The train, validation and test ImageDatasets of a layout (see :func:`vadkit.data.with_validation` for
    the validation part; ``val_ratio=0`` and no ``val`` leave it empty)."""
    from vadkit.data import ImageDataset, load_split, with_validation

    split = with_validation(load_split(layout, data, **options), val_ratio=val_ratio, val=val, seed=seed)

    def dataset(samples):
        return ImageDataset(samples, transform, skip_bad_images=skip_bad_images) if samples else None

    return RunData(dataset(split.train), dataset(split.val), dataset(split.test))


def _advise_on_aspect(model, samples) -> None:
    """Warn when the training images share an aspect ratio the model's square input squeezes (data/aspect.py)."""
    from vadkit.backbones import get_spec
    from vadkit.data.aspect import aspect_advice

    try:
        patch = get_spec(model.backbone).patch_size if model.backbone else None
    except ValueError:
        patch = None
    advice = aspect_advice(model.transform, samples, multiple=patch or 32)
    if advice:
        warnings.warn(advice, stacklevel=3)


def train(*, data: str | Path | None, layout: str, model_name: str, params: dict[str, Any], out: str | Path,
          layout_options: dict[str, Any] | None = None, batch_size: int | None = None, overlays: int = 8,
          skip_bad_images: bool = False, progress: bool | None = None, val_ratio: float | None = None,
          val: str | Path | None = None, calibrate_on_test: bool = False, device: str = "cpu",
          resume: bool = False) -> dict[str, Any]:
    """Fit, calibrate, evaluate and save; returns the metrics written to ``out/metrics.json``.

    ``val_ratio`` / ``val``: the validation part (module docstring; default: a tenth of the training normals
    when there are at least 20): a trained method validates on it (early stopping, best weights) and the
    thresholds are calibrated on it. ``calibrate_on_test``: calibrate on the test split instead (no validation
    part is held out; the thresholded figures are then optimistic). ``device``: ``cpu``, ``cuda`` or ``auto``.
    A trained method checkpoints to ``out/training.ckpt``; ``resume`` continues an interrupted training.
    """
    from vadkit.models import create_model
    from vadkit.models.trained import TrainedModel

    out = Path(out)
    model = create_model(model_name, **params)
    if calibrate_on_test and (val is not None or val_ratio):
        from vadkit.errors import ParameterError

        raise ParameterError("calibrate_on_test calibrates on the test split: give it without val or val_ratio")
    # A transductive method's scores depend on the images scored together (MuSc: the test images score each
    # other): a threshold from other images would not transfer, so nothing is held out for calibration.
    no_validation = calibrate_on_test or model.transductive
    sets = build_datasets(data, layout, layout_options or {}, model.transform, skip_bad_images,
                          val_ratio=0.0 if no_validation else val_ratio, val=None if model.transductive else val)
    _advise_on_aspect(model, sets.train.samples)
    start = time.perf_counter()
    model.to(device)
    if isinstance(model, TrainedModel):
        if resume and not (out / CHECKPOINT_FILE).is_file():
            warnings.warn(f"resume: there is no checkpoint {out / CHECKPOINT_FILE} yet, so training starts from "
                          f"the beginning (it is written as training goes)", stacklevel=2)
        model.fit(sets.train, val=sets.val, batch_size=batch_size, progress=progress,
                  checkpoint=out / CHECKPOINT_FILE, resume=resume)
    else:
        if resume:
            warnings.warn(f"resume applies to trained methods; {model_name} fits in one pass, so there is nothing "
                          f"to resume: fitting from the start", stacklevel=2)
        model.fit(sets.train, batch_size=batch_size, progress=progress)
    fit_seconds = time.perf_counter() - start
    if sets.val is not None:
        source = "validation images" if sets.val.labels.max() == 1 else "held-out training normals"
        model.calibrate(sets.val, batch_size=batch_size, progress=progress, source=source)
    elif model.transductive and not calibrate_on_test:
        warnings.warn(f"{model_name} scores the test images against each other (transductive): a threshold from "
                      "other images would not transfer, so the model is saved uncalibrated; --calibrate-on-test "
                      "sets one from the test split", stacklevel=2)
    elif not calibrate_on_test:
        warnings.warn("no validation images (fewer than 20 training images and no --val): the model is saved "
                      "uncalibrated; give --val PATH or --val-ratio, or --calibrate-on-test", stacklevel=2)
    facts = {"n_train": len(sets.train) if model.requires_fit else 0,
             "n_val": 0 if sets.val is None else len(sets.val),
             "fit_seconds": fit_seconds, "skipped_images": [str(p) for p in sets.skipped]}
    if sets.test is None:
        warnings.warn("the test split is empty: the model is trained and saved, but not evaluated", stacklevel=2)
        model.save(out / MODEL_FILE)
        metrics = {"n_test": 0, **facts, **_run_info(model, data, layout, layout_options)}
        write_json(out / METRICS_FILE, metrics)
        return metrics
    evaluation = evaluate(model, sets.test, batch_size=batch_size, progress=progress, calibrate=calibrate_on_test,
                          run_info=_run_info(model, data, layout, layout_options))
    model.save(out / MODEL_FILE)
    # Run facts are read after calibration, so metrics.json carries the thresholds the model was saved with.
    metrics = save_evaluation(out, evaluation, {**facts, **_run_info(model, data, layout, layout_options)})
    write_overlays(out / "overlays", model, sets.test, evaluation, overlays)
    return metrics


def test(*, model_path: str | Path, data: str | Path | None, layout: str, out: str | Path,
         layout_options: dict[str, Any] | None = None, batch_size: int | None = None, overlays: int = 8,
         skip_bad_images: bool = False, progress: bool | None = None, device: str = "cpu") -> dict[str, Any]:
    """Evaluate a saved model on a layout's test split; writes ``out/metrics.json``."""
    from vadkit.data import ImageDataset, load_split
    from vadkit.models import load_model

    model = load_model(model_path).to(device)
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
    "n_train", "n_val", "fit_seconds", "predict_ms_per_image", "skipped_images", "model_file", "model", "backbone",
    "params", "threshold", "threshold_rule", "threshold_source", "pixel_threshold", "pixel_threshold_rule", "data",
    "layout", "layout_options", "vadkit_version", "zero_shot", "transductive",
})


def _run_info(model, data, layout: str, layout_options: dict[str, Any] | None) -> dict[str, Any]:
    """The metrics.json keys that say what ran: model, parameters, threshold, data, vadkit version."""
    from vadkit import __version__

    return {
        "model": model.name,
        "backbone": model.backbone,
        # zero-shot: no training image used; transductive: the test images were scored against each other
        "zero_shot": not model.requires_fit,
        "transductive": model.transductive,
        "params": model.get_params(),
        **_threshold_facts(model),
        "data": None if data is None else str(Path(data).resolve()),
        "layout": layout,
        "layout_options": layout_options or {},
        "vadkit_version": __version__,
    }


def predict(*, model_path: str | Path, inputs: Sequence[str | Path], out: str | Path,
            batch_size: int | None = None, overlays: bool = True, skip_bad_images: bool = False,
            progress: bool | None = None, recursive: bool = True, full_resolution: bool = False,
            save_maps: bool = False, device: str = "cpu") -> Path:
    """Score images (files, or folders of images and their subfolders); writes ``out/predictions.jsonl``.

    One JSON line per image, in input order (a folder's images sorted by their path in it):
    ``{"path": the image's path relative to the folder it was found in (as given for a file), "file":
    absolute path, "score": float, "label": 0/1 or null when the model is not calibrated, "overlay": PNG path
    or null, "map": .npy path or null}``. With ``skip_bad_images``, an unreadable file gets a line too, with
    ``"skipped": reason`` and null score and label, so no input disappears silently.

    ``recursive=False`` takes a folder's own images only. ``full_resolution`` draws overlays and saves maps
    at each image's original size (the map resized back, see :meth:`Transform.map_to_original`) instead of
    the model's input size. ``save_maps`` writes each map as ``out/maps/NNNNN_<stem>.npy`` (float32).
    Overlays tint the pixels above the model's pixel threshold, in images it judges anomalous only.
    """
    from vadkit.data import ImageDataset, Sample, load_image
    from vadkit.models import load_model
    from vadkit.progress import track

    model = load_model(model_path).to(device)
    found = expand_inputs(inputs, recursive=recursive)
    dataset = ImageDataset([Sample(file) for file, _ in found], model.transform, skip_bad_images=skip_bad_images)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kept = iter(range(len(dataset)))
    predictions = (line for part in model.predict_batches(dataset, batch_size=batch_size)
                   for line in zip(part.scores, part.maps, _labels(part)))
    lines = []
    progress_lines = track(predictions, "predicting", total=len(dataset), enabled=progress)
    for position, (file, shown) in enumerate(found):
        line = {"path": shown, "file": str(Path(file).resolve())}
        if Path(file) in dataset.skip_reasons:
            lines.append({**line, "score": None, "label": None, "overlay": None, "map": None,
                          "skipped": dataset.skip_reasons[Path(file)]})
            continue
        index = next(kept)
        score, anomaly_map, label = next(progress_lines)
        image = None
        if full_resolution:
            image = np.asarray(load_image(file))
            anomaly_map = model.transform.map_to_original(anomaly_map, image.shape[:2])
        name = f"{position:05d}_{Path(file).stem}"
        map_path = overlay = None
        if save_maps:
            map_path = out / "maps" / f"{name}.npy"
            map_path.parent.mkdir(parents=True, exist_ok=True)
            np.save(map_path, anomaly_map.astype(np.float32))
        if overlays:
            if image is None and dataset.transform.pads:  # the map lies on the whole image, not the padded view
                image = dataset.transform.evaluation_view().display_array(load_image(file))
            elif image is None:
                image = dataset.transform.denormalise(dataset[index]["image"])
            finite = anomaly_map[np.isfinite(anomaly_map)]
            pixel_threshold = model.pixel_threshold if label == 1 else None
            overlay = _save(out / "overlays" / f"{name}.png", image, anomaly_map, float(finite.min()),
                            float(finite.max()), pixel_threshold, f"score {score:.3f}")
        lines.append({**line, "score": float(score), "label": None if label is None else int(label),
                      "overlay": None if overlay is None else str(overlay.resolve()),
                      "map": None if map_path is None else str(map_path.resolve())})
    target = out / PREDICTIONS_FILE
    target.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return target


def _labels(part):
    return part.labels if part.labels is not None else [None] * len(part.scores)


def expand_inputs(inputs: Sequence[str | Path], *, recursive: bool = True) -> list[tuple[Path, str]]:
    """``(file, shown path)`` of every image to score: files as given; folders expanded to their images
    (and their subfolders' with ``recursive``), sorted by path, shown relative to the folder. A missing path,
    or a folder with no image, is a DataError."""
    from vadkit.data import list_images
    from vadkit.errors import DataError

    found: list[tuple[Path, str]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            images = list_images(path, recursive=recursive)
            if not images:
                hint = "" if recursive else " (its subfolders were not searched: --no-recursive)"
                raise DataError(f"no images in folder {path}{hint} (looked for png/jpg/bmp/tif/webp files)")
            found.extend((image, image.relative_to(path).as_posix()) for image in images)
        elif path.is_file():
            found.append((path, str(item)))
        else:
            raise DataError(f"input not found: {path} (give image files or folders of images)")
    return found


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
