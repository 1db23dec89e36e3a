"""AU-PRO against a brute-force reference (one threshold at a time, regions labelled per image), against a port of
MVTec AD's own evaluation script, and hand cases."""

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


# --- MVTec AD's own evaluation script -----------------------------------------------------------------------------


def mvtec_compute_pro(maps, masks, fpr_dtype=np.float32):
    """MVTec AD's evaluation code, ``pro_curve_util.compute_pro``, step by step: per-pixel FPR and PRO increments,
    one descending sort of all scores, cumulative sums (the FPRs stored in ``fpr_dtype``: float32 in the script),
    the last point of each run of tied scores, values clipped at 1, and (0, 0) / (1, 1) added at the ends."""
    n_images, height, width = maps.shape
    fp_change = np.zeros(maps.shape, dtype=np.uint32)
    pro_change = np.zeros(maps.shape, dtype=np.float64)
    n_ok_pixels, n_regions = 0, 0
    for i in range(n_images):
        labelled, n_components = ndimage.label(masks[i], np.ones((3, 3), dtype=int))
        n_regions += n_components
        ok = labelled == 0
        n_ok_pixels += int(ok.sum())
        fp_change[i][ok] = 1
        for k in range(1, n_components + 1):
            region = labelled == k
            pro_change[i][region] = 1.0 / region.sum()
    scores = maps.ravel()
    order = np.argsort(scores)[::-1]
    scores_sorted = scores[order]
    fprs = np.cumsum(fp_change.ravel()[order]).astype(fpr_dtype)
    fprs = np.divide(fprs, n_ok_pixels, out=fprs)
    pros = np.cumsum(pro_change.ravel()[order]) / n_regions
    last_of_run = np.append(np.diff(scores_sorted) != 0, True)
    fprs, pros = np.minimum(fprs[last_of_run], 1.0), np.minimum(pros[last_of_run], 1.0)
    return np.concatenate(([0.0], fprs, [1.0])), np.concatenate(([0.0], pros, [1.0]))


def mvtec_trapezoid(x, y, x_max):
    """MVTec AD's ``generic_util.trapezoid``: trapezoid rule up to ``x_max``, the last piece up to ``x_max`` with y
    interpolated linearly between the points around it (found with ``bisect``)."""
    from bisect import bisect

    correction = 0.0
    if x_max not in x:
        ins = bisect(x, x_max)
        y_at_max = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_at_max + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1])  # distinct scores, or heavy ties between and within regions
def test_agrees_with_mvtec_ad_evaluation_script(seed, decimals):
    rng = np.random.default_rng(seed)
    masks = random_blob_masks(rng, n_images=6, height=64, width=64)
    maps = rng.normal(size=masks.shape) + 1.2 * masks + 0.5 * ndimage.uniform_filter(masks * 1.0, size=5)
    if decimals is not None:
        maps = np.round(maps, decimals)
    maps = maps.astype(np.float32)
    for fpr_limit in (0.3, 0.05, 1.0):
        ours = aupro(masks, maps, fpr_limit)
        # As published: FPRs in float32, the script's only difference (measured: at most 3.6e-9 on 30 seeds).
        fprs, pros = mvtec_compute_pro(maps, masks)
        assert ours == pytest.approx(mvtec_trapezoid(fprs, pros, fpr_limit) / fpr_limit, abs=1e-8)
        # The same steps in float64: the same number up to summation order.
        fprs, pros = mvtec_compute_pro(maps, masks, fpr_dtype=np.float64)
        assert ours == pytest.approx(mvtec_trapezoid(fprs, pros, fpr_limit) / fpr_limit, abs=1e-13)
