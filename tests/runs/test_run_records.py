"""Raw predictions (predictions.npz) and the evaluation built from them: save/load, recompute, compare."""

from __future__ import annotations

import csv
import json
import zipfile

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from vadkit.errors import DataError
from vadkit.runs import PredictionRecord, evaluate_record, load_record
from vadkit.runs.recompute import compare_runs, eval_run
from vadkit.runs.record import FORMAT_VERSION
from vadkit.runs.reporting import select_gallery


def make_record(seed: int = 0, n_normal: int = 12, n_per_defect: int = 6, size: int = 32, quality: float = 1.0,
                threshold: float | None = 0.5, pixel_threshold: float | None = None) -> PredictionRecord:
    """Two defect types; maps light up inside the mask with strength ``quality`` plus noise. The pixel
    threshold defaults to the image threshold."""
    rng = np.random.default_rng(seed)
    n = n_normal + 2 * n_per_defect
    labels = np.array([0] * n_normal + [1] * (2 * n_per_defect), dtype=np.int8)
    defects = ["good"] * n_normal + ["crack"] * n_per_defect + ["scratch"] * n_per_defect
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n_normal, n):
        top, left = rng.integers(0, size - 8, 2)
        masks[i, top:top + 8, left:left + 8] = True
    maps = rng.normal(0, 0.3, masks.shape) + quality * masks
    scores = maps.reshape(n, -1).max(axis=1)
    return PredictionRecord(
        scores=scores.astype(np.float32), labels=labels, maps=maps.astype(np.float16), masks=masks,
        paths=[f"/data/img_{i:03d}.png" for i in range(n)], defect_types=defects,
        mask_paths=["" if label == 0 else f"/data/mask_{i:03d}.png" for i, label in enumerate(labels)],
        meta={"format_version": FORMAT_VERSION, "model": "patchcore", "threshold": threshold,
              "pixel_threshold": threshold if pixel_threshold is None else pixel_threshold,
              "threshold_rule": "given", "transform": {"image_size": size}},
    )


def test_record_round_trips_through_npz(tmp_path):
    record = make_record().with_aupimo(np.linspace(0, 1, 24))
    record.save(tmp_path)
    loaded = load_record(tmp_path)
    assert np.array_equal(loaded.scores, record.scores) and np.array_equal(loaded.labels, record.labels)
    assert loaded.maps.dtype == np.float16 and np.array_equal(loaded.maps, record.maps)
    assert np.array_equal(loaded.masks, record.masks)  # bit-packed, unpacked to the exact width
    assert loaded.paths == record.paths and loaded.defect_types == record.defect_types
    assert loaded.mask_paths == record.mask_paths and loaded.meta == record.meta
    assert np.allclose(loaded.aupimo, record.aupimo)


def test_masks_of_a_width_not_divisible_by_8_survive_packing(tmp_path):
    record = make_record(size=30)
    record.save(tmp_path)
    assert np.array_equal(load_record(tmp_path).masks, record.masks)


def test_maps_beyond_float16_range_are_stored_as_float32():
    from vadkit.runs.record import _storable_maps

    assert _storable_maps(np.array([[1.0, 7e4]])).dtype == np.float32
    assert _storable_maps(np.array([[1.0, 6e4]])).dtype == np.float16


def test_a_missing_or_damaged_file_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="vadkit test"):
        load_record(tmp_path)
    (tmp_path / "predictions.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable vadkit predictions file"):
        load_record(tmp_path)


def test_a_future_format_is_refused(tmp_path):
    record = make_record()
    record.save(tmp_path)
    path = tmp_path / "predictions.npz"
    with np.load(path) as stored:
        arrays = {name: stored[name] for name in stored.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "format_version": FORMAT_VERSION + 1}))
    np.savez_compressed(path, **arrays)
    with pytest.raises(DataError, match="prediction format"):
        load_record(tmp_path)
    assert zipfile.is_zipfile(path)


def test_record_rejects_mismatched_lengths():
    record = make_record()
    with pytest.raises(ValueError, match="one entry per image"):
        PredictionRecord(scores=record.scores, labels=record.labels[:-1], maps=record.maps, masks=record.masks,
                         paths=record.paths, defect_types=record.defect_types, mask_paths=record.mask_paths)


def test_per_defect_metrics_use_normals_plus_that_defect():
    record = make_record(quality=0.6)
    evaluation = evaluate_record(record, intervals=False)
    for defect in ("crack", "scratch"):
        keep = [d in ("good", defect) for d in record.defect_types]
        expected = roc_auc_score(record.labels[keep], record.scores[keep])
        assert evaluation.per_defect[defect]["image_auroc"] == pytest.approx(expected, abs=1e-12)
    assert set(evaluation.per_defect) == {"crack", "scratch"}


def test_thresholded_metrics_match_a_direct_count():
    record = make_record(quality=0.6, threshold=1.0, pixel_threshold=0.7)
    metrics = evaluate_record(record, intervals=False).metrics
    predicted = record.scores >= 1.0
    truth = record.labels.astype(bool)
    tp, fp = int((predicted & truth).sum()), int((predicted & ~truth).sum())
    assert metrics["image_recall"] == pytest.approx(tp / truth.sum())
    assert metrics["image_fpr"] == pytest.approx(fp / (~truth).sum())
    assert metrics["image_miss_rate"] == pytest.approx(1 - tp / truth.sum())
    # a pixel is predicted defective when it reaches the pixel threshold in an image judged anomalous
    pixel_pred = (record.maps >= np.float16(0.7)) & predicted[:, None, None]
    assert 0 < metrics["pixel_recall"] == pytest.approx((pixel_pred & record.masks).sum() / record.masks.sum())
    assert metrics["pixel_fpr"] == pytest.approx((pixel_pred & ~record.masks).sum() / (~record.masks).sum())
    ungated = ((record.maps >= np.float16(0.7)) & ~record.masks).sum() / (~record.masks).sum()
    assert metrics["pixel_fpr"] < ungated  # images judged normal contribute no false alarm pixel


def test_an_uncalibrated_record_has_no_thresholded_metrics_or_predicted_labels():
    evaluation = evaluate_record(make_record(threshold=None), intervals=False)
    assert "image_precision" not in evaluation.metrics
    assert all(row["predicted"] is None for row in evaluation.per_image)


def test_per_image_rows_hold_scores_labels_and_pixel_scores():
    record = make_record(threshold=0.8)
    rows = evaluate_record(record, intervals=False).per_image
    assert [row["score"] for row in rows] == pytest.approx(record.scores.tolist())
    anomalous = rows[-1]
    predicted = record.maps[-1] >= np.float16(0.8)
    truth = record.masks[-1]
    assert anomalous["pixel_recall"] == pytest.approx((predicted & truth).sum() / truth.sum())
    assert rows[0]["aupimo"] is None  # a normal image has no AUPIMO


def test_eval_run_reproduces_and_keeps_run_facts(tmp_path):
    record = make_record(quality=0.8)
    evaluation = evaluate_record(record)
    record.with_aupimo(evaluation.report.aupimo.per_image if evaluation.report.aupimo else
                       np.full(len(record), np.nan)).save(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"fit_seconds": 3.5, "image_auroc": 0.1,
                                                        "stale_metric": 1.0}))
    metrics = eval_run(tmp_path)
    assert metrics["fit_seconds"] == 3.5  # a run fact is kept
    assert "stale_metric" not in metrics  # an old metric key does not linger
    assert metrics["image_auroc"] == evaluation.metrics["image_auroc"]
    assert metrics["intervals"]["image_auroc"] == list(evaluation.intervals["image_auroc"])
    with open(tmp_path / "per_image.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(record) and rows[0]["aupimo"] == ""


def test_compare_detects_a_better_run_and_refuses_other_test_sets(tmp_path):
    make_record(seed=1, quality=0.3).save(tmp_path / "a")
    make_record(seed=1, quality=3.0).save(tmp_path / "b")
    comparison = compare_runs(tmp_path / "a", tmp_path / "b", n_resamples=300, out=tmp_path)
    row = comparison.rows["image_auroc"]
    assert row["difference"] > 0 and row["ci_low"] <= row["difference"] <= row["ci_high"]
    assert "delong_image_auroc" in comparison.tests
    assert json.loads((tmp_path / "compare.json").read_text())["rows"]["image_auroc"]["b"] == row["b"]
    other = make_record(seed=1, n_normal=11)
    other.save(tmp_path / "c")
    with pytest.raises(DataError, match="different images"):
        compare_runs(tmp_path / "a", tmp_path / "c")


def test_gallery_selection_puts_errors_first_and_spreads_the_rest():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.9, 0.3, 0.8, 0.2, 0.7, 0.95])
    chosen = select_gallery(labels, scores, threshold=0.5, size=4)
    assert chosen[:2].tolist() == [2, 5]  # the false positive (0.9) then the false negative (0.2)
    assert len(chosen) == 4 and len(set(chosen.tolist())) == 4
    assert select_gallery(labels, scores, threshold=None, size=100).tolist() == np.argsort(-scores,
                                                                                            kind="stable").tolist()
    assert len(select_gallery(labels, scores, 0.5, 0)) == 0


def test_every_metric_key_a_run_writes_is_registered_and_aupimo_says_how_it_was_computed():
    from vadkit.metrics import registry

    record = make_record(n_normal=40, size=64, threshold=0.5)  # 163,840 normal pixels: AUPIMO is defined
    evaluation = evaluate_record(record, n_resamples=50)
    metrics = evaluation.metrics
    assert metrics["aupimo_method"] == "reference" and metrics["aupimo_fpr_bounds"] == [1e-5, 1e-4]
    assert evaluation.report.aupimo.method == "reference" and "aupimo_mean" in evaluation.intervals
    settings = {"n_test", "aupimo_fpr_bounds", "aupimo_method", "skipped_metrics"}
    assert set(metrics) - settings <= set(registry.keys())
    assert {"image_precision", "pixel_miss_rate"} <= set(metrics)  # the thresholded ones are registered too
    assert set(evaluation.intervals) == {m for m in registry.keys(bootstrap=("images", "pixel_histogram",
                                                                             "per_image_mean")) if m in metrics}
    # The exact curve of these float16 maps has 30 or fewer distinct FPR levels in [1e-5, 1e-4]: "exact" refuses
    # (as the reference does for 30 grid points or fewer); the reference's grid has thousands of points here.
    exact = evaluate_record(record, intervals=False, aupimo_method="exact")
    assert exact.metrics["aupimo_method"] == "exact" and exact.report.aupimo is None
    assert "distinct shared-FPR levels" in exact.metrics["skipped_metrics"]["aupimo_mean"]
    assert evaluation.report.aupimo.n_points > 1000


def test_eval_and_compare_take_a_newly_registered_metric(tmp_path):
    from vadkit.metrics import Metric, registry

    aupro_01 = Metric("pixel_aupro_01", "Pixel AU-PRO (FPR ≤ 0.1)", "region", True, "masks", "aupro",
                      fpr_limit=0.1, bootstrap="pixel_histogram", compare="unpaired", summary=True)
    make_record(seed=1, quality=0.3).save(tmp_path / "a")
    make_record(seed=1, quality=3.0).save(tmp_path / "b")
    with registry.registered(aupro_01):
        metrics = eval_run(tmp_path / "a", n_resamples=100)
        comparison = compare_runs(tmp_path / "a", tmp_path / "b", n_resamples=100)
    assert "pixel_aupro_01" in metrics and "pixel_aupro_01" in metrics["intervals"]
    assert "pixel_aupro_01" in metrics["per_defect"]["crack"]
    row = comparison.rows["pixel_aupro_01"]
    assert row["difference"] > 0 and row["a_interval"] is not None and "ci_low" not in row  # unpaired
    assert "pixel_aupro_01" not in eval_run(tmp_path / "a", intervals=False)  # unregistered: gone


def test_report_notes_say_which_aupimo_was_computed():
    from vadkit.runs.reporting import _notes

    record = make_record(n_normal=40, size=64)
    reference = evaluate_record(record, intervals=False)
    note = next(n for n in _notes(record, reference) if n.startswith("AUPIMO"))
    low, high = reference.report.aupimo.achieved_fpr_bounds
    assert "method 'reference'" in note and "300,000 thresholds" in note and f"[{low:.3g}, {high:.3g}]" in note
    forced = evaluate_record(make_record(n_normal=40, size=64, seed=3), intervals=False, aupimo_method="exact",
                             fpr_bounds=(1e-3, 1e-2))
    note = next(n for n in _notes(record, forced) if n.startswith("AUPIMO"))
    assert "method 'exact'" in note and "[0.001, 0.01]" in note
    skipped = evaluate_record(make_record(), intervals=False)  # 12 normal images of 32 x 32: too few pixels
    assert not any(n.startswith("AUPIMO") for n in _notes(record, skipped))
    assert any(n.startswith("aupimo_mean: not computed") for n in _notes(record, skipped))
