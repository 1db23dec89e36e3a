"""Pixel metrics: pooled over all pixels, equal to the 1-D metrics / scikit-learn, with clear shape errors."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import f1_max, pixel_aupr, pixel_auroc, pixel_f1_max


def random_masks_and_maps(rng, shape, defect_rate=0.1, decimals=None):
    masks = rng.random(shape) < defect_rate
    maps = (rng.normal(size=shape) + 1.5 * masks).astype(np.float32)
    if decimals is not None:
        maps = np.round(maps, decimals)
    return masks, maps


@pytest.mark.parametrize("seed", range(5))
def test_equal_to_sklearn_on_all_pixels_pooled(seed):
    rng = np.random.default_rng(seed)
    masks, maps = random_masks_and_maps(rng, (4, 16, 20), decimals=1)
    labels, scores = masks.ravel(), maps.ravel()
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert pixel_aupr(masks, maps) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert pixel_f1_max(masks, maps) == pytest.approx(f1_max(labels, scores), abs=1e-12)


def test_uint8_masks_and_a_single_hw_pair_are_accepted():
    rng = np.random.default_rng(0)
    masks, maps = random_masks_and_maps(rng, (1, 12, 12))
    expected = pixel_auroc(masks, maps)
    assert pixel_auroc(masks.astype(np.uint8), maps) == expected
    assert pixel_auroc(masks[0], maps[0]) == expected


def test_large_input_matches_sklearn():
    # 5e6 float32 pixels with ties (maps quantised like 8-bit images).
    rng = np.random.default_rng(1)
    masks, maps = random_masks_and_maps(rng, (20, 500, 500), defect_rate=0.02)
    maps = np.round(maps * 40).astype(np.float32)
    labels, scores = masks.ravel(), maps.ravel()
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(labels, scores), abs=1e-10)
    assert pixel_aupr(masks, maps) == pytest.approx(average_precision_score(labels, scores), abs=1e-10)


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 8, 8\).*\(2, 4, 4\)"):
        pixel_auroc(np.zeros((2, 8, 8), bool), np.zeros((2, 4, 4), np.float32))


def test_wrong_rank_and_bad_mask_values_raise():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        pixel_auroc(np.zeros((2, 1, 8, 8), bool), np.zeros((2, 1, 8, 8)))
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 0, 0] = 255
    with pytest.raises(ValueError, match="mask > 0"):
        pixel_aupr(masks, np.zeros((1, 4, 4)))


def test_nan_in_maps_raises():
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 1, 2] = np.nan
    masks = np.eye(4, dtype=bool)[None]
    with pytest.raises(ValueError, match="maps.*NaN"):
        pixel_f1_max(masks, maps)


@pytest.mark.parametrize("metric", [pixel_auroc, pixel_aupr, pixel_f1_max])
def test_masks_without_defects_raise_undefined(metric):
    with pytest.raises(UndefinedMetricError, match="no anomalous .* pixels"):
        metric(np.zeros((2, 4, 4), bool), np.random.default_rng(0).random((2, 4, 4)))
