"""Histogram ("binned") pixel metrics: bounded memory for 100M+ pixels, and the basis of pixel bootstraps.

The exact pixel metrics (``pixel.py``) sort every pixel: memory and time grow with the pixel count, and a
bootstrap would re-sort every replicate. Here each pixel is only counted in a bin of its score: per bin, the
number of normal and of anomalous pixels (int64), plus, for AU-PRO, the sum over defective pixels of
``1 / |their region|``. Memory is O(bins) whatever the number of pixels; ``PixelHistogram.add`` takes one
batch of images at a time (a stream), and ``per_image_histograms`` keeps one histogram per image, so that a
bootstrap replicate's histogram is a weighted sum of rows (``bootstrap.py``).

Bins. ``edges`` e_0 < e_1 < ... < e_B define B bins; bin b holds the scores in [e_b, e_{b+1}), the first bin
also everything below e_1, the last everything from e_{B-1} up (nothing is dropped). Edges come from
``uniform_edges(lo, hi, bins)`` (a stream: known range, or a first pass for min / max) or from
``quantile_edges(masks, maps, bins)``: half of the edges at quantiles of the normal pixels' scores, half at
quantiles of the defective pixels' scores (from a sample), so that every bin holds at most ~2/B of either
class whatever the score distribution; when the sample has at most ``bins`` distinct values (float16 maps,
integer maps) every distinct value gets its own bin and the binned metrics are exact.

Why the binned metrics are *achievable* points of the exact curves: binning is monotone (s <= s' implies
bin(s) <= bin(s')), so "flag the bins >= b" is exactly the threshold classifier "score >= e_b". The binned
ROC / PR / PRO curves are therefore the exact curves evaluated at the bin edges only; what binning loses is
the curve *between* consecutive edges. Pixels whose score equals their bin's left edge are exact ties; a bin
in which every pixel does is *pure* and loses nothing. The add pass records which bins are impure, and the
error bounds below sum over impure bins only (so they are 0 when every bin is pure).

Error bounds (computed from the histogram, rigorous, with (x_{b-1}, y_{b-1}) -> (x_b, y_b) the binned curve
step across bin b in order of decreasing threshold, P / N the anomalous / normal pixel counts):

- **AUROC.** The exact AUROC is the Mann-Whitney probability P(s_pos > s_neg) + 0.5 P(s_pos = s_neg) over all
  (anomalous, normal) pixel pairs. For pairs in different bins, monotone binning keeps the comparison's
  outcome; for pairs in the same bin the binned value counts 1/2 where the exact one counts 0, 1/2 or 1. So
  ``|AUROC_exact - AUROC_binned| <= 0.5 * sum_b pos_b * neg_b / (P * N)`` (impure bins only). Equivalently:
  inside the box of each step the exact ROC curve is monotone, so its area differs from the chord's by at most
  half the box, 0.5 * dFPR * dTPR. With ``quantile_edges`` neg_b / N <~ 2 / B, so the bound is <~ 1 / B.
- **AUPR** (average precision, sum over steps of dRecall * precision): exact AP = sum over the exact steps
  inside each bin of dR_k * P_k, binned AP gives the whole bin's dR = pos_b / P the precision at the bin's end,
  P_b = TP_b / (TP_b + FP_b). Inside bin b every exact step that gains recall has TP_{b-1} + 1 <= TP_k <= TP_b
  and FP_{b-1} <= FP_k <= FP_b, so P_k lies in [(TP_{b-1} + 1) / (TP_{b-1} + 1 + FP_b), TP_b / (TP_b + FP_{b-1})],
  and ``|AP_exact - AP_binned| <= sum_b (pos_b / P) * max(P_hi,b - P_b, P_b - P_lo,b)``. (AP is not tie
  invariant: tying a run of anomalous pixels raises it, which is why a bin of anomalous pixels alone has a
  non-zero bound.)
- **F1-max**: every binned point is an exact point, so the binned F1-max is a *lower bound* of the exact one.
  Inside bin b, F1 = 2 TP / (TP + FP + P) (increasing in TP, decreasing in FP) is at most
  2 TP_b / (TP_b + FP_{b-1} + P); the maximum of that over impure bins (and the binned F1-max) is an upper
  bound. ``f1_max_error_bound`` is upper - binned.
- **AU-PRO**: the binned PRO curve is the exact one at the edges; inside each step box the exact curve is
  monotone, so its area differs from the chord's by at most 0.5 * dFPR * dPRO; for the step that crosses the
  FPR limit (width w to the limit) by at most dPRO * w * (1 - w / (2 dFPR)). The sum is divided by the limit.
  Per-region histograms are not needed: PRO(t) = (1 / #regions) * sum over defective pixels flagged at t of
  1 / |region|, one weighted histogram (regions are labelled per image, 8-connectivity, as in ``pro.py``).

Measured: on 23k-pixel random maps with 4096 quantile bins, errors of 3e-5 (AUROC), 3e-4 (AUPR), 1e-4
(F1-max), 7e-5 (AU-PRO), each below its bound (tests/metrics/test_binned.py checks error <= bound on random,
heavy-tailed, tied and adversarial maps; the AUROC bound is attained when every mixed bin is perfectly ordered,
so it cannot be improved). On 100M pixels with 16384 uniform bins (benchmarks/bench_metrics_binned.py) the
AUROC error was 4e-8 for a bound of 3e-5.

Quantisation speed: ``np.searchsorted`` on unsorted float keys costs ~80 ns per pixel; ``_Binner`` maps a
score to a fine uniform grid (a lookup table of how many edges lie below each cell) and then corrects with a
few vectorised comparisons against the edges inside its cell: ~12 ns per pixel, exact for any edges (a whole
``add`` is ~20-30 ns per pixel with the counting and the region labelling).
"""

from __future__ import annotations

import numpy as np

from vadkit.errors import UndefinedMetricError
from vadkit.metrics.curves import validate_labels, validate_scores
from vadkit.metrics.pixel import as_mask_and_map_stacks
from vadkit.metrics.pro import label_regions

__all__ = [
    "DEFAULT_BINS",
    "PixelHistogram",
    "aupr_of_counts",
    "auroc_of_counts",
    "f1_of_counts",
    "per_image_histograms",
    "pro_area_of_counts",
    "quantile_edges",
    "uniform_edges",
]

#: Bins of ``quantile_edges`` and of the pixel bootstrap: AUROC error <~ 1 / 4096 (see the module docstring).
DEFAULT_BINS = 4096
#: Bins of a uniform-range ``PixelHistogram`` (a stream pays O(bins) memory only, so finer is cheap).
DEFAULT_STREAM_BINS = 16384
# Pixels quantised per step: bounds the temporaries (~40 bytes per pixel, ~20 MB) whatever the batch size.
_STEP_PIXELS = 1 << 19
# Cells of the quantiser's lookup table per inner edge (capped), and the most edges one cell may hold before
# its pixels fall back to np.searchsorted.
_CELLS_PER_EDGE, _MAX_CELLS, _MAX_EDGES_PER_CELL = 32, 1 << 20, 6


# --- metrics of per-bin counts (shared with bootstrap.py) -------------------------------------------------------
# Inputs: (..., k) counts per bin (or per run of tied scores) in order of DECREASING score, i.e. the order in
# which a falling threshold flags them. Leading axes are replicates: every function is vectorised over them.


def auroc_of_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Trapezoidal ROC AUC from per-bin counts, ties within a bin counting half; (...,) float64."""
    tp = np.cumsum(pos, axis=-1)
    n_pos, n_neg = tp[..., -1], np.sum(neg, axis=-1)
    big = np.issubdtype(tp.dtype, np.integer) and int(np.max(n_pos, initial=0)) * int(np.max(n_neg, initial=0)) > 2**60
    if big:  # 2 * sum neg * tp could overflow int64: float64 is accurate to ~1e-16 relative anyway
        tp, neg, pos = tp.astype(np.float64), neg.astype(np.float64), pos.astype(np.float64)
    twice_area = np.sum(neg * (2 * tp - pos), axis=-1)  # sum_k neg_k * (TP_k + TP_{k-1})
    return twice_area / (2.0 * n_pos * n_neg)


def aupr_of_counts(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Average precision (step-wise, scikit-learn's definition) from per-bin counts; (...,) float64."""
    tp = np.cumsum(pos, axis=-1, dtype=np.float64)
    flagged = tp + np.cumsum(neg, axis=-1, dtype=np.float64)
    precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)  # flagged = 0 only where pos = 0
    return np.sum(pos * precision, axis=-1) / tp[..., -1]


def f1_of_counts(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(best F1, index of the bin reaching it)`` from per-bin counts; the first (highest) bin wins ties."""
    tp = np.cumsum(pos, axis=-1, dtype=np.float64)
    fp = np.cumsum(neg, axis=-1, dtype=np.float64)
    f1 = 2 * tp / (tp + fp + tp[..., -1:])  # 2TP / (2TP + FP + FN), denominator >= P > 0
    best = np.argmax(f1, axis=-1)
    return np.take_along_axis(f1, best[..., None], axis=-1)[..., 0], best


def pro_area_of_counts(pos: np.ndarray, neg: np.ndarray, pro_weight: np.ndarray, n_regions,
                       fpr_limit: float) -> np.ndarray:
    """Normalised area under the binned PRO curve up to ``fpr_limit``; (...,) float64.

    ``pro_weight`` holds per bin the sum over defective pixels of 1 / |their region|, ``n_regions`` the number
    of regions (per replicate). Same trapezoid and cut-off rule as ``pro.aupro``.
    """
    fp = np.cumsum(neg, axis=-1, dtype=np.float64)
    tp = np.cumsum(pos, axis=-1, dtype=np.float64)
    pro = np.cumsum(pro_weight, axis=-1) / np.asarray(n_regions, dtype=np.float64)[..., None]
    pro[tp == tp[..., -1:]] = 1.0  # every defect pixel flagged: exactly 1 (the float sum can miss by ~1e-15)
    zero = np.zeros(fp.shape[:-1] + (1,))
    fpr = np.concatenate([zero, fp / fp[..., -1:]], axis=-1)
    pro = np.concatenate([zero, pro], axis=-1)
    return np.clip(_area_up_to_rows(fpr, pro, fpr_limit) / fpr_limit, 0.0, 1.0)


def _area_up_to_rows(fpr: np.ndarray, pro: np.ndarray, limit: float) -> np.ndarray:
    """``pro.area_up_to`` for every row of (..., m) curves through (0, 0) with non-decreasing fpr."""
    x0, x1, y0, y1 = fpr[..., :-1], fpr[..., 1:], pro[..., :-1], pro[..., 1:]
    inside = x1 <= limit
    crossing = (x0 <= limit) & ~inside  # at most one segment per row crosses the limit
    width = np.where(crossing, limit - x0, 0.0)
    dx = np.where(crossing, x1 - x0, 1.0)  # > 0 on crossing segments
    y_limit = y0 + (y1 - y0) * width / dx
    full = np.where(inside, (x1 - x0) * (y0 + y1), 0.0)
    part = np.where(crossing, width * (y0 + y_limit), 0.0)
    return np.sum(full + part, axis=-1) / 2


# --- error bounds of one histogram (descending order, see the module docstring) -----------------------------------


def _auroc_bound(pos, neg, impure) -> float:
    return 0.5 * float(np.sum(pos[impure].astype(np.float64) * neg[impure])) / (float(pos.sum()) * float(neg.sum()))


def _aupr_bound(pos, neg, impure) -> float:
    tp, fp = np.cumsum(pos).astype(np.float64), np.cumsum(neg).astype(np.float64)
    tp_prev, fp_prev = tp - pos, fp - neg
    use = impure & (pos > 0)
    tp, fp, tp_prev, fp_prev = tp[use], fp[use], tp_prev[use], fp_prev[use]
    p_end = tp / (tp + fp)
    p_high = tp / (tp + fp_prev)
    p_low = (tp_prev + 1) / (tp_prev + 1 + fp)
    return float(np.sum(pos[use] * np.maximum(p_high - p_end, p_end - p_low)) / pos.sum())


def _f1_upper(pos, neg, impure) -> float:
    tp, fp = np.cumsum(pos).astype(np.float64), np.cumsum(neg).astype(np.float64)
    n_pos = tp[-1]
    inside = 2 * tp / (tp + (fp - neg) + n_pos)  # best F1 any threshold strictly inside the bin can reach
    binned = 2 * tp / (tp + fp + n_pos)
    return float(np.max(np.where(impure, inside, binned)))


def _aupro_bound(pos, neg, pro_weight, n_regions, impure, limit) -> float:
    fp = np.cumsum(neg, dtype=np.float64)
    fpr = np.concatenate(([0.0], fp / fp[-1]))
    tp = np.cumsum(pos, dtype=np.float64)
    pro = np.cumsum(pro_weight) / n_regions
    pro[tp == tp[-1]] = 1.0
    pro = np.concatenate(([0.0], pro))
    x0, x1, dy = fpr[:-1], fpr[1:], np.diff(pro)
    dx = x1 - x0
    inside = impure & (x1 <= limit)
    crossing = impure & (x0 <= limit) & (x1 > limit)
    width = np.where(crossing, limit - x0, 0.0)
    safe_dx = np.where(dx > 0, dx, 1.0)
    total = np.sum(np.where(inside, 0.5 * dx * dy, 0.0))
    total += np.sum(np.where(crossing, dy * width * (1 - width / (2 * safe_dx)), 0.0))
    return float(total / limit)


# --- edges and quantisation ---------------------------------------------------------------------------------------


def _as_edges(edges) -> np.ndarray:
    edges = np.asarray(edges, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2:
        raise ValueError(f"edges must be a 1-D array of at least 2 values, got shape {edges.shape}.")
    if not np.isfinite(edges).all() or not (np.diff(edges) > 0).all():
        raise ValueError("edges must be finite and strictly increasing.")
    return edges


def _with_upper_edge(values: np.ndarray) -> np.ndarray:
    """Edges from sorted distinct values: each value starts a bin; one extra edge just above the last."""
    return np.append(values, np.nextafter(values[-1], np.inf))


def uniform_edges(lo: float, hi: float, bins: int = DEFAULT_STREAM_BINS) -> np.ndarray:
    """``bins`` equal-width bins over [lo, hi] (scores outside fall into the end bins); ``lo == hi``: one bin."""
    lo, hi, bins = float(lo), float(hi), int(bins)
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi < lo:
        raise ValueError(f"range must be finite with lo <= hi, got ({lo}, {hi}).")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}.")
    if hi == lo:
        return _with_upper_edge(np.array([lo]))
    edges = np.linspace(lo, hi, bins + 1)
    return np.unique(edges)  # for ranges of a few ulps linspace can repeat values


def quantile_edges(masks, maps, bins: int = DEFAULT_BINS, max_sample: int = 1 << 21) -> np.ndarray:
    """Class-balanced quantile edges for ``maps`` (see the module docstring), from a deterministic sample.

    Args:
        masks: (N, H, W) ground truth (or None: quantiles of all scores). maps: (N, H, W) anomaly maps.
        bins: about how many bins (at most ``bins``; fewer when quantiles coincide).
        max_sample: pixels read per class at most (an evenly strided sample, so no random state).

    Returns:
        float64 strictly increasing edges. When the sample has at most ``bins`` distinct scores, one bin per
        distinct score (binned metrics are then exact for scores in the sample).
    """
    bins = int(bins)
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}.")
    flat_maps = np.asarray(maps).reshape(-1)
    if flat_maps.size == 0:
        raise ValueError("maps are empty: no pixel to choose bin edges from.")
    stride = max(1, flat_maps.size // max_sample)
    sample = validate_scores(flat_maps[::stride], name="maps").astype(np.float64)
    parts = [sample]
    if masks is not None:
        flat_masks = np.asarray(masks).reshape(-1)
        if flat_masks.size != flat_maps.size:
            raise ValueError(f"masks have {flat_masks.size} pixels but maps have {flat_maps.size}.")
        sample_labels = validate_labels(flat_masks[::stride], name="masks")
        n_pos = int(np.count_nonzero(flat_masks))
        # The sample can miss rare defect pixels: take them all when they are few.
        positives = sample[sample_labels]
        if stride > 1 and 0 < n_pos <= max_sample:
            positives = validate_scores(flat_maps[flat_masks.astype(bool)], name="maps").astype(np.float64)
        parts = [sample[~sample_labels], positives]
    per_class = [np.sort(part) for part in parts if part.size]  # one sort per class, nothing else
    distinct = [part[np.concatenate(([True], part[1:] != part[:-1]))] for part in per_class]
    if sum(values.size for values in distinct) <= bins:
        return _with_upper_edge(np.unique(np.concatenate(distinct)))
    levels = np.linspace(0.0, 1.0, bins // len(per_class) + 1)
    # Quantiles taken as data values (lower order statistic), so tied scores sit on edges and make pure bins.
    edges = [part[np.floor(levels * (part.size - 1)).astype(np.int64)] for part in per_class]
    edges = np.unique(np.concatenate(edges))  # includes both classes' minimum and maximum (levels 0 and 1)
    return edges if edges.size >= 2 else _with_upper_edge(edges)


class _Binner:
    """Exact ``bin(x) = #{inner edges <= x}`` for float64 x, fast: a lookup table over a uniform grid of cells.

    ``cell(v)`` (uniform grid over the inner edges' range, clipped) is monotone in v, so the edges in an earlier
    cell than x's are <= x and those in a later cell are > x; only the few edges inside x's own cell need a
    comparison, done with vectorised steps. Cells crowded with edges fall back to ``np.searchsorted``.
    """

    def __init__(self, edges: np.ndarray):
        self.edges = edges
        self.inner = edges[1:-1]
        self.n_bins = edges.size - 1
        m = self.inner.size
        self.lo = self.inner[0] if m else 0.0
        self.n_cells = int(min(_MAX_CELLS, max(1024, _CELLS_PER_EDGE * m)))
        with np.errstate(over="ignore", divide="ignore"):
            self.scale = self.n_cells / (self.inner[-1] - self.inner[0]) if m >= 2 else np.inf
        if not np.isfinite(self.scale):  # < 2 inner edges, or edges a few denormals apart: plain comparisons
            return
        inner_cells = self._cells(self.inner)
        self.first = np.searchsorted(inner_cells, np.arange(self.n_cells + 1), side="left")  # edges before cell c
        per_cell = np.diff(self.first)
        self.crowded = per_cell > _MAX_EDGES_PER_CELL
        self.steps = int(min(per_cell.max(), _MAX_EDGES_PER_CELL))
        self.inner_padded = np.append(self.inner, np.inf)

    def _cells(self, values: np.ndarray) -> np.ndarray:
        """Cell index of float64 ``values``."""
        values = values - self.lo
        values *= self.scale
        np.floor(values, out=values)
        np.clip(values, 0, self.n_cells - 1, out=values)
        return values.astype(np.int64)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """Bin index (int64) of each float64 value."""
        m = self.inner.size
        if m == 0:
            return np.zeros(values.shape, dtype=np.int64)
        if m == 1:
            return (values >= self.inner[0]).astype(np.int64)
        if not np.isfinite(self.scale):
            return np.searchsorted(self.inner, values, side="right")
        x = values
        cells = self._cells(values)
        index = self.first[cells]
        for _ in range(self.steps):
            index += self.inner_padded[index] <= x
        if self.crowded.any():
            slow = self.crowded[cells]
            if slow.any():
                index[slow] = np.searchsorted(self.inner, x[slow], side="right")
        return index


# --- accumulation ---------------------------------------------------------------------------------------------


def _checked_block(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Validated bool labels of a block, and its min / max score (NaN / inf rejected)."""
    labels = validate_labels(masks.reshape(-1), name="masks")
    flat = maps.reshape(-1)
    if flat.dtype == np.bool_ or flat.dtype.kind not in "iuf":
        flat = validate_scores(flat, name="maps")  # bool -> uint8; other dtypes: the usual error
    lo, hi = flat.min(), flat.max()  # NaN propagates through min / max: one check, no temporary array
    if not (np.isfinite(lo) and np.isfinite(hi)):
        validate_scores(flat, name="maps (flattened)")  # raises with the index of the first bad value
    return labels, float(lo), float(hi)


class _Tables:
    """Per-image (or pooled, n_rows = 1) histograms, ascending bins."""

    def __init__(self, n_rows: int, n_bins: int):
        self.counts = np.zeros((n_rows, 2, n_bins), dtype=np.int64)  # [:, 0] normal, [:, 1] anomalous
        self.pro_weight = np.zeros((n_rows, n_bins), dtype=np.float64)
        self.n_regions = np.zeros(n_rows, dtype=np.int64)
        self.impure = np.zeros(n_bins, dtype=bool)
        self.lo, self.hi = np.inf, -np.inf


def _accumulate(tables: _Tables, binner: _Binner, masks: np.ndarray, maps: np.ndarray, first_row: int | None,
                regions: bool) -> None:
    """Add a (n, H, W) block: rows ``first_row + i`` per image, or all into row 0 when ``first_row`` is None."""
    n_images, per_image = masks.shape[0], masks.shape[1] * masks.shape[2]
    n_bins = binner.n_bins
    step = max(1, _STEP_PIXELS // max(1, per_image))
    for start in range(0, n_images, step):
        block_masks, block_maps = masks[start:start + step], maps[start:start + step]
        labels, lo, hi = _checked_block(block_masks, block_maps)
        tables.lo, tables.hi = min(tables.lo, lo), max(tables.hi, hi)
        values = block_maps.reshape(-1).astype(np.float64)
        index = binner(values)
        not_on_edge = binner.edges[index] != values
        del values
        defective = np.flatnonzero(labels) if regions else None
        bins_of_defective = index[defective] if regions else None
        keys = index  # in place: key = row * 4B + off_edge * 2B + label * B + bin
        np.add(keys, n_bins, out=keys, where=labels)
        np.add(keys, 2 * n_bins, out=keys, where=not_on_edge)
        del not_on_edge
        n_rows = len(block_masks) if first_row is not None else 1
        if first_row is not None:
            keys.reshape(n_rows, per_image)[...] += (np.arange(n_rows, dtype=np.int64) * (4 * n_bins))[:, None]
        found = np.bincount(keys, minlength=n_rows * 4 * n_bins).reshape(n_rows, 2, 2, n_bins)
        row = slice(first_row + start, first_row + start + n_rows) if first_row is not None else slice(0, 1)
        tables.counts[row] += found.sum(axis=1)  # (rows, on/off edge, label, bin) -> (rows, label, bin)
        tables.impure |= found[:, 1].sum(axis=(0, 1)) > 0
        if regions and defective.size:
            _accumulate_regions(tables, defective, bins_of_defective, labels.reshape(block_masks.shape), row,
                                n_rows, per_image, first_row is not None)


def _accumulate_regions(tables, defective, bins_of_defective, labels, row, n_rows, per_image, per_row) -> None:
    """PRO weights: each defective pixel adds 1 / |its region| to its bin; regions counted per row."""
    region_ids, sizes = label_regions(labels)
    ids = region_ids.reshape(-1)[defective]
    del region_ids
    weight = 1.0 / sizes[ids - 1]
    image_of_pixel = defective // per_image if per_row else np.zeros(defective.size, dtype=np.int64)
    keys = image_of_pixel * tables.pro_weight.shape[1] + bins_of_defective
    tables.pro_weight[row] += np.bincount(keys, weights=weight,
                                          minlength=n_rows * tables.pro_weight.shape[1]).reshape(n_rows, -1)
    image_of_region = np.zeros(sizes.size, dtype=np.int64)
    image_of_region[ids - 1] = image_of_pixel
    tables.n_regions[row] += np.bincount(image_of_region, minlength=n_rows)


def _per_image_tables(masks, maps, edges, regions: bool = True) -> _Tables:
    masks, maps = as_mask_and_map_stacks(masks, maps)
    binner = _Binner(_as_edges(edges))
    tables = _Tables(masks.shape[0], binner.n_bins)
    _accumulate(tables, binner, masks, maps, first_row=0, regions=regions)
    return tables


def per_image_histograms(masks, maps, edges) -> tuple[np.ndarray, np.ndarray]:
    """Per-image pixel histograms: ``(pos, neg)``, each (N, B) int64 counts of anomalous / normal pixels.

    Args:
        masks: (N, H, W) bool or 0/1. maps: (N, H, W) finite maps. edges: (B + 1,) strictly increasing
            (``quantile_edges`` / ``uniform_edges``); see the module docstring for the bin rule.
    """
    tables = _per_image_tables(masks, maps, edges, regions=False)
    return tables.counts[:, 1], tables.counts[:, 0]


# --- the streaming accumulator ------------------------------------------------------------------------------------


class PixelHistogram:
    """Streaming binned pixel metrics: ``add`` batches of (masks, maps), then read AUROC, AUPR, F1-max, AU-PRO.

    Memory is O(bins) plus a per-step buffer of ~40 bytes x max(512k pixels, one image): ~20 MB for usual sizes.

    Example::

        hist = PixelHistogram(range=(0.0, 10.0))        # or edges=quantile_edges(first_masks, first_maps)
        for masks, maps in batches:
            hist.add(masks, maps)
        hist.auroc(), hist.auroc_error_bound()          # |exact - binned| <= bound (module docstring)

    Args:
        edges: (B + 1,) strictly increasing bin edges; or
        bins, range: ``bins`` equal-width bins over ``range = (lo, hi)`` (scores outside go to the end bins, so
            no pixel is lost; the bounds stay valid, only larger).
        regions: also accumulate the per-region weights AU-PRO needs (labels each batch's defect regions).
    """

    def __init__(self, edges=None, *, bins: int = DEFAULT_STREAM_BINS, range: tuple[float, float] | None = None,
                 regions: bool = True):
        if (edges is None) == (range is None):
            raise ValueError(
                "give either edges= or range=(lo, hi): a stream cannot see its scores in advance; use the known "
                "score range, a first pass for min / max, or quantile_edges() on a first batch."
            )
        self.edges = _as_edges(edges) if edges is not None else uniform_edges(range[0], range[1], bins)
        self._binner = _Binner(self.edges)
        self._tables = _Tables(1, self._binner.n_bins)
        self.regions = bool(regions)

    @classmethod
    def from_sample(cls, masks, maps, bins: int = DEFAULT_BINS, regions: bool = True) -> PixelHistogram:
        """A histogram with ``quantile_edges`` of a first batch; the batch itself is *not* added."""
        return cls(quantile_edges(masks, maps, bins), regions=regions)

    @classmethod
    def from_tables(cls, edges, tables: _Tables, regions: bool = True) -> PixelHistogram:
        """The pooled histogram of per-image tables (``_per_image_tables``) made with the same ``edges``."""
        hist = cls(edges, regions=regions)
        pooled = hist._tables
        pooled.counts[0] = tables.counts.sum(axis=0)
        pooled.pro_weight[0] = tables.pro_weight.sum(axis=0)
        pooled.n_regions[0] = tables.n_regions.sum()
        pooled.impure[:] = tables.impure
        pooled.lo, pooled.hi = tables.lo, tables.hi
        return hist

    def add(self, masks, maps) -> PixelHistogram:
        """Count one batch: (n, H, W) masks (bool or 0/1) and maps (finite). Returns ``self``."""
        masks, maps = as_mask_and_map_stacks(masks, maps)
        _accumulate(self._tables, self._binner, masks, maps, first_row=None, regions=self.regions)
        return self

    # Counts, ascending bins.
    @property
    def pos(self) -> np.ndarray:
        """(B,) int64 anomalous pixels per bin."""
        return self._tables.counts[0, 1]

    @property
    def neg(self) -> np.ndarray:
        """(B,) int64 normal pixels per bin."""
        return self._tables.counts[0, 0]

    @property
    def impure(self) -> np.ndarray:
        """(B,) bool: bins holding a score different from their left edge (where binning can lose accuracy)."""
        return self._tables.impure

    @property
    def n_regions(self) -> int:
        return int(self._tables.n_regions[0])

    def require_both_classes(self, metric: str) -> None:
        """Raise ``UndefinedMetricError`` unless both normal and anomalous pixels were counted."""
        n_pos, n_neg = int(self.pos.sum()), int(self.neg.sum())
        if n_pos == 0 or n_neg == 0:
            missing = "anomalous (defective)" if n_pos == 0 else "normal"
            raise UndefinedMetricError(
                f"{metric} is undefined: there are no {missing} pixels ({n_pos + n_neg} pixels counted); "
                "it needs both normal and anomalous pixels."
            )

    def _descending(self, metric: str):
        self.require_both_classes(metric)
        return self.pos[::-1], self.neg[::-1], self.impure[::-1]

    def auroc(self) -> float:
        """Binned pixel AUROC (ties within a bin count half)."""
        pos, neg, _ = self._descending("AUROC")
        return float(auroc_of_counts(pos, neg))

    def auroc_error_bound(self) -> float:
        """``|exact AUROC - auroc()| <= 0.5 * sum_b pos_b neg_b / (P N)`` over impure bins."""
        return _auroc_bound(*self._descending("AUROC"))

    def aupr(self) -> float:
        """Binned pixel average precision."""
        pos, neg, _ = self._descending("AUPR (average precision)")
        return float(aupr_of_counts(pos, neg))

    def aupr_error_bound(self) -> float:
        """Bound on ``|exact AP - aupr()|`` from the precision range inside each impure bin."""
        return _aupr_bound(*self._descending("AUPR (average precision)"))

    def f1_max(self) -> float:
        """Binned pixel F1-max: a lower bound of the exact F1-max (each bin edge is an exact threshold)."""
        return self.f1_max_threshold()[0]

    def f1_max_threshold(self) -> tuple[float, float]:
        """``(binned F1-max, its threshold)``: flagging ``map >= threshold`` reaches exactly that F1."""
        pos, neg, _ = self._descending("F1-max")
        f1, best = f1_of_counts(pos, neg)
        bin_index = self._binner.n_bins - 1 - int(best)
        threshold = self.edges[bin_index] if bin_index > 0 else min(self.edges[0], self._tables.lo)
        return float(f1), float(threshold)

    def f1_max_error_bound(self) -> float:
        """``exact F1-max - f1_max()`` is in [0, this]."""
        pos, neg, impure = self._descending("F1-max")
        return max(0.0, _f1_upper(pos, neg, impure) - float(f1_of_counts(pos, neg)[0]))

    def _pro_parts(self):
        if not self.regions:
            raise ValueError("this PixelHistogram was built with regions=False: AU-PRO needs the region weights.")
        pos, neg, impure = self._descending("AU-PRO")
        return pos, neg, self._tables.pro_weight[0, ::-1], impure

    def aupro(self, fpr_limit: float = 0.3) -> float:
        """Binned AU-PRO up to ``fpr_limit`` (normalised to [0, 1], as ``pro.aupro``)."""
        pos, neg, weight, _ = self._pro_parts()
        return float(pro_area_of_counts(pos, neg, weight, self.n_regions, _check_limit(fpr_limit)))

    def aupro_error_bound(self, fpr_limit: float = 0.3) -> float:
        """Bound on ``|exact AU-PRO - aupro()|`` (half of each impure step box, module docstring)."""
        pos, neg, weight, impure = self._pro_parts()
        return _aupro_bound(pos, neg, weight, self.n_regions, impure, _check_limit(fpr_limit))


def _check_limit(fpr_limit: float) -> float:
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}.")
    return fpr_limit
