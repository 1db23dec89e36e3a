"""Binned pixel metrics: exact quantisation, error within the computed bounds, bounded streaming memory."""

import tracemalloc

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import (
    PixelHistogram,
    aupro,
    confusion_at,
    per_image_histograms,
    pixel_aupr,
    pixel_auroc,
    pixel_f1_max,
    quantile_edges,
    uniform_edges,
)
from vadkit.metrics.binned import _Binner
from vadkit.metrics.image import f1_max


def defect_masks(rng, shape, n_defective):
    masks = np.zeros(shape, dtype=bool)
    for i in range(n_defective):
        for _ in range(int(rng.integers(1, 3))):
            h, w = rng.integers(2, shape[1] // 2, 2)
            top, left = rng.integers(0, shape[1] - h), rng.integers(0, shape[2] - w)
            masks[i, top:top + h, left:left + w] = True
    return masks


def random_case(seed, shape=(12, 40, 48), kind="normal"):
    rng = np.random.default_rng(seed)
    masks = defect_masks(rng, shape, shape[0] // 2)
    if kind == "normal":
        maps = rng.normal(size=shape) + 1.5 * masks
    elif kind == "heavy_tail":  # a few huge outliers stretch a uniform range: most pixels share few bins
        maps = rng.standard_cauchy(size=shape) + 2.0 * masks
    elif kind == "ties":
        maps = np.round(rng.normal(size=shape) + masks, 1)
    return masks, maps.astype(np.float32)


def exact_values(masks, maps):
    return {"auroc": pixel_auroc(masks, maps), "aupr": pixel_aupr(masks, maps), "f1": pixel_f1_max(masks, maps),
            "aupro": aupro(masks, maps), "aupro_005": aupro(masks, maps, 0.05)}


def histogram_of(masks, maps, edges, chunk=5):
    hist = PixelHistogram(edges)
    for start in range(0, len(masks), chunk):
        hist.add(masks[start:start + chunk], maps[start:start + chunk])
    return hist


def assert_within_bounds(hist, exact):
    assert abs(hist.auroc() - exact["auroc"]) <= hist.auroc_error_bound() + 1e-12
    assert abs(hist.aupr() - exact["aupr"]) <= hist.aupr_error_bound() + 1e-12
    # F1-max binned is a lower bound of the exact one, and the gap is at most the bound.
    assert hist.f1_max() - 1e-12 <= exact["f1"] <= hist.f1_max() + hist.f1_max_error_bound() + 1e-12
    assert abs(hist.aupro() - exact["aupro"]) <= hist.aupro_error_bound() + 1e-12
    assert abs(hist.aupro(0.05) - exact["aupro_005"]) <= hist.aupro_error_bound(0.05) + 1e-12


# --- quantisation -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["uniform", "quantile", "clustered", "tiny"])
def test_binner_equals_searchsorted(kind):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(size=20000), rng.standard_cauchy(size=2000), [-1e30, 1e30, 0.0]])
    if kind == "uniform":
        edges = uniform_edges(-3, 3, 1000)
    elif kind == "quantile":
        edges = np.unique(np.quantile(x, np.linspace(0, 1, 513)))
    elif kind == "clustered":  # thousands of edges inside one lookup cell: the searchsorted fallback
        edges = np.unique(np.r_[np.linspace(0, 1e-9, 3000), np.linspace(1.0, 1e6, 50)])
    else:
        edges = np.array([0.0, 0.5, 1.0])
    x = np.concatenate([x, edges, np.nextafter(edges, -np.inf)])  # values exactly on and just below edges
    expected = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    np.testing.assert_array_equal(_Binner(edges)(x), expected)


def test_per_image_histograms_match_numpy_histogram():
    masks, maps = random_case(0)
    edges = quantile_edges(masks, maps, 64)
    pos, neg = per_image_histograms(masks.astype(np.uint8), maps, edges)
    open_ended = np.r_[-np.inf, edges[1:-1], np.inf]  # first and last bins catch everything outside
    for i in range(len(masks)):
        np.testing.assert_array_equal(pos[i], np.histogram(maps[i][masks[i]], open_ended)[0])
        np.testing.assert_array_equal(neg[i], np.histogram(maps[i][~masks[i]], open_ended)[0])


def test_streaming_in_chunks_equals_one_batch():
    masks, maps = random_case(1)
    edges = quantile_edges(masks, maps, 100)
    whole = PixelHistogram(edges).add(masks, maps)
    chunked = histogram_of(masks, maps, edges, chunk=1)
    np.testing.assert_array_equal(whole.pos, chunked.pos)
    np.testing.assert_array_equal(whole.neg, chunked.neg)
    assert whole.n_regions == chunked.n_regions
    assert whole.aupro() == pytest.approx(chunked.aupro(), abs=1e-14)


# --- binned = exact metric of the bin-index scores -----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
def test_binned_metrics_equal_sklearn_on_bin_indices(seed):
    # Independent check of the binned computation: replacing every score by its bin index (a monotone map)
    # and computing the exact metric must give the binned value.
    masks, maps = random_case(seed)
    edges = quantile_edges(masks, maps, 32)
    hist = histogram_of(masks, maps, edges)
    index = np.clip(np.searchsorted(edges, maps, side="right") - 1, 0, len(edges) - 2)
    labels = masks.ravel()
    assert hist.auroc() == pytest.approx(roc_auc_score(labels, index.ravel()), abs=1e-12)
    assert hist.aupr() == pytest.approx(average_precision_score(labels, index.ravel()), abs=1e-12)
    assert hist.f1_max() == pytest.approx(f1_max(labels, index.ravel()), abs=1e-12)
    assert hist.aupro() == pytest.approx(aupro(masks, index), abs=1e-12)
    assert hist.aupro(0.05) == pytest.approx(aupro(masks, index, 0.05), abs=1e-12)
    # The binned F1 threshold is a real threshold: flagging map >= it reaches exactly that F1.
    f1, threshold = hist.f1_max_threshold()
    assert confusion_at(labels, maps.ravel(), threshold).f1 == pytest.approx(f1, abs=1e-12)


def test_one_bin_per_distinct_value_is_exact_with_zero_bound():
    masks, maps = random_case(3, kind="ties")  # ~60 distinct values
    edges = quantile_edges(masks, maps, 4096)
    hist = histogram_of(masks, maps, edges)
    exact = exact_values(masks, maps)
    assert not hist.impure.any()
    assert hist.auroc() == pytest.approx(exact["auroc"], abs=1e-12) and hist.auroc_error_bound() == 0
    assert hist.aupr() == pytest.approx(exact["aupr"], abs=1e-12) and hist.aupr_error_bound() == 0
    assert hist.f1_max() == pytest.approx(exact["f1"], abs=1e-12) and hist.f1_max_error_bound() == 0
    assert hist.aupro() == pytest.approx(exact["aupro"], abs=1e-12) and hist.aupro_error_bound() == 0


# --- error within the bound ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "heavy_tail", "ties"])
@pytest.mark.parametrize("bins", [8, 128, 4096])
@pytest.mark.parametrize("edge_rule", ["quantile", "uniform"])
def test_error_is_within_the_computed_bound(kind, bins, edge_rule):
    masks, maps = random_case(bins + len(kind), kind=kind)
    edges = (quantile_edges(masks, maps, bins) if edge_rule == "quantile"
             else uniform_edges(float(maps.min()), float(maps.max()), bins))
    hist = histogram_of(masks, maps, edges)
    assert_within_bounds(hist, exact_values(masks, maps))


def test_quantile_bins_make_the_auroc_bound_about_one_over_bins():
    masks, maps = random_case(5, shape=(20, 64, 64), kind="heavy_tail")
    for bins in (256, 4096):
        hist = histogram_of(masks, maps, quantile_edges(masks, maps, bins))
        assert hist.auroc_error_bound() <= 1.0 / bins
    # A uniform range on heavy-tailed maps puts most pixels into a few bins: the bound says so.
    uniform = histogram_of(masks, maps, uniform_edges(float(maps.min()), float(maps.max()), 4096))
    assert uniform.auroc_error_bound() > 10 * hist.auroc_error_bound()


def test_adversarial_single_bin_reaches_the_bound():
    # Perfect separation inside one bin: exact AUROC 1, binned 0.5, and the bound is exactly 0.5 (tight).
    masks = np.zeros((1, 10, 10), dtype=bool)
    masks[0, :5] = True
    maps = np.where(masks, 0.55, 0.45).astype(np.float32) + np.linspace(0, 0.01, 100).reshape(1, 10, 10)
    hist = PixelHistogram(range=(0.0, 1.0), bins=1).add(masks, maps)
    assert pixel_auroc(masks, maps) == 1.0
    assert hist.auroc() == 0.5 and hist.auroc_error_bound() == 0.5
    assert_within_bounds(hist, exact_values(masks, maps))


def test_constant_maps_are_exact():
    masks, _ = random_case(2)
    maps = np.full(masks.shape, 0.3, dtype=np.float32)
    hist = PixelHistogram(range=(0.0, 1.0), bins=10).add(masks, maps)  # 0.3 is not a bin edge: impure bin
    assert hist.auroc() == 0.5 == pixel_auroc(masks, maps)
    assert hist.aupr() == pytest.approx(pixel_aupr(masks, maps))
    hist = PixelHistogram(quantile_edges(masks, maps)).add(masks, maps)  # 0.3 is the edge: exact
    assert hist.auroc() == 0.5 and hist.auroc_error_bound() == 0.0


# --- errors and memory --------------------------------------------------------------------------------------------


def test_undefined_and_invalid_input():
    masks = np.zeros((2, 4, 4), dtype=bool)
    maps = np.random.default_rng(0).random((2, 4, 4))
    hist = PixelHistogram(range=(0, 1)).add(masks, maps)  # no defect pixel
    with pytest.raises(UndefinedMetricError, match="anomalous"):
        hist.auroc()
    with pytest.raises(UndefinedMetricError):
        hist.aupro()
    with pytest.raises(ValueError, match="either edges"):
        PixelHistogram()
    with pytest.raises(ValueError, match="increasing"):
        PixelHistogram(edges=[0.0, 0.0, 1.0])
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        PixelHistogram(range=(0, 1)).add(masks, maps)
    masks[0, 0, 1] = True
    maps[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="regions=False"):
        PixelHistogram(range=(0, 1), regions=False).add(masks, maps).aupro()


def test_streaming_memory_does_not_grow_with_pixel_count():
    rng = np.random.default_rng(0)
    chunks = []  # made before tracing: the measurement is the accumulator's own memory
    for _ in range(2):
        masks = defect_masks(rng, (16, 256, 256), 8)  # 1M pixels per chunk
        chunks.append((masks, (rng.normal(size=masks.shape) + 2 * masks).astype(np.float32)))

    def peak_mb(n_chunks):
        hist = PixelHistogram(range=(-6.0, 9.0))
        tracemalloc.start()
        for i in range(n_chunks):
            hist.add(*chunks[i % 2])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20, hist

    small, _ = peak_mb(2)
    large, hist = peak_mb(20)  # 21M pixels
    assert int(hist.pos.sum() + hist.neg.sum()) == 20 * 16 * 256 * 256
    assert large < 40  # the per-step buffer (~20 MB), not the 84 MB of the pixels' float32 scores alone
    assert abs(large - small) < 1.0
    assert abs(hist.auroc() - pixel_auroc(chunks[0][0], chunks[0][1])) < 0.01  # sane value
