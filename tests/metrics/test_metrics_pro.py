"""AU-PRO against a brute-force reference (one threshold at a time, regions labelled per image) and hand cases."""

import numpy as np
import pytest
from scipy import ndimage

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import aupro, pro_curve
from vadkit.metrics.pro import label_regions

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def brute_force_aupro(masks, maps, fpr_limit):
    """Straight from the definition: every distinct threshold, per-image regions, overlap per region."""
    masks = masks.astype(bool)
    regions = []  # (image index, bool region mask)
    for i, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
        regions += [(i, labelled == r) for r in range(1, n + 1)]
    normal = ~masks
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        predicted = maps >= t
        overlaps = [predicted[i][region].sum() / region.sum() for i, region in regions]
        pros.append(np.mean(overlaps))
        fprs.append((predicted & normal).sum() / normal.sum())
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs <= fpr_limit
    x = np.append(fprs[keep], fpr_limit)
    y = np.append(pros[keep], np.interp(fpr_limit, fprs, pros))
    return np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / fpr_limit


def random_blob_masks(rng, n_images, height, width):
    """Random discs, rectangles and speckle per image (some touching, some only diagonally, some images clean)."""
    yy, xx = np.mgrid[:height, :width]
    masks = np.zeros((n_images, height, width), dtype=bool)
    for mask in masks:
        for _ in range(rng.integers(0, 4)):
            cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(1, 5)
            if rng.random() < 0.5:
                mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
            else:
                mask[cy : cy + r, cx : cx + 2 * r] = True
        if rng.random() < 0.5:
            mask |= rng.random(mask.shape) < 0.04  # speckle: diagonal-only contacts test 8-connectivity
    masks[0, 0, 0] = True  # at least one region; a single-pixel one
    return masks


@pytest.mark.parametrize("seed", range(16))
def test_matches_brute_force_on_random_blobs(seed):
    rng = np.random.default_rng(seed)
    masks = random_blob_masks(rng, n_images=3, height=20, width=24)
    maps = rng.normal(size=masks.shape) + 1.2 * masks + 0.5 * ndimage.uniform_filter(masks * 1.0, size=5)
    maps = np.round(maps, [1, 2, 6][seed % 3]).astype(np.float32)  # from heavy ties to almost none
    fpr_limit = [0.3, 0.05, 1.0, 0.5][seed % 4]
    assert aupro(masks, maps, fpr_limit) == pytest.approx(brute_force_aupro(masks, maps, fpr_limit), abs=1e-12)


def test_perfect_map_scores_one_and_inverted_map_scores_zero():
    masks = random_blob_masks(np.random.default_rng(0), 3, 16, 16)
    perfect = masks + np.random.default_rng(1).random(masks.shape) * 0.5
    assert aupro(masks, perfect) == 1.0
    assert aupro(masks, -perfect) == 0.0
    assert aupro(masks, -perfect, fpr_limit=1.0) == 0.0


def test_hand_computed_curve_with_two_regions():
    # One 1x4 image; defect pixels 0 and 3 are two regions of one pixel each.
    masks = np.array([[[1, 0, 0, 1]]], dtype=bool)
    maps = np.array([[[0.8, 0.9, 0.1, 0.3]]])
    # Thresholds 0.9, 0.8, 0.3, 0.1 -> (FPR, PRO) = (.5, 0), (.5, .5), (.5, 1), (1, 1), after (0, 0).
    fpr, pro, thresholds = pro_curve(masks, maps)
    np.testing.assert_allclose(fpr, [0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(pro, [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(thresholds, [0.9, 0.8, 0.3, 0.1])
    assert aupro(masks, maps, fpr_limit=0.3) == 0.0
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5)
    assert aupro(masks, maps, fpr_limit=0.75) == pytest.approx(0.25 / 0.75)


def test_tie_between_normal_and_defect_pixels_is_a_diagonal_interpolated_at_the_limit():
    # Both pixels flagged at once: the curve is the segment (0, 0) -> (1, 1); PRO(0.3) = 0.3.
    masks = np.array([[[1, 0]]], dtype=bool)
    maps = np.array([[[0.5, 0.5]]], dtype=np.float32)
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx((0.3 * 0.3 / 2) / 0.3)
    assert aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.5)


def test_regions_are_8_connected_and_never_span_images():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[:, 0, 0] = masks[:, 1, 1] = True  # diagonal neighbours, same place in both images
    region_ids, sizes = label_regions(masks)
    np.testing.assert_array_equal(sizes, [2, 2])  # one region per image, not one 3-D blob, not four pixels
    assert region_ids[0, 0, 0] == region_ids[0, 1, 1] != region_ids[1, 0, 0]


def test_region_weighting_counts_small_defects_like_large_ones():
    # A large region fully detected and a 1-pixel region missed: PRO is 0.5 although 9/10 defect pixels are found.
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, :3, :3] = True
    masks[0, 7, 7] = True
    maps = np.where(masks, 1.0, 0.5)
    maps[0, 7, 7] = 0.0
    _, pro, _ = pro_curve(masks, maps)
    assert pro[0] == pytest.approx(0.5)
    assert aupro(masks, maps, fpr_limit=0.3) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "masks, missing",
    [(np.zeros((2, 4, 4), bool), "no anomalous pixels"), (np.ones((2, 4, 4), bool), "no normal pixels")],
)
def test_single_class_masks_raise_undefined(masks, missing):
    with pytest.raises(UndefinedMetricError, match=missing):
        aupro(masks, np.random.default_rng(0).random(masks.shape))


@pytest.mark.parametrize("fpr_limit", [0.0, -0.1, 1.5, float("nan")])
def test_fpr_limit_out_of_range_raises(fpr_limit):
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(np.eye(4, dtype=bool)[None], np.zeros((1, 4, 4)), fpr_limit)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"\(1, 4, 4\).*\(1, 4, 5\)"):
        aupro(np.eye(4, dtype=bool)[None], np.zeros((1, 4, 5)))
