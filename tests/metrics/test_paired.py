"""Paired comparisons: DeLong against a brute-force structural-components reference and published data,
paired bootstrap against independently computed replicates, Wilcoxon against scipy."""

import numpy as np
import pytest
from scipy import stats

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import auroc, delong_test, paired_bootstrap, wilcoxon_per_image
from vadkit.metrics.bootstrap import bootstrap_image_replicates


def two_runs(seed, n=120, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    labels[:4] = [True, True, False, False]
    shared = rng.normal(size=n)  # the same hard images trip both runs: correlated scores
    scores_a = shared + 1.0 * labels + 0.5 * rng.normal(size=n)
    scores_b = shared + 1.3 * labels + 0.5 * rng.normal(size=n)
    if ties:
        scores_a, scores_b = np.round(scores_a), np.round(scores_b)
    return labels, scores_a, scores_b


def brute_force_delong(labels, scores_a, scores_b):
    """O(m n) DeLong: psi matrices, structural components V10 / V01, their covariances."""
    components = []
    for scores in (scores_a, scores_b):
        x, y = scores[labels][:, None], scores[~labels][None, :]
        psi = (x > y) + 0.5 * (x == y)  # (m, n)
        components.append((psi.mean(axis=1), psi.mean(axis=0)))  # V10 per anomalous, V01 per normal item
    m, n = int(labels.sum()), int((~labels).sum())
    v10 = np.stack([c[0] for c in components])
    v01 = np.stack([c[1] for c in components])
    s = np.cov(v10, ddof=1) / m + np.cov(v01, ddof=1) / n
    variance = s[0, 0] + s[1, 1] - 2 * s[0, 1]
    aucs = v10.mean(axis=1)
    z = (aucs[1] - aucs[0]) / np.sqrt(variance)
    return aucs, z, 2 * stats.norm.sf(abs(z)), np.sqrt(variance)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_delong_equals_brute_force_structural_components(seed, ties):
    labels, scores_a, scores_b = two_runs(seed, ties=ties)
    result = delong_test(labels.astype(np.int64), scores_a, scores_b)
    aucs, z, p, se = brute_force_delong(labels, scores_a, scores_b)
    assert result.estimate_a == pytest.approx(auroc(labels, scores_a), abs=1e-12)
    assert result.estimate_a == pytest.approx(aucs[0], abs=1e-12)
    assert result.estimate_b == pytest.approx(aucs[1], abs=1e-12)
    assert result.difference == pytest.approx(aucs[1] - aucs[0], abs=1e-12)
    assert result.statistic == pytest.approx(z, rel=1e-9)
    assert result.p_value == pytest.approx(p, rel=1e-9)
    half = stats.norm.ppf(0.975) * se
    assert result.ci_low == pytest.approx(aucs[1] - aucs[0] - half, abs=1e-12)
    assert result.ci_high == pytest.approx(aucs[1] - aucs[0] + half, abs=1e-12)
    assert result.n == labels.size and "DeLong" in result.method


def test_hanley_mcneil_rating_data():
    # Hanley & McNeil, Radiology 143 (1982), Table 1: CT ratings 1-5 of 58 normal and 51 abnormal patients
    # (five-level ratings: heavy ties). Published area 0.893, standard error 0.032 (their approximation).
    normal, abnormal = [33, 6, 6, 11, 2], [3, 2, 2, 11, 33]
    ratings = np.r_[np.repeat(np.arange(1, 6), normal), np.repeat(np.arange(1, 6), abnormal)].astype(float)
    labels = np.r_[np.zeros(58, bool), np.ones(51, bool)]
    # A constant run has AUROC 1/2 with zero-variance components, so Var(B - A) is the variance of A's AUROC.
    result = delong_test(labels, np.zeros(labels.size), ratings)
    assert round(result.estimate_b, 3) == 0.893
    se = result.difference / result.statistic
    assert se == pytest.approx(brute_force_delong(labels, np.zeros(labels.size), ratings)[3])
    assert se == pytest.approx(0.032, abs=0.003)  # DeLong's estimate (0.0307) near the published one


def test_identical_runs_and_null_calibration():
    labels, scores_a, _ = two_runs(0)
    same = delong_test(labels, scores_a, scores_a.copy())
    assert (same.statistic, same.p_value, same.difference) == (0.0, 1.0, 0.0)
    # Under "no difference" (two exchangeable runs) p < 0.05 about 5% of the time.
    rng = np.random.default_rng(1)
    rejections = 0
    for _ in range(300):
        labels = rng.random(80) < 0.5
        labels[:4] = [True, True, False, False]
        shared = rng.normal(size=80) + labels
        result = delong_test(labels, shared + 0.7 * rng.normal(size=80), shared + 0.7 * rng.normal(size=80))
        rejections += result.p_value < 0.05
    assert 0.02 <= rejections / 300 <= 0.09


def test_delong_errors():
    with pytest.raises(ValueError, match="same test images"):
        delong_test([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3])
    with pytest.raises(UndefinedMetricError):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(UndefinedMetricError, match="at least"):
        delong_test([1, 0, 0, 0], [0.4, 0.2, 0.3, 0.1], [0.1, 0.2, 0.3, 0.4])


@pytest.mark.parametrize("metric", ["image_auroc", "image_aupr", "image_f1_max"])
def test_paired_bootstrap_uses_the_same_images_for_both_runs(metric):
    labels, scores_a, scores_b = two_runs(3)
    result = paired_bootstrap(labels, scores_a, scores_b, metric=metric, n_resamples=300, seed=4)
    # The multiplicities depend only on the labels and the seed, so the separate replicates of A and B with
    # seed 4 are drawn from the same images: their difference is the paired bootstrap distribution.
    a = bootstrap_image_replicates(labels, scores_a, metric, n_resamples=300, seed=4)[metric]
    b = bootstrap_image_replicates(labels, scores_b, metric, n_resamples=300, seed=4)[metric]
    differences = b - a
    assert (result.ci_low, result.ci_high) == pytest.approx(tuple(np.quantile(differences, [0.025, 0.975])))
    expected_p = min(1.0, 2 * min(1 + np.sum(differences <= 0), 1 + np.sum(differences >= 0)) / 301)
    assert result.p_value == pytest.approx(expected_p)
    assert result.statistic == pytest.approx(result.difference / np.std(differences, ddof=1))
    assert result.difference == pytest.approx(result.estimate_b - result.estimate_a)


def test_paired_bootstrap_agrees_with_delong_and_is_sharper_than_unpaired():
    labels, scores_a, scores_b = two_runs(5, n=300)
    boot = paired_bootstrap(labels, scores_a, scores_b, n_resamples=1000, seed=0)
    delong = delong_test(labels, scores_a, scores_b)
    assert boot.difference == pytest.approx(delong.difference)
    boot_width, delong_width = boot.ci_high - boot.ci_low, delong.ci_high - delong.ci_low
    assert boot_width == pytest.approx(delong_width, rel=0.2)  # two estimates of the same variance
    assert (boot.p_value < 0.05) == (delong.p_value < 0.05)
    # Pairing removes the shared image difficulty: the difference is known better than either AUROC.
    a = bootstrap_image_replicates(labels, scores_a, "image_auroc", n_resamples=1000, seed=0)["image_auroc"]
    assert np.std(a) > (boot_width / 4) * 1.2
    same = paired_bootstrap(labels, scores_a, scores_a, n_resamples=200)
    assert same.p_value == 1.0 and same.ci_low == same.ci_high == 0.0 and same.statistic == 0.0


def test_paired_bootstrap_errors():
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="unknown metric"):
        paired_bootstrap([0, 1], [0.1, 0.2], [0.2, 0.1], metric="pixel_auroc")
    with pytest.raises(UndefinedMetricError):
        paired_bootstrap([1, 1], [0.1, 0.2], [0.2, 0.1])


def test_wilcoxon_equals_scipy_on_the_applicable_pairs():
    rng = np.random.default_rng(0)
    a = rng.random(40)
    b = a + rng.normal(0.05, 0.1, 40)
    a[[1, 5]] = np.nan  # e.g. AUPIMO of normal images: not applicable
    b[7] = np.nan
    result = wilcoxon_per_image(a, b)
    keep = ~(np.isnan(a) | np.isnan(b))
    reference = stats.wilcoxon(b[keep] - a[keep])
    assert result.statistic == reference.statistic and result.p_value == pytest.approx(reference.pvalue)
    assert (result.n, result.n_excluded) == (37, 3)
    assert result.difference == pytest.approx(np.median(b[keep] - a[keep]))
    assert result.estimate_a == pytest.approx(a[keep].mean())


def test_wilcoxon_median_interval_uses_the_sign_test_order_statistics():
    # n = 20 differences: P(Bin(20, 1/2) <= 5) = 0.0207 <= 0.025 < P(<= 6) = 0.0577, so the 95% interval of
    # the median is [x_(6), x_(15)] (1-based order statistics).
    differences = np.arange(1.0, 21.0) / 10 - 1.0
    result = wilcoxon_per_image(np.zeros(20), differences[::-1].copy())
    assert (result.ci_low, result.ci_high) == (differences[5], differences[14])
    small = wilcoxon_per_image(np.zeros(4), np.array([0.1, 0.2, -0.1, 0.3]))
    assert small.ci_low is None and small.ci_high is None  # 4 pairs: no 95% order-statistic interval exists


def test_wilcoxon_edge_cases():
    same = wilcoxon_per_image([0.2, 0.5, 0.9], [0.2, 0.5, 0.9])
    assert (same.statistic, same.p_value, same.difference) == (0.0, 1.0, 0.0)
    with pytest.raises(UndefinedMetricError, match="none of the 2"):
        wilcoxon_per_image([np.nan, 0.5], [0.1, np.nan])
    with pytest.raises(ValueError, match="same image order"):
        wilcoxon_per_image([0.1, 0.2], [0.1, 0.2, 0.3])
