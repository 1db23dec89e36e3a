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


def test_masks_for_another_number_of_images_than_the_labels_raise(evaluation):
    labels, scores, masks, maps = evaluation  # 6 images
    with pytest.raises(ValueError, match="labels and scores describe 6 images but masks describe 5"):
        compute_metrics(labels, scores, masks[:5], maps[:5])
    with pytest.raises(ValueError, match="labels and scores describe 3 images but masks describe 2"):
        compute_metrics(labels[:3], scores[:3], masks[:2], maps[:2])
    with pytest.raises(ValueError, match="labels and scores describe 6 images but maps describe 7"):
        compute_metrics(labels, scores, loco_regions=[], maps=np.concatenate([maps, maps[:1]]))
    with pytest.raises(ValueError, match="3 items but scores has 2"):  # labels vs scores: checked before
        compute_metrics(labels[:3], scores[:2], masks[:2], maps[:2])
    # A single (H, W) mask is one image.
    one = compute_metrics(labels[3:4], scores[3:4], masks[3], maps[3])
    assert one.values["pixel_aupr"] == pixel_aupr(masks[3], maps[3])
    with pytest.raises(ValueError, match="describe 2 images but masks describe 1"):
        compute_metrics(labels[2:4], scores[2:4], masks[3], maps[3])


def loco_case():
    """Two good and three anomalous 24 x 24 images; LOCO-style regions, one of them logical (saturated at 40%)."""
    from vadkit.metrics import LocoRegion

    rng = np.random.default_rng(4)
    maps = rng.normal(size=(5, 24, 24))
    per_image = [[], []]
    for i in range(2, 5):
        regions = []
        for top, left, saturation in ((2 * i, 3, None), (12, 2 * i, 0.4)):
            mask = np.zeros((24, 24), dtype=bool)
            mask[top : top + 5, left : left + 6] = True
            maps[i][mask] += rng.uniform(0.5, 2.5)
            area = int(mask.sum())
            regions.append(LocoRegion(mask, float(area if saturation is None else int(saturation * area)), "d"))
        per_image.append(regions)
    labels = np.array([0, 0, 1, 1, 1])
    return labels, maps.max(axis=(1, 2)), maps, per_image


def test_loco_regions_add_auspro_at_the_loco_papers_fpr_limit():
    from vadkit.metrics import SaturatedRegion, auspro

    labels, scores, maps, per_image = loco_case()
    report = compute_metrics(labels, scores, maps=maps, loco_regions=per_image)
    flat = [SaturatedRegion(i, r.mask, r.saturation) for i, regions in enumerate(per_image) for r in regions]
    expected = auspro(flat, maps, fpr_limit=0.05)
    assert report.values["pixel_auspro"] == expected and 0.05 < expected < 0.95
    assert set(report.values) == set(IMAGE_METRICS) | {"pixel_auspro"}  # no masks: no other pixel metric
    # The flat form gives the same; the value differs from the 0.3 limit, so the limit is the registered 0.05.
    assert compute_metrics(labels, scores, maps=maps, loco_regions=flat).values["pixel_auspro"] == expected
    assert expected != auspro(flat, maps, fpr_limit=0.3)
    # No region at all: skipped with the reason, like every undefined metric.
    empty = compute_metrics(labels, scores, maps=maps, loco_regions=[[]] * 5)
    assert "no ground-truth region" in empty.skipped["pixel_auspro"]


def test_loco_regions_are_checked():
    labels, scores, maps, per_image = loco_case()
    with pytest.raises(ValueError, match="without maps"):
        compute_metrics(labels, scores, loco_regions=per_image)
    with pytest.raises(ValueError, match="5 sequences"):
        compute_metrics(labels, scores, maps=maps, loco_regions=per_image[:4])  # one list per image
    with pytest.raises(ValueError, match="5 sequences"):
        compute_metrics(labels, scores, maps=maps, loco_regions=[np.zeros((24, 24))] * 5)


def test_aupimo_method_is_passed_and_recorded():
    rng = np.random.default_rng(1)
    masks = np.zeros((16, 256, 256), dtype=bool)
    for i in range(12, 16):
        masks[i, 10 * i:10 * i + 30, 20:60] = True
    maps = rng.normal(size=masks.shape).astype(np.float32) + 3.5 * masks
    labels = masks.any(axis=(1, 2))
    exact = compute_metrics(labels, maps.max(axis=(1, 2)), masks, maps, aupimo_method="exact")
    reference = compute_metrics(labels, maps.max(axis=(1, 2)), masks, maps)
    assert exact.aupimo.method == "exact" and reference.aupimo.method == "reference"
    assert exact.values["aupimo_mean"] == aupimo(masks, maps, method="exact").mean
    assert exact.values["aupimo_mean"] != reference.values["aupimo_mean"]
    assert np.array_equal(reference.per_image["aupimo_mean"], reference.aupimo.per_image, equal_nan=True)
