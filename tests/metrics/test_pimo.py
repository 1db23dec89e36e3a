"""PIMO / AUPIMO against a brute-force reference (one threshold at a time, every distinct score) and hand cases."""

import math
import warnings

import numpy as np
import pytest

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import AUPIMOResult, aupimo, pimo_curves


def brute_force_pimo(masks, maps):
    """Shared FPR and per-image TPR at every distinct score, straight from the definition (thresholds descending)."""
    masks = masks.astype(bool)
    normal = [i for i in range(len(masks)) if not masks[i].any()]
    anomalous = [i for i in range(len(masks)) if masks[i].any()]
    thresholds = np.unique(np.concatenate([maps[normal].ravel(), maps[masks]]))[::-1]
    fprs, tprs = [], []
    for t in thresholds:
        fprs.append(np.mean([(maps[j] >= t).mean() for j in normal]))  # mean of per-image FPRs
        tprs.append([(maps[i][masks[i]] >= t).mean() for i in anomalous])
    return thresholds, np.array(fprs), np.array(tprs), anomalous


def brute_force_aupimo(masks, maps, fpr_bounds):
    """Trapezoid rule in log-FPR through every curve point, cut at the bounds by linear interpolation."""
    _, fprs, tprs, anomalous = brute_force_pimo(masks, maps)
    keep = fprs > 0
    x, y = np.log(fprs[keep]), tprs[keep]
    lo, hi = math.log(fpr_bounds[0]), math.log(fpr_bounds[1])
    assert x[0] <= lo, "lower bound unreachable"
    i0 = np.flatnonzero(x <= lo)[-1]  # last point at or left of lo; the next one is right of it
    j1 = np.flatnonzero(x >= hi)[0]  # first point at or right of hi
    per_image = np.full(len(masks), np.nan)
    for column, image in enumerate(anomalous):
        yc = y[:, column]
        y_lo = yc[i0] + (yc[i0 + 1] - yc[i0]) * (lo - x[i0]) / (x[i0 + 1] - x[i0])
        y_hi = yc[j1 - 1] + (yc[j1] - yc[j1 - 1]) * (hi - x[j1 - 1]) / (x[j1] - x[j1 - 1])
        xs = np.concatenate(([lo], x[i0 + 1 : j1], [hi]))
        ys = np.concatenate(([y_lo], yc[i0 + 1 : j1], [y_hi]))
        per_image[image] = np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2) / (hi - lo)
    n_points = len(np.unique(fprs[(fprs >= fpr_bounds[0]) & (fprs <= fpr_bounds[1])]))
    return per_image, n_points


def random_case(rng, n_images=9, size=12, decimals=None):
    masks = np.zeros((n_images, size, size), dtype=bool)
    for i in range(n_images // 2):  # about half the images are anomalous, the rest normal
        y, x = rng.integers(0, size - 3, 2)
        masks[i, y : y + rng.integers(1, 4), x : x + rng.integers(1, 5)] = True
        masks[i] |= rng.random((size, size)) < 0.03
    maps = rng.normal(size=masks.shape) + rng.uniform(0.5, 3.0) * masks
    if decimals is not None:
        maps = np.round(maps, decimals)
    return masks, maps.astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_matches_brute_force_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    masks, maps = random_case(rng, decimals=[None, 3, 6][seed % 3])
    fpr_bounds = [(0.01, 0.3), (0.02, 0.5), (0.003, 0.05), (0.05, 1.0)][seed % 4]
    expected, n_points = brute_force_aupimo(masks, maps, fpr_bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # some bounds have <= 30 levels: forced
        result = aupimo(masks, maps, fpr_bounds, force=True)
    np.testing.assert_allclose(result.per_image, expected, rtol=0, atol=1e-12, equal_nan=True)
    assert result.mean == pytest.approx(np.nanmean(expected), abs=1e-12)
    assert result.count == int(masks.any(axis=(1, 2)).sum())
    assert result.n_points == n_points
    assert np.isnan(result.per_image[~masks.any(axis=(1, 2))]).all()


@pytest.mark.parametrize("seed", range(4))
def test_heavy_ties_between_normal_and_anomalous_scores(seed):
    # Quantised to 0.1: many anomalous pixels tie with normal ones, so T(> t) and T(>= t) differ at most vertices.
    rng = np.random.default_rng(100 + seed)
    masks, maps = random_case(rng, n_images=12, size=16, decimals=1)
    expected, _ = brute_force_aupimo(masks, maps, (0.05, 0.6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = aupimo(masks, maps, (0.05, 0.6), force=True)
    np.testing.assert_allclose(result.per_image, expected, atol=1e-12, equal_nan=True)


def test_curves_match_brute_force_and_cover_the_range():
    rng = np.random.default_rng(7)
    masks, maps = random_case(rng, n_images=10, size=14, decimals=2)
    bounds = (0.01, 0.2)
    curves = pimo_curves(masks, maps, bounds)
    thresholds, fprs, tprs, anomalous = brute_force_pimo(masks, maps)
    assert np.all(np.diff(curves.thresholds) < 0) and np.all(np.diff(curves.shared_fpr) > 0)
    assert curves.shared_fpr[0] <= bounds[0] < curves.shared_fpr[1] and curves.shared_fpr[-1] >= bounds[1]
    assert curves.shared_fpr[-2] < bounds[1]
    position = {t: k for k, t in enumerate(thresholds)}
    rows = [position[t] for t in curves.thresholds]
    np.testing.assert_allclose(curves.shared_fpr, fprs[rows], atol=1e-15)
    np.testing.assert_allclose(curves.per_image_tpr[anomalous], tprs[rows].T, atol=1e-15)
    np.testing.assert_array_equal(curves.image_classes, masks.any(axis=(1, 2)).astype(int))
    assert np.isnan(curves.per_image_tpr[curves.image_classes == 0]).all()


def test_curves_are_subsampled_evenly_in_log_fpr():
    rng = np.random.default_rng(3)
    masks, maps = random_case(rng, n_images=10, size=30)
    full = pimo_curves(masks, maps, (0.001, 1.0), max_points=10**6)
    small = pimo_curves(masks, maps, (0.001, 1.0), max_points=50)
    assert len(full.thresholds) > 1000 and 40 <= len(small.thresholds) <= 50
    assert small.thresholds[0] == full.thresholds[0] and small.thresholds[-1] == full.thresholds[-1]
    rows = np.searchsorted(-full.thresholds, -small.thresholds)
    np.testing.assert_array_equal(small.per_image_tpr, full.per_image_tpr[:, rows])
    gaps = np.diff(np.log(small.shared_fpr))
    assert gaps.max() < 3 * np.log(1000) / 49


def test_perfect_map_scores_exactly_one_and_inverted_map_zero():
    rng = np.random.default_rng(0)
    masks, _ = random_case(rng, n_images=60, size=128)
    perfect = masks + 0.5 * rng.random(masks.shape)  # 30 normal images * 128 * 128 pixels: 44 levels in range
    result = aupimo(masks, perfect)
    assert np.all(result.per_image[masks.any(axis=(1, 2))] == 1.0) and result.mean == 1.0
    assert aupimo(masks, -perfect).mean == 0.0


def test_map_independent_of_mask_scores_like_a_random_model():
    # Scores unrelated to the mask: E[T_i(t)] = F(t), so AUPIMO ~ (U - L) / log(U / L).
    rng = np.random.default_rng(1)
    masks = np.zeros((40, 64, 64), dtype=bool)
    masks[:20, 8:56, 8:56] = True
    maps = rng.random(masks.shape)
    lower, upper = 0.1, 0.5
    result = aupimo(masks, maps, (lower, upper))
    assert result.mean == pytest.approx((upper - lower) / math.log(upper / lower), abs=0.005)
    assert np.nanstd(result.per_image) < 0.02


def test_hand_computed_example():
    # Two normal 1x5 images (10 normal pixels) and one anomalous image with two defect pixels.
    masks = np.zeros((3, 1, 5), dtype=bool)
    masks[2, 0, :2] = True
    maps = np.array(
        [
            [[0.9, 0.8, 0.1, 0.1, 0.1]],
            [[0.7, 0.6, 0.1, 0.1, 0.1]],
            [[0.85, 0.65, 0.0, 0.0, 0.0]],
        ]
    )
    # Shared FPR: 0.1 at t=0.9, 0.2 at 0.8, 0.3 at 0.7, 0.4 at 0.6, 1.0 at 0.1. TPR >= t: 0 above 0.85, 0.5 down to
    # 0.65, 1 below. Segments in log FPR over [log 0.1, log 0.4]: (0.1 -> 0.2, TPR 0.5 -> 0.5),
    # (0.2 -> 0.3, 0.5 -> 0.5), (0.3 -> 0.4, 1 -> 1).
    expected = (0.5 * math.log(2) + 0.5 * math.log(1.5) + 1.0 * math.log(4 / 3)) / math.log(4)
    with pytest.warns(RuntimeWarning, match="force=True"):
        result = aupimo(masks, maps, (0.1, 0.4), force=True)
    assert result.per_image[2] == pytest.approx(expected, abs=1e-15)
    assert np.isnan(result.per_image[:2]).all() and result.count == 1 and result.n_points == 4
    assert result.thresholds_bounds == (0.6, 0.9)
    # Cutting inside a segment: [0.15, 0.35] covers half-open parts of the first and last segments.
    with pytest.warns(RuntimeWarning):
        cut = aupimo(masks, maps, (0.15, 0.35), force=True)
    expected_cut = (0.5 * math.log(0.3 / 0.15) + 1.0 * math.log(0.35 / 0.3)) / math.log(0.35 / 0.15)
    assert cut.per_image[2] == pytest.approx(expected_cut, abs=1e-15)
    assert cut.thresholds_bounds == (0.6, 0.8)


def test_result_type_and_bounds_are_reported():
    rng = np.random.default_rng(5)
    masks, maps = random_case(rng, n_images=30, size=64)
    result = aupimo(masks, maps, (1e-3, 1e-2))
    assert isinstance(result, AUPIMOResult) and result.fpr_bounds == (1e-3, 1e-2)
    normal = maps[~masks.any(axis=(1, 2))]
    low, high = result.thresholds_bounds
    assert (normal >= low).mean() >= 1e-2 > (normal > low).mean()
    assert (normal >= high).mean() >= 1e-3 > (normal > high).mean()


def test_too_few_points_in_range_raises_unless_forced():
    rng = np.random.default_rng(2)
    masks, maps = random_case(rng, n_images=8, size=10)  # 400 normal pixels: [0.01, 0.05] holds ~17 levels
    with pytest.raises(UndefinedMetricError, match="force=True"):
        aupimo(masks, maps, (0.01, 0.05))
    with pytest.warns(RuntimeWarning, match="distinct shared-FPR level"):
        forced = aupimo(masks, maps, (0.01, 0.05), force=True)
    assert forced.n_points <= 30
    np.testing.assert_allclose(forced.per_image, brute_force_aupimo(masks, maps, (0.01, 0.05))[0], equal_nan=True)


def test_lower_bound_unreachable_with_too_few_normal_pixels():
    masks = np.zeros((2, 100, 100), dtype=bool)
    masks[1, 10:20, 10:20] = True
    maps = np.random.default_rng(0).random(masks.shape)  # 10,000 normal pixels: smallest FPR 1e-4 > 1e-5
    with pytest.raises(UndefinedMetricError, match="at least 100000 normal pixels"):
        aupimo(masks, maps)
    # The curves are still available for plotting.
    assert pimo_curves(masks, maps).shared_fpr[0] == pytest.approx(1e-4)


def test_lower_bound_unreachable_because_top_normal_scores_tie():
    masks = np.zeros((4, 200, 200), dtype=bool)
    masks[3, :10, :10] = True
    maps = np.zeros(masks.shape, dtype=np.uint8)
    maps[0, :3, :3] = 255  # 9 of 120,000 normal pixels tie at the top: FPR jumps from 0 to 7.5e-5
    with pytest.raises(UndefinedMetricError, match="shared by 9 pixels"):
        aupimo(masks, maps, (1e-5, 1e-3))


def test_constant_map_is_undefined_at_low_fpr():
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[0, 2:4, 2:4] = True
    with pytest.raises(UndefinedMetricError, match="jumps from 0 to 1"):
        aupimo(masks, np.ones(masks.shape), (0.1, 0.5))


def test_single_class_is_undefined():
    masks = np.zeros((3, 8, 8), dtype=bool)
    maps = np.random.default_rng(0).random(masks.shape)
    with pytest.raises(UndefinedMetricError, match="no image has an anomalous pixel"):
        aupimo(masks, maps)
    masks[:, 0, 0] = True
    with pytest.raises(UndefinedMetricError, match="no normal image"):
        aupimo(masks, maps)
    with pytest.raises(UndefinedMetricError, match="no normal image"):
        pimo_curves(masks, maps)


@pytest.mark.parametrize("bounds", [(1e-4, 1e-5), (0.0, 0.1), (0.1, 1.5), (0.1,), "ab"])
def test_invalid_fpr_bounds(bounds):
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match="fpr_bounds"):
        aupimo(masks, np.zeros(masks.shape), bounds)


def test_invalid_inputs():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match="shape"):
        aupimo(masks, np.zeros((2, 4, 5)))
    maps = np.zeros(masks.shape)
    maps[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        aupimo(masks, maps)
    with pytest.raises(ValueError, match="0/1"):
        aupimo(masks * 255, np.zeros(masks.shape))
    with pytest.raises(ValueError, match="max_points"):
        pimo_curves(masks, np.zeros(masks.shape), max_points=1)
