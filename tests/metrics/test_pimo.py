"""PIMO / AUPIMO. ``method="reference"`` against a plain port of the reference code's steps; ``method="exact"``
against a brute-force exact computation (one threshold at a time, every distinct score); hand cases."""

import math
import warnings

import numpy as np
import pytest

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import AUPIMOResult, aupimo, pimo_curves
from vadkit.metrics.pimo import AUPIMO_METHODS


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
def test_exact_matches_brute_force_on_random_maps(seed):
    rng = np.random.default_rng(seed)
    masks, maps = random_case(rng, decimals=[None, 3, 6][seed % 3])
    fpr_bounds = [(0.01, 0.3), (0.02, 0.5), (0.003, 0.05), (0.05, 1.0)][seed % 4]
    expected, n_points = brute_force_aupimo(masks, maps, fpr_bounds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # some bounds have <= 30 levels: forced
        result = aupimo(masks, maps, fpr_bounds, method="exact", force=True)
    np.testing.assert_allclose(result.per_image, expected, rtol=0, atol=1e-12, equal_nan=True)
    assert result.mean == pytest.approx(np.nanmean(expected), abs=1e-12)
    assert result.count == int(masks.any(axis=(1, 2)).sum())
    assert result.n_points == n_points and result.method == "exact"
    assert np.isnan(result.per_image[~masks.any(axis=(1, 2))]).all()


@pytest.mark.parametrize("seed", range(4))
def test_exact_heavy_ties_between_normal_and_anomalous_scores(seed):
    # Quantised to 0.1: many anomalous pixels tie with normal ones, so T(> t) and T(>= t) differ at most vertices.
    rng = np.random.default_rng(100 + seed)
    masks, maps = random_case(rng, n_images=12, size=16, decimals=1)
    expected, _ = brute_force_aupimo(masks, maps, (0.05, 0.6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = aupimo(masks, maps, (0.05, 0.6), method="exact", force=True)
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


def test_exact_perfect_map_scores_exactly_one_and_inverted_map_zero():
    rng = np.random.default_rng(0)
    masks, _ = random_case(rng, n_images=60, size=128)
    perfect = masks + 0.5 * rng.random(masks.shape)  # 30 normal images * 128 * 128 pixels: 44 levels in range
    result = aupimo(masks, perfect, method="exact")
    assert np.all(result.per_image[masks.any(axis=(1, 2))] == 1.0) and result.mean == 1.0
    assert aupimo(masks, -perfect, method="exact").mean == 0.0


@pytest.mark.parametrize("method", AUPIMO_METHODS)
def test_map_independent_of_mask_scores_like_a_random_model(method):
    # Scores unrelated to the mask: E[T_i(t)] = F(t), so AUPIMO ~ (U - L) / log(U / L).
    rng = np.random.default_rng(1)
    masks = np.zeros((40, 64, 64), dtype=bool)
    masks[:20, 8:56, 8:56] = True
    maps = rng.random(masks.shape)
    lower, upper = 0.1, 0.5
    result = aupimo(masks, maps, (lower, upper), method=method)
    assert result.mean == pytest.approx((upper - lower) / math.log(upper / lower), abs=0.005)
    assert np.nanstd(result.per_image) < 0.02


def test_exact_hand_computed_example():
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
        result = aupimo(masks, maps, (0.1, 0.4), method="exact", force=True)
    assert result.per_image[2] == pytest.approx(expected, abs=1e-15)
    assert np.isnan(result.per_image[:2]).all() and result.count == 1 and result.n_points == 4
    assert result.thresholds_bounds == (0.6, 0.9)
    # Cutting inside a segment: [0.15, 0.35] covers half-open parts of the first and last segments.
    with pytest.warns(RuntimeWarning):
        cut = aupimo(masks, maps, (0.15, 0.35), method="exact", force=True)
    expected_cut = (0.5 * math.log(0.3 / 0.15) + 1.0 * math.log(0.35 / 0.3)) / math.log(0.35 / 0.15)
    assert cut.per_image[2] == pytest.approx(expected_cut, abs=1e-15)
    assert cut.thresholds_bounds == (0.6, 0.8)


def test_exact_result_type_and_bounds_are_reported():
    rng = np.random.default_rng(5)
    masks, maps = random_case(rng, n_images=30, size=64)
    result = aupimo(masks, maps, (1e-3, 1e-2), method="exact")
    assert isinstance(result, AUPIMOResult) and result.fpr_bounds == (1e-3, 1e-2) and result.method == "exact"
    normal = maps[~masks.any(axis=(1, 2))]
    low, high = result.thresholds_bounds
    assert (normal >= low).mean() >= 1e-2 > (normal > low).mean()
    assert (normal >= high).mean() >= 1e-3 > (normal > high).mean()


def test_exact_too_few_points_in_range_raises_unless_forced():
    rng = np.random.default_rng(2)
    masks, maps = random_case(rng, n_images=8, size=10)  # 400 normal pixels: [0.01, 0.05] holds ~17 levels
    with pytest.raises(UndefinedMetricError, match="force=True"):
        aupimo(masks, maps, (0.01, 0.05), method="exact")
    with pytest.warns(RuntimeWarning, match="distinct shared-FPR level"):
        forced = aupimo(masks, maps, (0.01, 0.05), method="exact", force=True)
    assert forced.n_points <= 30
    np.testing.assert_allclose(forced.per_image, brute_force_aupimo(masks, maps, (0.01, 0.05))[0], equal_nan=True)


@pytest.mark.parametrize("method", AUPIMO_METHODS)
def test_lower_bound_unreachable_with_too_few_normal_pixels(method):
    masks = np.zeros((2, 100, 100), dtype=bool)
    masks[1, 10:20, 10:20] = True
    maps = np.random.default_rng(0).random(masks.shape)  # 10,000 normal pixels: smallest FPR 1e-4 > 1e-5
    with pytest.raises(UndefinedMetricError, match="at least 100000 normal pixels"):
        aupimo(masks, maps, method=method)
    # The curves are still available for plotting.
    assert pimo_curves(masks, maps).shared_fpr[0] == pytest.approx(1e-4)


@pytest.mark.parametrize("method", AUPIMO_METHODS)
def test_lower_bound_unreachable_because_top_normal_scores_tie(method):
    masks = np.zeros((4, 200, 200), dtype=bool)
    masks[3, :10, :10] = True
    maps = np.zeros(masks.shape, dtype=np.uint8)
    maps[0, :3, :3] = 255  # 9 of 120,000 normal pixels tie at the top: FPR jumps from 0 to 7.5e-5
    with pytest.raises(UndefinedMetricError, match="shared by 9 pixels"):
        aupimo(masks, maps, (1e-5, 1e-3), method=method)


def test_constant_map_is_undefined_at_low_fpr():
    masks = np.zeros((4, 8, 8), dtype=bool)
    masks[0, 2:4, 2:4] = True
    with pytest.raises(UndefinedMetricError, match="jumps from 0 to 1"):
        aupimo(masks, np.ones(masks.shape), (0.1, 0.5), method="exact")
    # The reference builds its grid from the lowest to the highest normal score: there is none here.
    with pytest.raises(UndefinedMetricError, match="every normal-image pixel scores 1.0"):
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


def test_invalid_method_and_grid_size():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, 0, 0] = True
    with pytest.raises(ValueError, match="method must be one of 'reference', 'exact'"):
        aupimo(masks, np.zeros(masks.shape), method="approximate")
    with pytest.raises(ValueError, match="num_thresholds"):
        aupimo(masks, np.zeros(masks.shape), num_thresholds=1)


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


# --- method="reference": the published numbers -------------------------------------------------------------------


def reference_port(masks, maps, fpr_bounds=(1e-5, 1e-4), num_thresholds=300_000, force=False):
    """The reference code's AUPIMO, step by step (jpcbertoldo/aupimo, ``pimo_numpy.pimo_curves`` and
    ``aupimo_scores``; the same in ``anomalib.metrics.pimo``), plainly, with its (images x thresholds) matrices.

    Returns ``(per_image, n_points, (threshold at U, threshold at L), (shared FPR at L's and at U's threshold))``;
    raises where the reference raises.
    """
    masks = masks.astype(bool)
    normal = ~masks.any(axis=(1, 2))
    # 1. Thresholds: num_thresholds evenly spaced from the lowest to the highest score of the normal images, in the
    #    maps' dtype; they must be strictly increasing.
    low, high = maps[normal].min().item(), maps[normal].max().item()
    if not low < high:
        raise ValueError("threshold bounds: upper <= lower")
    thresholds = np.linspace(low, high, num_thresholds, dtype=maps.dtype)
    if not np.all(np.diff(thresholds) > 0):
        raise ValueError("thresholds are not strictly increasing")
    # 2. Per image and threshold, pixels with score >= threshold: false positives of the normal images, true
    #    positives of every image; then the per-image FPR of the normal images and the per-image TPR.
    n_images = len(maps)
    fpr_of_normals = np.empty((int(normal.sum()), num_thresholds))
    tprs = np.full((n_images, num_thresholds), np.nan)
    row = 0
    for i in range(n_images):
        scores, gt = maps[i].ravel(), masks[i].ravel()
        if normal[i]:
            negatives = np.sort(scores[~gt])
            fps = negatives.size - np.searchsorted(negatives, thresholds, side="left")
            fpr_of_normals[row] = fps.astype(np.float64) / np.float64(negatives.size)
            row += 1
        else:
            positives = np.sort(scores[gt])
            tps = positives.size - np.searchsorted(positives, thresholds, side="left")
            tprs[i] = tps.astype(np.float64) / np.float64(positives.size)
    # 3. Shared FPR: the mean of the normal images' per-image FPRs (decreasing along the ascending thresholds).
    shared_fpr = fpr_of_normals.mean(axis=0)

    # 4. The threshold of each bound: the grid point whose shared FPR is nearest (np.argmin: first index on ties);
    #    a level outside the shared FPR's range is an error.
    def index_at(level):
        if not shared_fpr.min() <= level <= shared_fpr.max():
            raise ValueError(f"FPR level {level} outside [{shared_fpr.min()}, {shared_fpr.max()}]")
        return int(np.argmin(np.abs(shared_fpr - level)))

    lower, upper = fpr_bounds
    at_lower, at_upper = index_at(lower), index_at(upper)  # threshold upper / lower bound
    if at_upper >= at_lower:
        raise RuntimeError("both FPR bounds select the same threshold, or the wrong order")
    # 5. The curves from the threshold of U to that of L, both included, flipped to ascending FPR; x = log FPR,
    #    non-finite x dropped; 30 points or fewer is an error unless forced.
    fpr = np.flip(shared_fpr[at_upper : at_lower + 1])
    tpr = np.flip(tprs[:, at_upper : at_lower + 1], axis=1)
    x = np.log(fpr)
    finite = np.isfinite(x)
    x, tpr = x[finite], tpr[:, finite]
    if x.size <= 30 and not force:
        raise RuntimeError("too few points in the integration range")
    # 6. Trapezoid rule over log FPR, divided by log(U / L), clipped to [0, 1] (np.trapz, now np.trapezoid).
    per_image = (np.trapezoid(tpr, x=x, axis=1) / float(np.log(upper / lower))).clip(0, 1)
    return (per_image, int(x.size), (thresholds[at_upper].item(), thresholds[at_lower].item()),
            (float(shared_fpr[at_lower]), float(shared_fpr[at_upper])))


def noisy_case(seed, n_normal, n_anomalous, size, dtype=np.float32):
    """Gaussian-noise maps; each anomalous image has a rectangle and speckle raised by its own amount."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_normal + n_anomalous, size, size), dtype=bool)
    for i in range(n_anomalous):
        y, x = rng.integers(0, size - 12, 2)
        masks[i, y : y + rng.integers(2, 12), x : x + rng.integers(2, 12)] = True
        masks[i] |= rng.random((size, size)) < 0.002
    maps = rng.normal(size=masks.shape) + rng.uniform(2.0, 5.0, size=(len(masks), 1, 1)) * masks
    return masks, maps.astype(dtype)


def assert_same_as_port(masks, maps, result, expected):
    per_image, n_points, thresholds_bounds, achieved = expected
    np.testing.assert_allclose(result.per_image, per_image, rtol=0, atol=1e-9, equal_nan=True)
    assert result.mean == pytest.approx(np.nanmean(per_image), abs=1e-9)
    assert result.n_points == n_points and result.thresholds_bounds == thresholds_bounds
    assert result.achieved_fpr_bounds == achieved  # the same float arithmetic as the reference
    assert result.method == "reference" and result.count == int(masks.any(axis=(1, 2)).sum())


@pytest.mark.parametrize(("seed", "n_normal", "n_anomalous", "size"), [
    (0, 4, 6, 256),  # few normal images: F_L' is 3 / 262144 = 1.14e-5, 14% above L
    (1, 4, 3, 256),
    (2, 20, 10, 128),
    (3, 40, 8, 64),
])
def test_reference_matches_a_port_of_the_reference_at_the_default_settings(seed, n_normal, n_anomalous, size):
    masks, maps = noisy_case(seed, n_normal, n_anomalous, size)
    result = aupimo(masks, maps)  # the default method
    assert_same_as_port(masks, maps, result, reference_port(masks, maps))
    assert result.n_points > 10_000  # 300,000 thresholds: a fine grid inside the range
    assert 0.05 < result.mean < 0.95  # not a trivial case


@pytest.mark.parametrize(("seed", "decimals", "dtype", "bounds", "num_thresholds"), [
    (10, None, np.float64, (1e-3, 1e-2), 300_000),
    (11, 2, np.float32, (1e-3, 1e-2), 300_000),  # quantised maps: long plateaus of the shared FPR on the grid
    (12, 1, np.float64, (1e-2, 0.3), 300_000),
    (13, None, np.float32, (1e-3, 1e-2), 2_000),  # coarse grid: many normal pixels between two thresholds
    (14, 3, np.float64, (0.05, 1.0), 5_000),  # U = 1: the lowest grid point
])
def test_reference_matches_the_port_on_quantised_maps_coarse_grids_and_other_bounds(seed, decimals, dtype, bounds,
                                                                                    num_thresholds):
    masks, maps = noisy_case(seed, 12, 6, 48, dtype=np.float64)
    if decimals is not None:
        maps = np.round(maps, decimals)
    maps = maps.astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = aupimo(masks, maps, bounds, num_thresholds=num_thresholds)
    assert_same_as_port(masks, maps, result, reference_port(masks, maps, bounds, num_thresholds))


def test_reference_breaks_a_tie_between_two_grid_points_as_the_reference_does():
    # 20 normal images of 100 x 100: n = 200,000 and 2 L n = 4, so the counts 1 and 3 above and below L = 1e-5
    # (FPR 5e-6 and 1.5e-5) are equally far from L in exact arithmetic. The reference's float arithmetic (mean of
    # per-image FPRs) decides; the pooled count / n would pick the other one.
    rng = np.random.default_rng(5)
    masks = np.zeros((26, 100, 100), dtype=bool)
    masks[20:, 30:60, 30:60] = True
    maps = rng.random(masks.shape) * 0.5
    maps[20:][masks[20:]] = rng.uniform(1.0, 10.0, int(masks.sum()))  # defect pixels all along the range
    maps[0, 5, 5] = 10.0
    maps[3, 7, 7] = maps[5, 9, 9] = 9.0
    maps[rng.integers(0, 20, 30), rng.integers(0, 100, 30), rng.integers(0, 100, 30)] = rng.uniform(1, 2, 30)
    expected = reference_port(masks, maps)
    result = aupimo(masks, maps)
    assert_same_as_port(masks, maps, result, expected)
    assert result.thresholds_bounds[1] > 9.0 and result.achieved_fpr_bounds[0] == 5e-6  # count 1 matched L
    pooled = (np.count_nonzero(maps[:20] >= 9.0) / 200_000, np.count_nonzero(maps[:20] > 9.0) / 200_000)
    assert abs(pooled[0] - 1e-5) < abs(pooled[1] - 1e-5)  # in pooled arithmetic count 3 would have won


def test_reference_on_float16_maps_is_the_reference_on_float32_maps():
    masks, maps = noisy_case(20, 6, 4, 160, dtype=np.float16)
    result = aupimo(masks, maps)
    assert_same_as_port(masks, maps, result, reference_port(masks, maps.astype(np.float32)))
    with pytest.raises(ValueError, match="not strictly increasing"):  # what the reference does with float16
        reference_port(masks, maps)


def test_reference_perfect_map_scores_the_ratio_of_the_achieved_bounds():
    # T = 1 over the whole range: the reference's integral is log(F_U' / F_L'), divided by log(U / L), clipped.
    masks, maps = noisy_case(30, 4, 3, 256)
    perfect = np.where(masks, 10.0 + maps, maps).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = aupimo(masks, perfect)
        exact = aupimo(masks, perfect, method="exact", force=True)  # 24 levels in range: forced
    expected = reference_port(masks, perfect)
    assert_same_as_port(masks, perfect, result, expected)
    normal = perfect[~masks.any(axis=(1, 2))]
    f_upper, f_lower = ((normal >= t).mean() for t in result.thresholds_bounds)
    ratio = min(1.0, math.log(f_upper / f_lower) / math.log(1e-4 / 1e-5))
    assert result.per_image[masks.any(axis=(1, 2))] == pytest.approx(ratio, abs=1e-12)
    assert ratio < 0.97 and exact.mean == 1.0  # 4 normal images: the achieved bounds are far from (L, U)


def test_reference_and_exact_differ_by_the_bound_matching():
    # 4 normal images of 256 x 256: L n = 2.6 normal pixels, so the reference starts at 3 / n, 14% above L.
    masks, maps = noisy_case(0, 4, 6, 256)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = aupimo(masks, maps)
        exact = aupimo(masks, maps, method="exact", force=True)  # 24 distinct levels in range: forced
    difference = np.nanmax(np.abs(reference.per_image - exact.per_image))
    assert 1e-3 < difference < 0.05  # the module docstring's measured range for 4 normal images
    # The exact curve integrated over the reference's achieved range [F_L', F_U'] and normalised by log(U / L)
    # instead is the reference's value: the whole difference is the bound matching, the 300,000-point grid adds
    # nothing measurable here.
    normal = maps[~masks.any(axis=(1, 2))]
    achieved = tuple(float((normal >= t).mean()) for t in reference.thresholds_bounds[::-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        over_achieved = aupimo(masks, maps, achieved, method="exact", force=True)
    rescaled = over_achieved.per_image * math.log(achieved[1] / achieved[0]) / math.log(10.0)
    np.testing.assert_allclose(reference.per_image, rescaled, atol=1e-9, equal_nan=True)


def test_reference_stops_where_the_reference_stops():
    masks, maps = noisy_case(40, 3, 2, 32)
    # Too few normal pixels for L (3,072 < 100,000): the reference's "FPR level outside the range".
    with pytest.raises(UndefinedMetricError, match="at least 100000 normal pixels"):
        aupimo(masks, maps)
    with pytest.raises(ValueError, match="outside"):
        reference_port(masks, maps)
    # Both bounds nearest to the same grid point.
    with pytest.raises(UndefinedMetricError, match="select the same threshold"):
        aupimo(masks, maps, (1e-3, 1.1e-3))
    with pytest.raises(RuntimeError, match="same threshold"):
        reference_port(masks, maps, (1e-3, 1.1e-3))
    # float32 cannot hold 300,000 distinct thresholds in [1000, 1001].
    shifted = (1000 + maps / 10).astype(np.float32)
    with pytest.raises(UndefinedMetricError, match="cannot hold 300000 distinct thresholds"):
        aupimo(masks, shifted, (1e-2, 1e-1))
    with pytest.raises(ValueError, match="not strictly increasing"):
        reference_port(masks, shifted, (1e-2, 1e-1))
    # 30 grid points or fewer: an error unless forced (then a warning).
    with pytest.raises(UndefinedMetricError, match="force=True"):
        aupimo(masks, maps, (1e-2, 1e-1), num_thresholds=40)
    with pytest.raises(RuntimeError, match="too few points"):
        reference_port(masks, maps, (1e-2, 1e-1), num_thresholds=40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        forced = aupimo(masks, maps, (1e-2, 1e-1), num_thresholds=40, force=True)
    assert any("computed with force=True" in str(w.message) for w in caught)
    assert_same_as_port(masks, maps, forced, reference_port(masks, maps, (1e-2, 1e-1), 40, force=True))


def test_reference_warns_about_coarse_grids_and_reports_the_range_it_integrated():
    masks, maps = noisy_case(0, 4, 6, 256)
    # 4 normal images: the grid point nearest L = 1e-5 has FPR 3 / 262144 = 1.14e-5. The reference warns (more than
    # 1% off); vadkit returns the achieved range instead, and the exact method integrates (L, U) itself.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = aupimo(masks, maps)
    assert result.achieved_fpr_bounds == (3 / 262144, 26 / 262144)
    with pytest.warns(RuntimeWarning, match="force=True"):  # 24 distinct levels in range
        assert aupimo(masks, maps, method="exact", force=True).achieved_fpr_bounds == (1e-5, 1e-4)
    # A grid of 3,000 thresholds has fewer than 300 in the range: "may be inaccurate", as the reference warns.
    with pytest.warns(RuntimeWarning, match="may be inaccurate: only 241 grid thresholds"):
        coarse = aupimo(masks, maps, (1e-3, 1e-2), num_thresholds=3_000)
    assert_same_as_port(masks, maps, coarse, reference_port(masks, maps, (1e-3, 1e-2), 3_000))
