"""compute_metrics: which keys are present, which are skipped with a reason, and that values are the metrics'."""

import numpy as np
import pytest

from vadkit.metrics import (
    CURVE_POINTS,
    IMAGE_METRICS,
    PIXEL_METRICS,
    MetricsReport,
    aupimo,
    aupro,
    auroc,
    compute_metrics,
    f1_max,
    pixel_aupr,
)


@pytest.fixture
def evaluation():
    rng = np.random.default_rng(0)
    masks = np.zeros((6, 16, 16), dtype=bool)
    masks[3, 2:6, 2:6] = masks[4, 8:12, 1:3] = masks[5, 0, 0] = True
    labels = masks.any(axis=(1, 2))
    maps = (rng.random(masks.shape) + masks * rng.random()).astype(np.float32)
    scores = maps.max(axis=(1, 2))
    return labels, scores, masks, maps


def test_image_keys_only_without_masks(evaluation):
    labels, scores, _, maps = evaluation
    report = compute_metrics(labels, scores, maps=maps)  # maps without masks: no pixel metric
    assert set(report.values) == set(IMAGE_METRICS)
    assert report.skipped == {}


def test_all_keys_with_masks_and_values_equal_the_metric_functions(evaluation):
    labels, scores, masks, maps = evaluation
    report = compute_metrics(labels, scores, masks, maps)
    values = report.as_dict()
    # 3 normal images of 16x16 pixels cannot resolve an FPR of 1e-5: AUPIMO is skipped, saying why
    assert set(values) == set(IMAGE_METRICS) | set(PIXEL_METRICS) - {"aupimo_mean"}
    assert "normal pixels" in report.skipped["aupimo_mean"]
    assert all(type(v) is float for v in values.values())
    assert values["image_auroc"] == auroc(labels, scores)
    assert values["image_f1_max"] == f1_max(labels, scores)
    assert values["pixel_aupr"] == pixel_aupr(masks, maps)
    assert values["pixel_aupro"] == aupro(masks, maps, fpr_limit=0.3)
    assert values["pixel_aupro_005"] == aupro(masks, maps, fpr_limit=0.05)


def test_aupimo_mean_and_count_are_the_aupimo_result_when_the_normal_images_allow_it():
    rng = np.random.default_rng(1)
    masks = np.zeros((16, 256, 256), dtype=bool)  # 12 normal images: ~70 FPR levels in [1e-5, 1e-4]
    for i in range(12, 16):
        masks[i, 10 * i:10 * i + 30, 20:60] = True
    maps = rng.normal(size=masks.shape).astype(np.float32) + 3.5 * masks
    labels = masks.any(axis=(1, 2))
    report = compute_metrics(labels, maps.max(axis=(1, 2)), masks, maps)
    expected = aupimo(masks, maps)
    assert report.values["aupimo_mean"] == expected.mean and report.values["aupimo_count"] == 4
    assert np.array_equal(report.aupimo.per_image, expected.per_image, equal_nan=True)
    assert 0.0 < report.values["aupimo_mean"] < 1.0


def test_kept_curves_are_thinned_and_end_where_the_curves_end(evaluation):
    from sklearn.metrics import roc_curve

    labels, scores, masks, maps = evaluation
    report = compute_metrics(labels, scores, masks, maps, keep_curves=True)
    fpr, tpr = report.curves["image_roc"]
    expected_fpr, expected_tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert np.allclose(fpr, expected_fpr) and np.allclose(tpr, expected_tpr)
    pixel_fpr, pixel_tpr = report.curves["pixel_roc"]
    assert len(pixel_fpr) <= CURVE_POINTS and pixel_fpr[-1] == pixel_tpr[-1] == 1.0
    assert report.curves["pro"][0][0] == 0.0 and set(report.curves) == {"image_roc", "image_pr", "pixel_roc",
                                                                         "pixel_pr", "pro"}
    assert compute_metrics(labels, scores).curves == {}  # only on request


def test_as_dict_is_a_copy(evaluation):
    report = compute_metrics(*evaluation[:2])
    report.as_dict()["image_auroc"] = -1.0
    assert report.values["image_auroc"] != -1.0


def test_single_class_images_are_skipped_with_the_reason_but_pixel_metrics_remain(evaluation):
    _, scores, masks, maps = evaluation
    only_defective = slice(3, 6)
    report = compute_metrics(np.ones(3, bool), scores[only_defective], masks[only_defective], maps[only_defective])
    # AUPIMO's false positive rate is measured on normal *images* only, so it goes with the image metrics
    assert set(report.values) == set(PIXEL_METRICS) - {"aupimo_mean"}
    assert set(report.skipped) == set(IMAGE_METRICS) | {"aupimo_mean"}
    assert all("no normal" in reason for reason in report.skipped.values())


def test_masks_without_defects_skip_every_pixel_metric(evaluation):
    labels, scores, masks, maps = evaluation
    report = compute_metrics(labels, scores, np.zeros_like(masks), maps)
    assert set(report.values) == set(IMAGE_METRICS)
    assert set(report.skipped) == set(PIXEL_METRICS)
    assert "no anomalous" in report.skipped["pixel_aupro"]


def test_invalid_input_raises_instead_of_being_skipped(evaluation):
    labels, scores, masks, maps = evaluation
    bad_scores = scores.copy()
    bad_scores[0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(labels, bad_scores)
    with pytest.raises(ValueError, match="without maps"):
        compute_metrics(labels, scores, masks)
    with pytest.raises(ValueError, match="shape"):
        compute_metrics(labels, scores, masks, maps[:, :8])


def test_report_type():
    report = compute_metrics([0, 1], [0.2, 0.8])
    assert isinstance(report, MetricsReport)
    assert report.as_dict() == {"image_auroc": 1.0, "image_aupr": 1.0, "image_f1_max": 1.0}
