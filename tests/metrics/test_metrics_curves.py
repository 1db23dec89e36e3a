"""binary_clf_curve: counts at every distinct threshold against a brute-force count, and input validation."""

import tracemalloc

import numpy as np
import pytest

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import binary_clf_curve


def brute_force_curve(labels, scores):
    labels = np.asarray(labels).astype(bool)
    thresholds = np.unique(scores)[::-1]
    fps = np.array([np.sum((scores >= t) & ~labels) for t in thresholds])
    tps = np.array([np.sum((scores >= t) & labels) for t in thresholds])
    return fps, tps, thresholds


@pytest.mark.parametrize("seed", range(20))
def test_counts_match_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 200))
    labels = rng.random(n) < rng.random()
    scores = np.round(rng.normal(size=n), int(rng.integers(0, 3))).astype(np.float32)
    fps, tps, thresholds = binary_clf_curve(labels, scores)
    ref_fps, ref_tps, ref_thresholds = brute_force_curve(labels, scores)
    np.testing.assert_array_equal(thresholds, ref_thresholds)
    np.testing.assert_array_equal(fps, ref_fps)
    np.testing.assert_array_equal(tps, ref_tps)


def test_keeps_score_dtype_and_returns_integer_counts():
    fps, tps, thresholds = binary_clf_curve(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.7], dtype=np.float32))
    assert thresholds.dtype == np.float32
    assert fps.dtype.kind == "i" and tps.dtype.kind == "i"
    np.testing.assert_array_equal(tps, [2, 2])
    np.testing.assert_array_equal(fps, [0, 1])


def test_single_class_is_a_valid_curve():
    # Undefinedness is the metrics' business; the curve itself exists.
    fps, tps, _ = binary_clf_curve(np.zeros(4, bool), np.arange(4.0))
    np.testing.assert_array_equal(tps, 0)
    np.testing.assert_array_equal(fps, [1, 2, 3, 4])


def test_no_float64_copy_of_large_float32_scores():
    # Budget: argsort indices (8 B/item) + sorted float32 scores (4) + run flags (1) + sorted labels (1) + sort
    # buffers. A float64 copy of the scores would add 8 B/item and break the budget.
    rng = np.random.default_rng(0)
    n = 1_000_000
    labels = rng.random(n) < 0.1
    scores = np.round(rng.random(n), 3).astype(np.float32)
    tracemalloc.start()
    try:
        binary_clf_curve(labels, scores)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / n < 22, f"{peak / n:.1f} bytes per item"


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([], [], "empty"),
        ([0, 1, 1], [0.1, 0.2], "3 items but scores has 2"),
        ([0, 1], [0.1, np.nan], "NaN/inf"),
        ([0, 1], [np.inf, 0.2], "NaN/inf"),
        ([0, 2], [0.1, 0.2], "0/255"),
        ([0, -1], [0.1, 0.2], "only 0/1"),
        ([0.0, 0.5], [0.1, 0.2], "only 0/1"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
        (["a", "b"], [0.1, 0.2], "dtype"),
    ],
)
def test_invalid_input_raises_value_error_naming_the_problem(labels, scores, match):
    with pytest.raises(ValueError, match=match) as info:
        binary_clf_curve(labels, scores)
    # Invalid input is a bug, not an undefined metric: compute_metrics must not swallow it.
    assert not isinstance(info.value, UndefinedMetricError)


def test_float16_scores_give_the_same_curve_as_float64():
    """float16 maps are sorted through 16-bit keys (a radix sort); the curve must not change."""
    from vadkit.metrics.curves import binary_clf_curve

    rng = np.random.default_rng(5)
    scores = rng.normal(size=5000).astype(np.float16)
    scores[:50] = -0.0
    scores[50:100] = 0.0
    scores[100:110] = np.float16(-65504.0)
    labels = rng.random(5000) < 0.3
    fps16, tps16, thresholds16 = binary_clf_curve(labels, scores)
    fps, tps, thresholds = binary_clf_curve(labels, scores.astype(np.float64))
    assert np.array_equal(fps16, fps) and np.array_equal(tps16, tps)
    assert np.array_equal(thresholds16.astype(np.float64), thresholds)


def test_subset_runs_equal_a_fresh_sort_of_the_subset():
    """Filtering the sorted order of all pixels gives exactly the curves of a subset sorted on its own."""
    from vadkit.metrics.curves import binary_clf_curve, sort_score_runs, subset_runs

    rng = np.random.default_rng(3)
    n_images, block = 9, 50
    scores = np.round(rng.normal(size=n_images * block), 1).astype(np.float16)  # many ties
    labels = rng.random(n_images * block) < 0.2
    runs = sort_score_runs(scores)
    keep = np.array([1, 0, 1, 1, 0, 0, 1, 0, 1], dtype=bool)
    kept = subset_runs(runs, scores, keep, block)
    sub_scores = scores.reshape(n_images, block)[keep].ravel()
    sub_labels = labels.reshape(n_images, block)[keep].ravel()
    fresh = sort_score_runs(sub_scores)
    np.testing.assert_array_equal(kept.thresholds, fresh.thresholds)
    np.testing.assert_array_equal(kept.counts, fresh.counts)
    np.testing.assert_array_equal(np.sort(kept.order), np.arange(sub_scores.size))
    assert np.all(np.diff(sub_scores[kept.order].astype(np.float64)) <= 0)
    fps, tps, thresholds = binary_clf_curve(sub_labels, sub_scores)
    tps_kept = kept.cumulative(sub_labels)
    np.testing.assert_array_equal(tps_kept, tps)
    np.testing.assert_array_equal(kept.counts - tps_kept, fps)
    with pytest.raises(ValueError, match="blocks"):
        subset_runs(runs, scores, keep[:5], block)
