"""The one sort-based core every ranking metric in vadkit is built on.

AUROC, average precision, F1-max and AU-PRO are all functions of the same thing: walk the items from the
highest score to the lowest and, at every *distinct* score, count what has been flagged so far. Sorting once
(O(n log n)) gives the whole curve exactly, ties included; evaluating a fixed grid of thresholds (as some
toolkits do) is approximate, and looping over thresholds in Python is O(n * thresholds). This is the classic
algorithm of Fawcett, "An introduction to ROC analysis" (Pattern Recognition Letters, 2006), also used by
scikit-learn's ``_binary_clf_curve``.

Tied scores form a *run*; a threshold can only separate runs, never split one, so the curve is evaluated at
the last index of each run (equivalently: cumulative sums of per-run totals).

Memory: pixel metrics see tens of millions of values. We never make float64 copies of the scores; the
extra memory is one int64 index array (the sort order), one sorted copy of the scores in their own dtype, one
bool array for run boundaries, and arrays whose length is the number of *distinct* scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "ScoreRuns",
    "binary_clf_curve",
    "binary_clf_curve_of_valid",
    "sort_score_runs",
    "block_of_sorted",
    "subset_runs",
    "validate_labels",
    "validate_pair",
    "validate_scores",
]


@dataclass(frozen=True)
class ScoreRuns:
    """Items sorted by score (descending) and grouped into runs of equal scores.

    Attributes:
        order: (n,) int64 indices that sort the scores in descending order.
        starts: (k,) start position, in sorted order, of each of the k runs of tied scores.
        thresholds: (k,) the distinct scores, descending, in the scores' own dtype.
        n_items: n.
    """

    order: np.ndarray
    starts: np.ndarray
    thresholds: np.ndarray
    n_items: int

    @property
    def counts(self) -> np.ndarray:
        """(k,) int64: number of items with score >= each threshold."""
        return np.append(self.starts[1:], self.n_items).astype(np.int64, copy=False)

    def sum_per_run(self, sorted_values: np.ndarray) -> np.ndarray:
        """Total of ``sorted_values`` (already in ``order``) within each run; int64 for bool/int input."""
        dtype = np.float64 if sorted_values.dtype.kind == "f" else np.int64
        return np.add.reduceat(sorted_values, self.starts, dtype=dtype)

    def cumulative(self, values: np.ndarray) -> np.ndarray:
        """(k,) sum of ``values`` over the items with score >= each threshold."""
        return np.cumsum(self.sum_per_run(values[self.order]))


def validate_scores(scores, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a 1-D numeric array (no copy when already one); reject NaN/inf and empty input."""
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {scores.shape}; flatten maps or use the pixel_* metrics.")
    if scores.size == 0:
        raise ValueError(f"{name} is empty: a metric needs at least one item.")
    if scores.dtype == np.bool_:
        scores = scores.view(np.uint8)
    if scores.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be real numbers, got dtype {scores.dtype}.")
    if scores.dtype.kind == "f":
        finite = np.isfinite(scores)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise ValueError(
                f"{name} contain {bad.size} NaN/inf value(s) (first at index {bad[0]}: {scores[bad[0]]}); "
                "anomaly scores must be finite: check the model's output."
            )
    return scores


def validate_labels(labels, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 1-D bool array (no copy when already bool); values must be 0/1 or bool."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {labels.shape}; flatten masks or use the pixel_* metrics.")
    if labels.size == 0:
        raise ValueError(f"{name} is empty: a metric needs at least one item.")
    if labels.dtype == np.bool_:
        return labels
    if labels.dtype.kind in "iu":
        lo, hi = labels.min(), labels.max()  # two passes, no temporary arrays
        if lo < 0 or hi > 1:
            bad = lo if lo < 0 else hi
            raise ValueError(_label_value_message(name, bad))
        return labels.astype(bool)
    if labels.dtype.kind == "f":
        is_one = labels == 1
        if not (is_one | (labels == 0)).all():
            bad = labels[~(is_one | (labels == 0))][0]
            raise ValueError(_label_value_message(name, bad))
        return is_one
    raise ValueError(f"{name} must be bool or 0/1 numbers, got dtype {labels.dtype}.")


def _label_value_message(name: str, bad) -> str:
    return (
        f"{name} must contain only 0/1 (or bool), found {bad!r}. Masks read from PNG files are often 0/255: "
        "pass `mask > 0`."
    )


def sort_score_runs(scores: np.ndarray) -> ScoreRuns:
    """Sort a validated 1-D score array once, descending, and find its runs of tied scores."""
    # Stable ascending sort, reversed: descending order. Order inside a run of ties is irrelevant because a run
    # is only ever evaluated as a whole.
    order = np.argsort(_sort_key(scores), kind="stable")[::-1]
    sorted_scores = scores[order]
    is_new_run = sorted_scores[1:] != sorted_scores[:-1]  # bool, no float copy (unlike np.diff)
    starts = np.concatenate(([0], np.flatnonzero(is_new_run) + 1)).astype(np.int64, copy=False)
    return ScoreRuns(order=order, starts=starts, thresholds=sorted_scores[starts], n_items=scores.size)


def subset_runs(runs: ScoreRuns, scores: np.ndarray, keep_blocks: np.ndarray, block: int,
                sorted_blocks: np.ndarray | None = None) -> ScoreRuns:
    """The runs of a subset of the items, from the runs of all of them, without sorting again.

    The items are ``len(keep_blocks)`` blocks of ``block`` consecutive items (the pixels of N images); the
    subset is the kept blocks, in order, numbered from 0 as ``scores`` restricted to them would be. Filtering
    a sorted order keeps it sorted, so this is O(n) where a new sort is O(n log n): per-defect pixel metrics
    (normal images + one defect type) then cost a pass over the pixels each instead of a sort each.
    ``sorted_blocks`` (:func:`block_of_sorted`), when several subsets of the same runs are taken, saves a
    division per item each time.
    """
    keep_blocks = np.asarray(keep_blocks, dtype=bool)
    if keep_blocks.size * block != runs.n_items:
        raise ValueError(f"{keep_blocks.size} blocks of {block} items do not make the {runs.n_items} items sorted")
    if sorted_blocks is None:
        sorted_blocks = block_of_sorted(runs, block)
    selected = keep_blocks[sorted_blocks]
    kept, kept_blocks = runs.order[selected], sorted_blocks[selected].astype(np.int64)
    # item i of block b is item (i - b * block) of that block, which is block position[b] of the subset
    position = np.cumsum(keep_blocks) - 1
    order = kept + (position - np.arange(keep_blocks.size))[kept_blocks] * block
    sorted_scores = scores[kept]
    is_new_run = sorted_scores[1:] != sorted_scores[:-1]
    starts = np.concatenate(([0], np.flatnonzero(is_new_run) + 1)).astype(np.int64, copy=False)
    return ScoreRuns(order=order, starts=starts, thresholds=sorted_scores[starts], n_items=int(kept.size))


def block_of_sorted(runs: ScoreRuns, block: int) -> np.ndarray:
    """The block (image) of each sorted item, as the smallest integer type that holds it."""
    n_blocks = max(1, runs.n_items // block)
    dtype = np.int16 if n_blocks < 2**15 else np.int32 if n_blocks < 2**31 else np.int64
    return (runs.order // block).astype(dtype)


def _sort_key(scores: np.ndarray) -> np.ndarray:
    """float16 scores as uint16 keys in the same order, so numpy's stable sort is a radix sort (O(n)).

    float16 is how run folders store anomaly maps; sorting tens of millions of them is the main cost of pixel
    metrics, and the radix sort of their 16-bit keys is about 5x faster than a comparison sort. The key flips
    every bit of a negative number and only the sign bit of a positive one (the IEEE-754 total order; -0.0
    sorts just below +0.0, which compare equal and so still form one run).
    """
    if scores.dtype != np.float16:
        return scores
    bits = scores.view(np.uint16)
    return np.where(bits & 0x8000, ~bits, bits | 0x8000).astype(np.uint16, copy=False)


def binary_clf_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positive counts at each distinct score, thresholds descending.

    An item counts as predicted positive (anomalous) at threshold ``t`` when ``score >= t``.

    Args:
        labels: (n,) bool or 0/1; 1 = anomalous.
        scores: (n,) finite real scores; higher = more anomalous. Any float or int dtype (float32 is not copied
            to float64).

    Returns:
        ``(fps, tps, thresholds)``: ``fps[i]`` / ``tps[i]`` (int64) are the numbers of normal / anomalous items
        with ``score >= thresholds[i]``; ``thresholds`` (the distinct scores, descending) keep the scores' dtype.
        The last entry counts every item, so ``fps[-1]`` is the number of normal items and ``tps[-1]`` the
        number of anomalous ones.

    Raises:
        ValueError: empty input, different lengths, labels other than 0/1, NaN/inf scores, non-1-D input.
    """
    return binary_clf_curve_of_valid(*validate_pair(labels, scores))


def binary_clf_curve_of_valid(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``binary_clf_curve`` for inputs already returned by ``validate_pair`` (skips a pass over the data)."""
    runs = sort_score_runs(scores)
    tps = runs.cumulative(labels)
    fps = runs.counts - tps
    return fps, tps, runs.thresholds


def validate_pair(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validate labels and scores together (both 1-D, same length)."""
    labels = validate_labels(labels)
    scores = validate_scores(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"labels has {labels.size} items but scores has {scores.size}; they must match.")
    return labels, scores
