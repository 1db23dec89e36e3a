"""``vadkit report RUN_DIR``: one self-contained ``report.html`` for a test run, from its saved predictions.

The report is built from ``predictions.npz`` (scores, maps, masks) and the images it references; the model
is not needed. It holds the summary with bootstrap intervals, the thresholded and operating-point tables,
ROC / PR / PRO / PIMO curves, score histograms, per-defect bars and table, and an image gallery.

Gallery selection (a report with every image of a large test set would weigh hundreds of MB): every
misclassified image first (false positives and false negatives at the calibrated threshold, the ones a user
must look at), then images spread evenly over the score ranking, up to ``gallery_size``. Tiles are drawn
at most ``GALLERY_TILE`` pixels high to keep the file small; the heatmap colour scale is shared by all tiles.
Images that cannot be read any more (moved dataset) are left out of the gallery with a note in the report.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from vadkit.runs.evaluation import evaluate_record
from vadkit.runs.record import PredictionRecord, load_record

__all__ = ["GALLERY_TILE", "REPORT_FILE", "report_run", "select_gallery"]

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
GALLERY_TILE = 192


def report_run(run_dir: str | Path, *, gallery_size: int = 120, n_resamples: int = 1000, seed: int = 0) -> Path:
    """Write ``RUN_DIR/report.html`` (and the plots it embeds under ``RUN_DIR/plots/``); returns its path."""
    from vadkit.report.html import write_report

    run_dir = Path(run_dir)
    record = load_record(run_dir)
    evaluation = evaluate_record(record, n_resamples=n_resamples, seed=seed, keep_curves=True)
    notes = _notes(record, evaluation)
    gallery, missing = _gallery(record, evaluation, gallery_size)
    if missing:
        notes.append(f"{len(missing)} image(s) could not be read and are not in the gallery, e.g. {missing[0]}")
    meta = record.meta
    return write_report(
        run_dir / REPORT_FILE,
        title=f"{meta.get('model', 'model')} on {meta.get('data') or meta.get('layout', 'data')}",
        summary=_summary(record, evaluation),
        intervals=evaluation.intervals,
        per_defect=evaluation.per_defect,
        threshold_table=_threshold_table(record, evaluation),
        plots=_plots(run_dir / PLOTS_DIR, record, evaluation),
        gallery=gallery,
        notes=notes,
    )


def _summary(record: PredictionRecord, evaluation) -> dict[str, Any]:
    meta = record.meta
    facts = {"model": meta.get("model"), "backbone": meta.get("backbone"), "data": meta.get("data"),
             "layout": meta.get("layout"), "test images": len(record),
             "anomalous images": int(record.labels.sum()), "threshold": record.threshold,
             "threshold rule": meta.get("threshold_rule"), "threshold source": meta.get("threshold_source"),
             "pixel threshold": record.pixel_threshold, "pixel threshold rule": meta.get("pixel_threshold_rule"),
             "vadkit": meta.get("vadkit_version"),
             "report written": _dt.datetime.now().isoformat(timespec="seconds")}
    metric_keys = [k for k, v in evaluation.metrics.items() if isinstance(v, (int, float)) and k != "n_test"]
    return {**{k: v for k, v in facts.items() if v is not None}, **{k: evaluation.metrics[k] for k in metric_keys}}


def _threshold_table(record: PredictionRecord, evaluation) -> list[dict[str, Any]]:
    rows = []
    metrics = evaluation.metrics
    if "image_precision" in metrics:
        rows.append({"operating point": "calibrated threshold", "threshold": record.threshold,
                     "recall": metrics.get("image_recall"), "fpr": metrics.get("image_fpr"),
                     "miss_rate": metrics.get("image_miss_rate"), "precision": metrics.get("image_precision")})
    for point in evaluation.operating_points:
        label = ("FPR <= " if point["target"] == "max_fpr" else "recall >= ") + f"{point['value']:g}"
        rows.append({"operating point": label, **{k: v for k, v in point.items() if k not in ("target", "value")}})
    return rows


def _notes(record: PredictionRecord, evaluation) -> list[str]:
    notes = [f"{name}: not computed ({reason})" for name, reason in evaluation.metrics.get("skipped_metrics",
                                                                                            {}).items()]
    if record.meta.get("threshold_source") == "test" or "the test split" in (record.meta.get("threshold_rule") or ""):
        notes.append("The threshold was calibrated on this test set (MVTec convention): thresholded figures are "
                     "optimistic; calibrate on held-out images for production.")
    info = evaluation.interval_info
    if info:
        notes.append(f"Intervals: {info['confidence']:.0%} percentile bootstrap over images, "
                     f"{info['n_resamples']} resamples, seed {info['seed']}; pixel-metric intervals use "
                     "per-image histograms (binned).")
    if record.meta.get("transductive"):
        notes.append(f"{record.meta.get('model')} is transductive: the {len(record)} test images were scored "
                     "against each other in one set, without training images; each score depends on the set it was "
                     "computed in.")
    notes.append("Per-defect metrics use all normal images plus the images of that defect type.")
    aupimo_note = _aupimo_note(evaluation)
    if aupimo_note:
        notes.append(aupimo_note)
    return notes


def _aupimo_note(evaluation) -> str | None:
    """Which AUPIMO was computed: the reference's (the published numbers) or the exact one, and over what range."""
    pimo = evaluation.report.aupimo
    if pimo is None:
        return None  # not computed: the skip reason is already a note
    low, high = pimo.fpr_bounds
    if pimo.method == "reference":
        achieved_low, achieved_high = pimo.achieved_fpr_bounds
        return (f"AUPIMO (Bertoldo et al., BMVC 2024) as the reference code computes it (method 'reference', the "
                f"numbers papers report): a grid of 300,000 thresholds from the lowest to the highest normal-image "
                f"score, integrated between the grid points whose shared FPR is nearest {low:g} and {high:g}, i.e. "
                f"over shared FPR [{achieved_low:.3g}, {achieved_high:.3g}] ({pimo.n_points} grid points). The PIMO "
                "plot shows the exact curves.")
    return (f"AUPIMO (Bertoldo et al., BMVC 2024) computed exactly (method 'exact'): the exact per-image curves "
            f"integrated over shared FPR [{low:g}, {high:g}]. Papers report the reference code's grid-based values, "
            "which integrate between the achievable FPRs nearest the bounds instead (vadkit.metrics.pimo).")


def _plots(folder: Path, record: PredictionRecord, evaluation) -> dict[str, Path]:
    from vadkit.report import plots

    folder.mkdir(parents=True, exist_ok=True)
    curves = evaluation.report.curves
    metrics = evaluation.metrics
    made: dict[str, Path] = {}
    if "image_roc" in curves:
        made["Image ROC"] = plots.plot_roc(*curves["image_roc"], metrics["image_auroc"], folder / "image_roc.png")
        made["Image PR"] = plots.plot_pr(*curves["image_pr"], metrics["image_aupr"], folder / "image_pr.png",
                                         baseline=float(record.labels.mean()))
    if "pixel_roc" in curves:
        made["Pixel ROC"] = plots.plot_roc(*curves["pixel_roc"], metrics["pixel_auroc"],
                                           folder / "pixel_roc.png", title="Pixel ROC")
    if "pro" in curves and "pixel_aupro" in metrics:
        from vadkit.metrics import registry

        made["PRO"] = plots.plot_pro(*curves["pro"], metrics["pixel_aupro"], registry.get("pixel_aupro").fpr_limit,
                                     folder / "pro.png")
    pimo = evaluation.report.aupimo
    if pimo is not None:
        from vadkit.metrics import pimo_curves

        shared = pimo_curves(record.masks, record.maps, fpr_bounds=tuple(pimo.fpr_bounds))
        anomalous = shared.image_classes == 1
        made["PIMO"] = plots.plot_pimo(shared.shared_fpr, shared.per_image_tpr[anomalous], pimo.fpr_bounds,
                                       folder / "pimo.png", aupimo_mean=pimo.mean)
    made["Scores"] = plots.plot_score_histogram(record.scores, record.labels, record.threshold,
                                                folder / "scores.png")
    if evaluation.per_defect:
        metric = "image_auroc" if any("image_auroc" in v for v in evaluation.per_defect.values()) else None
        if metric:
            made["Per defect"] = plots.plot_per_defect(evaluation.per_defect, metric, folder / "per_defect.png")
    return made


def select_gallery(labels: np.ndarray, scores: np.ndarray, threshold: float | None, size: int) -> np.ndarray:
    """Indices for the gallery: misclassified images first (by score), then the rest spread over the ranking."""
    if size <= 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    chosen: list[int] = []
    if threshold is not None:
        predicted = scores.astype(np.float64) >= threshold
        wrong = order[predicted[order] != labels[order].astype(bool)]
        chosen = wrong[:size].tolist()
    rest = np.array([i for i in order if i not in set(chosen)], dtype=np.int64)
    room = size - len(chosen)
    if room > 0 and len(rest):
        picks = np.unique(np.linspace(0, len(rest) - 1, min(room, len(rest))).round().astype(np.int64))
        chosen += rest[picks].tolist()
    return np.array(chosen, dtype=np.int64)


def _gallery(record: PredictionRecord, evaluation, size: int):
    from PIL import Image

    from vadkit.data import Transform, load_image
    from vadkit.report.gallery import GalleryItem, gallery_panel

    transform = Transform(**record.meta["transform"])
    indices = select_gallery(record.labels, record.scores, record.threshold, size)
    flagged = record.flagged()
    maps = record.maps
    vmin, vmax = float(maps.min()), float(maps.max())
    aupimo = {row["path"]: row["aupimo"] for row in evaluation.per_image}
    items, missing = [], []
    for index in indices.tolist():
        path = record.paths[index]
        try:
            picture = transform.evaluation_view().display_array(load_image(path))  # the grid maps lie on
        except Exception:  # moved or deleted since the test run: the report still renders the rest
            missing.append(path)
            continue
        anomaly_map = maps[index].astype(np.float32)
        mask = record.masks[index] if record.masks is not None else None
        picture, anomaly_map, mask = _shrink(picture, anomaly_map, mask, GALLERY_TILE, Image)
        predicted = None if flagged is None else int(flagged[index])
        # records written before issue 11 have no pixel threshold: the image threshold was used for pixels
        pixel_threshold = record.pixel_threshold if record.pixel_threshold is not None else record.threshold
        items.append(GalleryItem(
            name=Path(path).name, defect_type=record.defect_types[index], label=int(record.labels[index]),
            predicted=predicted, score=float(record.scores[index]), aupimo=aupimo.get(path),
            png=gallery_panel(picture, anomaly_map, mask, pixel_threshold, vmin, vmax, flagged=bool(predicted)),
        ))
    return items, missing


def _shrink(picture: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray | None, height: int, Image):
    """Downscale image (bilinear), map (bilinear) and mask (nearest) together to at most ``height`` rows."""
    h, w = anomaly_map.shape
    if h <= height:
        return picture, anomaly_map, mask
    size = (max(1, round(w * height / h)), height)
    picture = np.asarray(Image.fromarray(picture).resize(size, Image.BILINEAR))
    anomaly_map = np.asarray(Image.fromarray(anomaly_map, mode="F").resize(size, Image.BILINEAR))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    return picture, anomaly_map, mask
