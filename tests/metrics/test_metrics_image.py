"""auroc, aupr, f1_max(_threshold) against scikit-learn and brute force, on random and adversarial inputs."""

from fractions import Fraction

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import aupr, auroc, f1_max, f1_max_threshold

SCENARIOS = ["continuous", "ties", "heavy_ties", "constant", "tiny", "imbalanced", "int_scores", "float64"]


def make_case(scenario, seed):
    """Random (labels, scores) with both classes present, shaped by the scenario."""
    rng = np.random.default_rng(seed)
    n = {"tiny": 2}.get(scenario, int(rng.integers(3, 400)))
    positive_rate = 0.03 if scenario == "imbalanced" else rng.uniform(0.1, 0.9)
    labels = rng.random(n) < positive_rate
    labels[rng.choice(n, 2, replace=False)] = [True, False]  # both classes
    scores = rng.normal(size=n) + labels * rng.uniform(0, 2)
    if scenario == "ties":
        scores = np.round(scores, 1)
    elif scenario == "heavy_ties":
        scores = np.round(rng.random(n), 1)  # at most 11 distinct values
    elif scenario == "constant":
        scores = np.full(n, 0.25)
    elif scenario == "int_scores":
        scores = rng.integers(0, 5, size=n)
    if scenario != "float64" and scores.dtype.kind == "f":
        scores = scores.astype(np.float32)
    # Alternate label encodings: bool, int 0/1, float 0/1.
    labels = [labels, labels.astype(np.int64), labels.astype(np.uint8), labels.astype(np.float32)][seed % 4]
    return labels, scores


def sklearn_f1_max(labels, scores):
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return f1.max()


def brute_force_best_f1(labels, scores):
    """(best F1, highest threshold reaching it) by predicting `score >= t` at every distinct score."""
    labels = np.asarray(labels).astype(bool)
    best = (-1.0, None)
    for t in np.unique(scores)[::-1]:
        f1 = f1_of_prediction(labels, scores >= t)
        if f1 > best[0]:
            best = (f1, t)
    return best


def f1_of_prediction(labels, predicted):
    labels = np.asarray(labels).astype(bool)
    tp = np.sum(predicted & labels)
    return 2 * tp / (2 * tp + np.sum(predicted & ~labels) + np.sum(~predicted & labels))


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("seed", range(12))
def test_matches_sklearn(scenario, seed):
    labels, scores = make_case(scenario, seed)
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert aupr(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert f1_max(labels, scores) == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-12)


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("seed", range(6))
def test_f1_threshold_reproduces_f1_and_is_the_highest_best(scenario, seed):
    labels, scores = make_case(scenario, seed)
    f1, threshold = f1_max_threshold(labels, scores)
    assert isinstance(f1, float) and isinstance(threshold, float)
    assert f1_of_prediction(labels, scores >= threshold) == pytest.approx(f1, abs=1e-12)
    ref_f1, ref_threshold = brute_force_best_f1(labels, scores)
    assert f1 == pytest.approx(ref_f1, abs=1e-12)
    assert threshold == ref_threshold


@pytest.mark.parametrize("seed", range(10))
def test_auroc_is_exactly_the_mann_whitney_probability(seed):
    # P(s_anomalous > s_normal) + 0.5 P(tie), as an exact fraction, then rounded once: equality, no tolerance.
    rng = np.random.default_rng(seed)
    labels = rng.random(60) < 0.4
    labels[:2] = [True, False]
    scores = rng.integers(0, 6, size=60).astype(np.float32)
    pos, neg = scores[labels][:, None], scores[~labels][None, :]
    wins = 2 * int(np.sum(pos > neg)) + int(np.sum(pos == neg))
    assert auroc(labels, scores) == float(Fraction(wins, 2 * pos.size * neg.size))


def test_bool_and_int_labels_agree():
    rng = np.random.default_rng(3)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.random(300), 1)
    for metric in (auroc, aupr, f1_max):
        assert metric(labels, scores) == metric(labels.astype(int), scores) == metric(list(labels), list(scores))


def test_constant_scores_are_well_defined():
    labels = np.array([1, 0, 0, 1, 0, 0, 0, 0])  # positive rate 1/4
    scores = np.full(8, 3.0, dtype=np.float32)
    assert auroc(labels, scores) == 0.5
    assert aupr(labels, scores) == 0.25
    # Everything predicted anomalous: precision 1/4, recall 1 -> F1 = 2 * 2 / (2 * 2 + 6) = 0.4.
    assert f1_max_threshold(labels, scores) == (pytest.approx(0.4), 3.0)


def test_hand_computed_small_cases():
    assert auroc([0, 1], [0.1, 0.9]) == 1.0
    assert auroc([0, 1], [0.9, 0.1]) == 0.0
    assert auroc([0, 1], [0.5, 0.5]) == 0.5
    # Ranking: 1 (0.9), 0 (0.8), 1 (0.7): precision at the positives 1 and 2/3 -> AP = (1 + 2/3) / 2.
    assert aupr([1, 0, 1], [0.9, 0.8, 0.7]) == pytest.approx(5 / 6)
    assert f1_max_threshold([1, 0, 1], [0.9, 0.8, 0.7]) == (pytest.approx(0.8), pytest.approx(0.7))


@pytest.mark.parametrize("metric", [auroc, aupr, f1_max, f1_max_threshold])
@pytest.mark.parametrize("labels, missing", [([0, 0, 0], "no anomalous"), ([1, 1, 1], "no normal")])
def test_single_class_raises_undefined_metric_naming_the_missing_class(metric, labels, missing):
    with pytest.raises(UndefinedMetricError, match=missing):
        metric(labels, [0.1, 0.5, 0.9])


@pytest.mark.parametrize("metric", [auroc, aupr, f1_max, f1_max_threshold])
def test_empty_and_nan_inputs_raise(metric):
    with pytest.raises(ValueError, match="empty"):
        metric([], [])
    with pytest.raises(ValueError, match="NaN"):
        metric([0, 1, 1], [0.1, np.nan, 0.3])
