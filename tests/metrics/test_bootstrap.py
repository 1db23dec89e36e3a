"""Bootstrap intervals: every replicate equals scikit-learn with sample weights, seeds, strata, coverage."""

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import (
    PixelHistogram,
    aupr,
    aupro,
    auroc,
    bootstrap_image_ci,
    bootstrap_mean_ci,
    bootstrap_pixel_ci,
    f1_max,
    pixel_aupr,
    pixel_auroc,
    pixel_f1_max,
    quantile_edges,
)
from vadkit.metrics.bootstrap import bootstrap_image_replicates, bootstrap_pixel_replicates, replicate_counts


def image_case(seed, n=80, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.35
    labels[:2] = [True, False]
    scores = rng.normal(size=n) + labels
    if ties:
        scores = np.round(scores, 0)  # few distinct values: many tied runs
    return labels, scores


def image_strata(labels):
    return [np.flatnonzero(labels), np.flatnonzero(~labels)]


def weighted_f1_max(labels, scores, weights):
    precision, recall, _ = precision_recall_curve(labels, scores, sample_weight=weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return f1.max()


@pytest.mark.parametrize("ties", [False, True])
def test_every_replicate_equals_sklearn_with_sample_weights(ties):
    labels, scores = image_case(0, ties=ties)
    replicates = bootstrap_image_replicates(labels, scores, n_resamples=70, seed=3)  # two blocks (64 + 6)
    blocks = replicate_counts(np.random.default_rng(3), image_strata(labels), labels.size, 70)
    counts = np.concatenate(list(blocks))
    assert counts.shape == (70, labels.size)
    for r, weights in enumerate(counts):
        assert replicates["image_auroc"][r] == pytest.approx(
            roc_auc_score(labels, scores, sample_weight=weights), abs=1e-12)
        assert replicates["image_aupr"][r] == pytest.approx(
            average_precision_score(labels, scores, sample_weight=weights), abs=1e-12)
        assert replicates["image_f1_max"][r] == pytest.approx(weighted_f1_max(labels, scores, weights), abs=1e-12)


def test_replicates_are_stratified_by_class():
    labels, _ = image_case(1)
    for counts in replicate_counts(np.random.default_rng(0), image_strata(labels), labels.size, 100):
        assert (counts[:, labels].sum(axis=1) == labels.sum()).all()
        assert (counts[:, ~labels].sum(axis=1) == (~labels).sum()).all()
        assert counts.min() >= 0


def test_interval_is_the_percentile_of_the_replicates_and_estimate_is_exact():
    labels, scores = image_case(2)
    intervals = bootstrap_image_ci(labels, scores, n_resamples=300, confidence=0.9, seed=5)
    replicates = bootstrap_image_replicates(labels, scores, n_resamples=300, seed=5)
    for name, exact in [("image_auroc", auroc), ("image_aupr", aupr), ("image_f1_max", f1_max)]:
        interval = intervals[name]
        assert interval.estimate == pytest.approx(exact(labels, scores), abs=1e-12)
        assert (interval.low, interval.high) == tuple(np.quantile(replicates[name], [0.05, 0.95]))
        assert interval.low <= interval.estimate <= interval.high
        assert interval.n_resamples == 300 and interval.confidence == 0.9 and interval.error_bound is None
        assert "stratified" in interval.method


def test_seeds_reproduce_and_differ():
    labels, scores = image_case(3)
    first = bootstrap_image_ci(labels, scores, n_resamples=200, seed=7)
    again = bootstrap_image_ci(labels, scores, n_resamples=200, seed=7)
    other = bootstrap_image_ci(labels, scores, n_resamples=200, seed=8)
    assert first == again
    assert (first["image_auroc"].low, first["image_auroc"].high) != (other["image_auroc"].low,
                                                                    other["image_auroc"].high)
    # Fixed draw blocks: the first 64 replicates of a longer run are those of a shorter one.
    short = bootstrap_image_replicates(labels, scores, n_resamples=64, seed=7)["image_auroc"]
    long = bootstrap_image_replicates(labels, scores, n_resamples=200, seed=7)["image_auroc"]
    np.testing.assert_array_equal(short, long[:64])


def test_constant_scores_and_single_class():
    labels = np.array([0, 1] * 10)
    interval = bootstrap_image_ci(labels, np.ones(20), n_resamples=50)["image_auroc"]
    assert interval.low == interval.high == interval.estimate == 0.5
    with pytest.raises(UndefinedMetricError, match="anomalous"):
        bootstrap_image_ci(np.zeros(10), np.arange(10.0))
    with pytest.raises(ValueError, match="unknown metric"):
        bootstrap_image_ci(labels, np.ones(20), metrics=("image_auroc", "pixel_auroc"))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_image_ci(labels, np.ones(20), confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_image_ci(labels, np.ones(20), n_resamples=0)


def test_percentile_interval_covers_the_true_auroc_about_95_percent_of_the_time():
    # Binormal model: anomalous ~ N(d, 1), normal ~ N(0, 1): the true AUROC is Phi(d / sqrt(2)).
    d, n_pos, n_neg, simulations = 1.0, 40, 60, 200
    true_auroc = norm.cdf(d / np.sqrt(2))
    rng = np.random.default_rng(2024)
    labels = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    covered = 0
    for sim in range(simulations):
        scores = np.r_[rng.normal(d, 1, n_pos), rng.normal(0, 1, n_neg)]
        interval = bootstrap_image_ci(labels, scores, metrics="image_auroc", n_resamples=200, seed=sim)
        covered += interval["image_auroc"].low <= true_auroc <= interval["image_auroc"].high
    coverage = covered / simulations
    assert 0.88 <= coverage <= 0.99, coverage  # binomial sd at 95%: 1.5 points


# --- pixel --------------------------------------------------------------------------------------------------------


def pixel_case(seed, n_images=10, size=24):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_images, size, size), dtype=bool)
    for i in range(n_images // 2):
        top, left = rng.integers(0, size - 8, 2)
        masks[i, top:top + int(rng.integers(3, 8)), left:left + int(rng.integers(3, 8))] = True
    maps = (rng.normal(size=masks.shape) + 1.5 * masks).astype(np.float32)
    return masks, maps


def test_pixel_replicates_equal_the_histogram_of_the_resampled_images():
    masks, maps = pixel_case(0)
    edges = quantile_edges(masks, maps, 256)
    replicates = bootstrap_pixel_replicates(masks, maps, n_resamples=20, seed=1, edges=edges)
    defective = masks.any(axis=(1, 2))
    strata = [np.flatnonzero(defective), np.flatnonzero(~defective)]
    counts = next(replicate_counts(np.random.default_rng(1), strata, len(masks), 20))
    for r in (0, 7, 19):
        drawn = np.repeat(np.arange(len(masks)), counts[r])  # the resampled test set, explicitly
        hist = PixelHistogram(edges).add(masks[drawn], maps[drawn])
        assert replicates["pixel_auroc"][r] == pytest.approx(hist.auroc(), abs=1e-12)
        assert replicates["pixel_aupr"][r] == pytest.approx(hist.aupr(), abs=1e-12)
        assert replicates["pixel_f1_max"][r] == pytest.approx(hist.f1_max(), abs=1e-12)
        assert replicates["pixel_aupro"][r] == pytest.approx(hist.aupro(), abs=1e-12)
        assert replicates["pixel_aupro_005"][r] == pytest.approx(hist.aupro(0.05), abs=1e-12)
        # ... and within the bound of the exact metric of the resampled set (regions of repeated images count
        # once per copy, like any other image).
        assert abs(hist.auroc() - pixel_auroc(masks[drawn], maps[drawn])) <= hist.auroc_error_bound() + 1e-12
        assert abs(hist.aupro() - aupro(masks[drawn], maps[drawn])) <= hist.aupro_error_bound() + 1e-12


def test_pixel_interval_estimates_are_within_their_bound_of_the_exact_values():
    masks, maps = pixel_case(1, n_images=12)
    intervals = bootstrap_pixel_ci(masks, maps, n_resamples=100, seed=0)
    exact = {"pixel_auroc": pixel_auroc(masks, maps), "pixel_aupr": pixel_aupr(masks, maps),
             "pixel_f1_max": pixel_f1_max(masks, maps), "pixel_aupro": aupro(masks, maps),
             "pixel_aupro_005": aupro(masks, maps, 0.05)}
    for name, value in exact.items():
        interval = intervals[name]
        assert abs(interval.estimate - value) <= interval.error_bound + 1e-12
        assert interval.low <= interval.estimate + interval.error_bound
        assert interval.high >= interval.estimate - interval.error_bound
        assert interval.high > interval.low  # resampling images moves the metric
    again = bootstrap_pixel_ci(masks, maps, n_resamples=100, seed=0)
    assert again == intervals
    assert bootstrap_pixel_ci(masks, maps, n_resamples=100, seed=1)["pixel_auroc"] != intervals["pixel_auroc"]


def test_pixel_bootstrap_undefined_without_defects():
    masks, maps = pixel_case(2)
    with pytest.raises(UndefinedMetricError, match="anomalous"):
        bootstrap_pixel_ci(np.zeros_like(masks), maps, n_resamples=10)


# --- mean of per-image values -------------------------------------------------------------------------------------


def test_mean_interval_ignores_not_applicable_values():
    rng = np.random.default_rng(0)
    values = rng.random(30)
    with_nan = np.r_[values, [np.nan] * 5]
    interval = bootstrap_mean_ci(with_nan, n_resamples=300, seed=2)
    assert interval.estimate == pytest.approx(values.mean())
    without_nan = bootstrap_mean_ci(values, n_resamples=300, seed=2)
    assert (interval.low, interval.high, interval.n_resamples) == (without_nan.low, without_nan.high, 300)
    counts = next(replicate_counts(np.random.default_rng(2), [np.arange(30)], 30, 64))
    independent = np.array([np.repeat(values, c).mean() for c in counts])
    replicate_means = counts @ values / 30
    np.testing.assert_allclose(replicate_means, independent)
    assert interval.low < values.mean() < interval.high
    assert "5 not applicable" in interval.method
    with pytest.raises(UndefinedMetricError):
        bootstrap_mean_ci([np.nan, np.nan])
    with pytest.raises(ValueError, match="inf"):
        bootstrap_mean_ci([0.5, np.inf])
