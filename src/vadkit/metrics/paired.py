"""Comparing two runs (models, settings) on the same test set: paired tests and intervals of the difference.

Two models scored on the same images make correlated errors (the same hard images trip both), so comparing
their two independent intervals wastes power: the paired difference varies much less than either metric.
Every function here uses the pairing, reports the difference as **B - A** (positive: B is better for these
higher-is-better metrics), and never returns NaN (``None`` where a value does not exist).

- ``delong_test``: image AUROC. DeLong, DeLong & Clarke-Pearson, "Comparing the areas under two or more
  correlated receiver operating characteristic curves: a nonparametric approach", Biometrics 44 (1988). The
  AUROC is a U-statistic; its variance is estimated from the *structural components*
  V10(x_i) = (1/n) sum_j psi(x_i, y_j) for each anomalous item and V01(y_j) = (1/m) sum_i psi(x_i, y_j) for each
  normal item (psi = 1 if x > y, 1/2 if tied, 0 otherwise; m anomalous, n normal items):
  S = cov(V10) / m + cov(V01) / n (2 x 2, one row per run), Var(B - A) = S_aa + S_bb - 2 S_ab, and
  z = (AUC_B - AUC_A) / sqrt(Var) is asymptotically standard normal (two-sided p-value, Wald interval).
  Computed with the midrank algorithm of Sun & Xu, "Fast implementation of DeLong's algorithm for comparing
  the areas under correlated receiver operating characteristic curves", IEEE Signal Processing Letters 21
  (2014): V10 = (midrank among all - midrank among anomalous) / n, in O((m + n) log(m + n)) instead of O(m n);
  midranks make ties count 1/2, as in the AUROC.
- ``paired_bootstrap``: any image metric (AUROC, AUPR, F1-max). The same resampled images (stratified by
  class, as ``bootstrap.py``) for both runs; the percentile interval of the replicate differences; the
  two-sided p-value is the bootstrap test that inverts that interval:
  p = min(1, 2 min((1 + #{d* <= 0}) / (R + 1), (1 + #{d* >= 0}) / (R + 1))), the smallest alpha whose
  (1 - alpha) percentile interval excludes 0 (the +1 terms, Davison & Hinkley 1997, keep p > 0 with finite R).
  ``statistic`` is the difference over its bootstrap standard error.
- ``wilcoxon_per_image``: per-image values (e.g. AUPIMO, Bertoldo et al., "AUPIMO: redefining visual anomaly
  detection benchmarks with high speed and low tolerance", 2024, who recommend comparing models image by
  image). ``scipy.stats.wilcoxon`` on the paired differences; pairs where either value is NaN (not applicable)
  are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.bootstrap import (
    _check_metrics,
    _check_settings,
    _image_metric,
    _image_setup,
    _SortedScores,
    replicate_counts,
)
from vadkit.metrics.curves import validate_labels, validate_scores

__all__ = ["PairedTest", "delong_test", "paired_bootstrap", "wilcoxon_per_image"]


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired comparison of run A and run B.

    Attributes:
        statistic: the test statistic (DeLong: z; paired bootstrap: difference / bootstrap standard error;
            Wilcoxon: scipy's signed-rank statistic), or None when it does not exist (zero variance).
        p_value: two-sided p-value of "no difference".
        estimate_a, estimate_b: the metric of each run (Wilcoxon: the mean of the values it used).
        difference: B - A (Wilcoxon: the median of the per-image differences B - A).
        ci_low, ci_high: confidence interval of ``difference``, or None.
        method: the test, in words.
        n: units compared (images, or image pairs for Wilcoxon).
        n_excluded: pairs left out (Wilcoxon: NaN = not applicable in either run).
        confidence: nominal coverage of the interval.
    """

    statistic: float | None
    p_value: float
    estimate_a: float
    estimate_b: float
    difference: float
    ci_low: float | None
    ci_high: float | None
    method: str
    n: int
    n_excluded: int = 0
    confidence: float = 0.95


def _paired_inputs(labels, scores_a, scores_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = validate_labels(labels)
    scores_a = validate_scores(scores_a, name="scores_a")
    scores_b = validate_scores(scores_b, name="scores_b")
    if not (labels.size == scores_a.size == scores_b.size):
        raise ValueError(
            f"labels, scores_a and scores_b have {labels.size}, {scores_a.size} and {scores_b.size} items: a "
            "paired comparison needs both runs scored on the same test images, in the same order."
        )
    return labels, scores_a, scores_b


def delong_test(labels, scores_a, scores_b, confidence: float = 0.95) -> PairedTest:
    """DeLong's test of AUROC B - A for two runs scored on the same items (see the module docstring).

    Args:
        labels: (n,) bool or 0/1 shared by both runs. scores_a, scores_b: (n,) finite scores of runs A and B.
        confidence: coverage of the Wald interval of the difference.

    Raises:
        UndefinedMetricError: fewer than 2 anomalous or 2 normal items (the variance needs two of each).
        ValueError: different lengths, bad labels, NaN scores.
    """
    from scipy import stats  # here, not at import: scipy.stats costs 0.7 s of every CLI start

    _, confidence = _check_settings(1, confidence)
    labels, scores_a, scores_b = _paired_inputs(labels, scores_a, scores_b)
    m, n = int(np.count_nonzero(labels)), int(np.count_nonzero(~labels))
    if m < 2 or n < 2:
        raise UndefinedMetricError(
            f"DeLong's test is undefined with {m} anomalous and {n} normal items: its variance needs at least "
            "2 of each."
        )
    both = np.stack([scores_a, scores_b]).astype(np.float64)
    positives, negatives = both[:, labels], both[:, ~labels]
    rank_all = stats.rankdata(np.concatenate([positives, negatives], axis=1), axis=1)  # midranks
    rank_pos, rank_neg = stats.rankdata(positives, axis=1), stats.rankdata(negatives, axis=1)
    v10 = (rank_all[:, :m] - rank_pos) / n  # per anomalous item: share of normal items below it (ties 1/2)
    v01 = 1.0 - (rank_all[:, m:] - rank_neg) / m  # per normal item: share of anomalous items above it
    auc_a, auc_b = v10.mean(axis=1)
    covariance = np.cov(v10) / m + np.cov(v01) / n
    variance = float(covariance[0, 0] + covariance[1, 1] - 2 * covariance[0, 1])
    difference = float(auc_b - auc_a)
    method = ("DeLong, DeLong & Clarke-Pearson (1988) paired AUROC test, midrank algorithm of Sun & Xu (2014); "
              "z test and Wald interval of AUROC B - A")
    if variance <= 0.0:
        # Zero variance: the structural components of the two runs differ by a constant; the difference is
        # then the same on every resample (e.g. identical rankings: 0).
        statistic, p_value = (0.0, 1.0) if difference == 0.0 else (None, 0.0)
        return PairedTest(statistic, p_value, float(auc_a), float(auc_b), difference, difference, difference,
                          method, m + n, 0, confidence)
    se = np.sqrt(variance)
    z = difference / se
    half_width = stats.norm.ppf((1 + confidence) / 2) * se
    return PairedTest(
        statistic=float(z), p_value=float(2 * stats.norm.sf(abs(z))), estimate_a=float(auc_a),
        estimate_b=float(auc_b), difference=difference, ci_low=float(max(-1.0, difference - half_width)),
        ci_high=float(min(1.0, difference + half_width)), method=method, n=m + n, confidence=confidence,
    )


def paired_bootstrap(labels, scores_a, scores_b, metric: str = "image_auroc", n_resamples: int = 1000,
                     confidence: float = 0.95, seed=0) -> PairedTest:
    """Paired bootstrap of an image metric's difference B - A: interval and two-sided p-value.

    Args:
        labels: (n,) shared labels. scores_a, scores_b: (n,) scores of runs A and B on the same images.
        metric: a registered metric with ``bootstrap="images"`` (vadkit's: ``image_auroc``, ``image_aupr``,
            ``image_f1_max``).
        n_resamples, confidence, seed: as ``bootstrap.bootstrap_image_ci`` (images resampled within each
            class, the same replicates for both runs).

    Raises:
        UndefinedMetricError: a single class. ValueError: different lengths, bad input, unknown metric.
    """
    (metric,) = _check_metrics(metric, "images")
    n_resamples, confidence = _check_settings(n_resamples, confidence)
    labels, scores_a, scores_b = _paired_inputs(labels, scores_a, scores_b)
    labels, _, strata = _image_setup(labels, scores_a)
    runs = [_SortedScores(labels, scores_a), _SortedScores(labels, scores_b)]
    ones = np.ones((1, labels.size), dtype=np.int64)
    estimate_a, estimate_b = (float(_image_metric(metric, *run.run_counts(ones))[0]) for run in runs)
    differences = []
    for counts in replicate_counts(np.random.default_rng(seed), strata, labels.size, n_resamples):
        value_a, value_b = (_image_metric(metric, *run.run_counts(counts)) for run in runs)
        differences.append(value_b - value_a)
    differences = np.concatenate(differences)
    difference = estimate_b - estimate_a
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    at_most_zero, at_least_zero = np.count_nonzero(differences <= 0), np.count_nonzero(differences >= 0)
    p_value = min(1.0, 2 * min(1 + at_most_zero, 1 + at_least_zero) / (n_resamples + 1))
    se = float(np.std(differences, ddof=1)) if n_resamples > 1 else 0.0
    statistic = difference / se if se > 0 else (0.0 if difference == 0 else None)
    method = (f"paired percentile bootstrap of {metric} B - A, {n_resamples} resamples of the images stratified "
              f"by class, seed {seed}; p-value inverts the percentile interval")
    return PairedTest(statistic=statistic, p_value=float(p_value), estimate_a=estimate_a, estimate_b=estimate_b,
                      difference=float(difference), ci_low=float(low), ci_high=float(high), method=method,
                      n=labels.size, confidence=confidence)


def wilcoxon_per_image(values_a, values_b, confidence: float = 0.95) -> PairedTest:
    """Wilcoxon signed-rank test on paired per-image values (e.g. AUPIMO of each image under runs A and B).

    Pairs where either value is NaN (not applicable, e.g. AUPIMO of a normal image) are left out and counted in
    ``n_excluded``. Zero differences are dropped by the test (scipy's ``zero_method="wilcox"``); exact p-values
    for small samples without ties, the normal approximation otherwise (scipy's ``method="auto"``).
    ``difference`` is the median of the per-image differences B - A, with a distribution-free interval for
    that median (order statistics of the differences, binomial(n, 1/2) ranks; coverage >= ``confidence``;
    None when there are too few pairs for any such interval). The estimates are the means of each run's
    values over the pairs used. For an interval of the *mean* difference use
    ``bootstrap_mean_ci(values_b - values_a)``.

    Raises:
        UndefinedMetricError: no pair where both values apply. ValueError: different lengths, ±inf values.
    """
    from scipy import stats  # here, not at import: scipy.stats costs 0.7 s of every CLI start

    _, confidence = _check_settings(1, confidence)
    values_a, values_b = (np.asarray(v, dtype=np.float64) for v in (values_a, values_b))
    if values_a.ndim != 1 or values_a.shape != values_b.shape:
        raise ValueError(
            f"values_a and values_b must be 1-D with one value per image, in the same image order; got shapes "
            f"{values_a.shape} and {values_b.shape}."
        )
    if np.isinf(values_a).any() or np.isinf(values_b).any():
        raise ValueError("per-image values must be finite (NaN = not applicable); found ±inf.")
    keep = ~(np.isnan(values_a) | np.isnan(values_b))
    n = int(keep.sum())
    if n == 0:
        raise UndefinedMetricError(
            f"the Wilcoxon test is undefined: none of the {keep.size} image pairs has a value in both runs."
        )
    a, b = values_a[keep], values_b[keep]
    differences = b - a
    method = ("Wilcoxon signed-rank test on per-image B - A (scipy.stats.wilcoxon, zero differences dropped); "
              "difference = median, order-statistic interval")
    if not differences.any():
        statistic, p_value = 0.0, 1.0
    else:
        result = stats.wilcoxon(differences, zero_method="wilcox", alternative="two-sided")
        statistic, p_value = float(result.statistic), float(result.pvalue)
    low, high = _median_interval(np.sort(differences), confidence)
    return PairedTest(statistic=statistic, p_value=p_value, estimate_a=float(a.mean()), estimate_b=float(b.mean()),
                      difference=float(np.median(differences)), ci_low=low, ci_high=high, method=method, n=n,
                      n_excluded=int(keep.size - n), confidence=confidence)


def _median_interval(sorted_values: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """[x_(k), x_(n+1-k)] with the largest k such that P(Binomial(n, 1/2) <= k - 1) <= (1 - confidence) / 2."""
    from scipy import stats  # here, not at import: scipy.stats costs 0.7 s of every CLI start

    n = sorted_values.size
    cdf = stats.binom.cdf(np.arange(n + 1), n, 0.5)
    k = int(np.count_nonzero(cdf <= (1 - confidence) / 2))  # cdf is increasing: cdf[j] <= alpha/2 for j < k
    if k == 0:
        return None, None
    return float(sorted_values[k - 1]), float(sorted_values[n - k])
