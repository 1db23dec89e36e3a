"""Metrics at a threshold and thresholds for a target, against scikit-learn and brute-force scans."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, precision_score, recall_score

from vadkit.errors import UndefinedMetricError
from vadkit.metrics import (
    confusion_at,
    per_image_pixel_scores,
    pixel_confusion_at,
    threshold_for_fpr,
    threshold_for_recall,
)
from vadkit.metrics import thresholds as thresholds_module


def make_case(seed, ties=False):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    labels = rng.random(n) < rng.uniform(0.1, 0.6)
    labels[:2] = [True, False]
    scores = (rng.normal(size=n) + labels * 1.5).astype(np.float32)
    if ties:
        scores = np.round(scores, 0)
    return labels, scores


def brute_force_point(labels, scores, threshold):
    flagged = scores.astype(np.float64) >= threshold
    tp = int(np.sum(flagged & labels))
    fp = int(np.sum(flagged & ~labels))
    return tp, fp, int(labels.sum()) - tp, int((~labels).sum()) - fp


def candidate_thresholds(scores):
    """Every distinct score plus one threshold above them all: all distinct operating points."""
    distinct = np.unique(scores.astype(np.float64))
    return np.append(distinct, np.nextafter(distinct[-1], np.inf))


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("ties", [False, True])
def test_confusion_at_matches_sklearn(seed, ties):
    labels, scores = make_case(seed, ties)
    for threshold in np.quantile(scores, [0.0, 0.3, 0.7, 1.0]).tolist() + [float(scores[3])]:
        result = confusion_at(labels.astype(np.int64), scores, threshold)
        predicted = scores.astype(np.float64) >= threshold
        tn, fp, fn, tp = confusion_matrix(labels, predicted, labels=[False, True]).ravel()
        assert (result.tp, result.fp, result.tn, result.fn) == (tp, fp, tn, fn)
        assert result.recall == pytest.approx(recall_score(labels, predicted))
        assert result.miss_rate == pytest.approx(1 - recall_score(labels, predicted))
        assert result.fpr == pytest.approx(fp / (fp + tn))
        assert result.specificity == pytest.approx(tn / (fp + tn))
        if predicted.any():
            assert result.precision == pytest.approx(precision_score(labels, predicted))
        else:
            assert result.precision is None
        assert result.f1 == pytest.approx(f1_score(labels, predicted, zero_division=0.0))


def test_undefined_ratios_are_none_not_nan_or_zero():
    labels = np.array([0, 0, 0])
    result = confusion_at(labels, [0.1, 0.2, 0.3], 0.5)  # single class and nothing flagged
    assert (result.tp, result.fp, result.tn, result.fn) == (0, 0, 3, 0)
    assert result.precision is None and result.recall is None and result.miss_rate is None
    assert result.f1 is None  # no defect and no alarm: F1 does not apply
    assert result.fpr == 0.0 and result.specificity == 1.0
    result = confusion_at([1, 1, 0], [0.1, 0.2, 0.3], 0.25)  # defects exist, only the normal item is flagged
    assert result.f1 == 0.0 and result.precision == 0.0 and result.recall == 0.0


def test_threshold_comparison_is_exact_for_float16_scores():
    scores = np.array([0.1, 0.5], dtype=np.float16)  # float16(0.1) = 0.0999755859375 < 0.1
    result = confusion_at([1, 0], scores, 0.1)
    assert result.tp == 0 and result.fp == 1
    assert confusion_at([1, 0], scores, float(scores[0])).tp == 1  # a threshold equal to a score flags it


def test_bad_threshold_and_shapes_raise():
    with pytest.raises(ValueError, match="finite"):
        confusion_at([0, 1], [0.1, 0.2], float("nan"))
    with pytest.raises(ValueError, match="must match"):
        confusion_at([0, 1, 1], [0.1, 0.2], 0.1)


def brute_force_for_fpr(labels, scores, max_fpr):
    best = None
    for t in candidate_thresholds(scores):
        tp, fp, fn, tn = brute_force_point(labels, scores, t)
        if fp / (fp + tn) <= max_fpr and (best is None or t < best[0]):
            best = (t, tp, fp)
    return best


def brute_force_for_recall(labels, scores, min_recall):
    best = None
    for t in candidate_thresholds(scores):
        tp, fp, fn, tn = brute_force_point(labels, scores, t)
        if tp / (tp + fn) >= min_recall and (best is None or t > best[0]):
            best = (t, tp, fp)
    return best


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_threshold_for_fpr_is_the_lowest_admissible_threshold(seed, ties):
    labels, scores = make_case(seed, ties)
    n_neg = int((~labels).sum())
    for max_fpr in [0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 1 / n_neg, 3 / n_neg]:
        choice = threshold_for_fpr(labels, scores, max_fpr)
        threshold, tp, fp = brute_force_for_fpr(labels, scores, max_fpr)
        assert choice.threshold == threshold
        assert (choice.tp, choice.fp) == (tp, fp)
        assert choice.fpr <= max_fpr
        # The chosen threshold reproduces its own counts with the vadkit rule score >= threshold.
        assert confusion_at(labels, scores, choice.threshold).tp == choice.tp
        assert choice.recall + choice.miss_rate == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("ties", [False, True])
def test_threshold_for_recall_is_the_highest_admissible_threshold(seed, ties):
    labels, scores = make_case(seed, ties)
    n_pos = int(labels.sum())
    for min_recall in [0.0, 0.5, 0.9, 0.95, 0.99, 1.0, 1 / n_pos, (n_pos - 1) / n_pos]:
        choice = threshold_for_recall(labels, scores, min_recall)
        threshold, tp, fp = brute_force_for_recall(labels, scores, min_recall)
        assert choice.threshold == threshold
        assert (choice.tp, choice.fp) == (tp, fp)
        assert choice.recall >= min_recall


def test_one_false_alarm_per_thousand_parts():
    # 1000 good parts, 100 defective: the engineer's question "at 1 false alarm per 1000, what do I miss?".
    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(1000, bool), np.ones(100, bool)]
    scores = np.r_[rng.normal(size=1000), rng.normal(3.0, 1.0, size=100)]
    choice = threshold_for_fpr(labels, scores, 0.001)
    assert choice.fp <= 1 and choice.fpr <= 0.001
    normal_sorted = np.sort(scores[:1000])
    # Lowest admissible threshold: exactly one normal part (the top one) at or above it.
    assert normal_sorted[-2] < choice.threshold <= normal_sorted[-1]
    assert choice.miss_rate == pytest.approx(np.mean(scores[1000:] < choice.threshold))
    assert "FPR <= 0.001" in choice.criterion


def test_ties_and_flag_nothing():
    labels = np.array([1, 0, 1, 0])
    scores = np.full(4, 0.5, dtype=np.float32)  # constant scores: one run of ties
    choice = threshold_for_fpr(labels, scores, 0.4)  # flagging the run costs FPR 1: only "flag nothing" fits
    assert choice.threshold > 0.5 and choice.tp == 0 and choice.fp == 0
    assert choice.recall == 0.0 and choice.precision is None and choice.miss_rate == 1.0
    assert confusion_at(labels, scores, choice.threshold).tp == 0
    choice = threshold_for_recall(labels, scores, 0.5)  # the tied run is flagged as a whole
    assert choice.threshold == 0.5 and choice.tp == 2 and choice.fp == 2


def test_single_class_and_bad_targets_raise():
    with pytest.raises(UndefinedMetricError):
        threshold_for_fpr([0, 0, 0], [0.1, 0.2, 0.3], 0.1)
    with pytest.raises(UndefinedMetricError):
        threshold_for_recall([1, 1], [0.1, 0.2], 0.9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_for_fpr([0, 1], [0.1, 0.2], 1.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        threshold_for_recall([0, 1], [0.1, 0.2], -0.1)


def random_masks_and_maps(seed, shape=(6, 13, 17)):
    rng = np.random.default_rng(seed)
    masks = np.zeros(shape, dtype=bool)
    for i in range(shape[0] - 2):  # the last two images are normal
        top, left = rng.integers(0, 8, 2)
        masks[i, top:top + 5, left:left + 6] = True
    maps = np.round(rng.normal(size=shape) + 1.5 * masks, 1).astype(np.float32)
    return masks, maps


@pytest.mark.parametrize("seed", range(4))
def test_pixel_confusion_pools_all_pixels(seed, monkeypatch):
    masks, maps = random_masks_and_maps(seed)
    monkeypatch.setattr(thresholds_module, "_BLOCK_PIXELS", 500)  # several image blocks
    for threshold in [-0.5, 0.8, 1.2, 10.0]:
        pixel = pixel_confusion_at(masks.astype(np.uint8), maps, threshold)
        flat = confusion_at(masks.ravel(), maps.ravel(), threshold)
        assert pixel == flat


@pytest.mark.parametrize("seed", range(4))
def test_per_image_pixel_scores_match_sklearn_per_image(seed, monkeypatch):
    masks, maps = random_masks_and_maps(seed)
    monkeypatch.setattr(thresholds_module, "_BLOCK_PIXELS", 500)
    threshold = 1.0
    table = per_image_pixel_scores(masks, maps, threshold)
    for i in range(len(masks)):
        truth, predicted = masks[i].ravel(), maps[i].ravel() >= threshold
        if predicted.any():
            assert table["precision"][i] == pytest.approx(precision_score(truth, predicted))
        else:
            assert np.isnan(table["precision"][i])
        if truth.any():
            assert table["recall"][i] == pytest.approx(recall_score(truth, predicted))
            assert table["f1"][i] == pytest.approx(f1_score(truth, predicted, zero_division=0.0))
        else:
            assert np.isnan(table["recall"][i])  # not applicable: a normal image has no defect to find
            assert table["f1"][i] == (0.0 if predicted.any() else pytest.approx(np.nan, nan_ok=True))
        assert table["tp"][i] == np.sum(truth & predicted)


def test_per_image_convention_for_normal_images_and_empty_masks():
    masks = np.zeros((2, 4, 4), dtype=bool)  # no defect anywhere
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    maps[1, 0, 0] = 5.0  # one false alarm in image 1
    table = per_image_pixel_scores(masks, maps, 1.0)
    assert np.isnan(table["recall"]).all()
    assert np.isnan(table["precision"][0]) and table["precision"][1] == 0.0
    assert np.isnan(table["f1"][0]) and table["f1"][1] == 0.0
    pooled = pixel_confusion_at(masks, maps, 1.0)
    assert pooled.recall is None and pooled.fp == 1 and pooled.fpr == 1 / 32


def test_pixel_shape_and_value_errors():
    with pytest.raises(ValueError, match="must be equal"):
        pixel_confusion_at(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)), 0.5)
    with pytest.raises(ValueError, match="0/255"):
        per_image_pixel_scores(np.full((1, 2, 2), 255, np.uint8), np.zeros((1, 2, 2)), 0.5)
    maps = np.zeros((1, 2, 2))
    maps[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pixel_confusion_at(np.zeros((1, 2, 2)), maps, 0.5)
