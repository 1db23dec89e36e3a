"""The report's figures: ROC, PR, PRO and PIMO curves, score histograms, per-defect bars, one PNG each.

Every function takes plain numpy arrays (no vadkit objects, so a script can plot its own numbers), writes one PNG
of ``FIGSIZE`` inches at ``DPI`` (480 x 360 pixels, per-defect bars grow taller with the number of defect types) and
returns its path. Titles carry the area under the curve.

No pyplot: figures are ``matplotlib.figure.Figure`` objects drawn by an Agg canvas created here, so plotting
neither selects a global backend, nor needs a display, nor leaves figures open in pyplot's registry (a library
must not change its caller's matplotlib state). The style is set per axes, not through ``rcParams``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator
from PIL import Image

from vadkit.report.formatting import format_value, metric_label

__all__ = ["DPI", "FIGSIZE", "pareto_front", "plot_pareto", "plot_per_defect", "plot_pimo", "plot_pr", "plot_pro",
           "plot_roc", "plot_score_histogram"]

FIGSIZE = (4.8, 3.6)  # inches
DPI = 100

# One palette for every figure (and the HTML report's accents).
BLUE = "#2563eb"
RED = "#dc2626"
INK = "#1f2937"
MUTED = "#6b7280"
GRID = "#e5e7eb"
SHADE = "#fde68a"
# categorical colours and markers for scatter plots with several methods and backbones
_PALETTE = ("#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#4b5563", "#65a30d",
            "#92400e")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def plot_roc(fpr, tpr, auc: float, path, title: str = "Image ROC") -> Path:
    """ROC curve (``fpr``, ``tpr`` ascending, in [0, 1]) with the chance diagonal; ``auc`` in the title."""
    fpr, tpr = _curve(fpr, tpr, "fpr", "tpr")
    fig, ax = _figure(f"{title} · AUROC {format_value(auc, 3)}", "False positive rate", "True positive rate")
    ax.plot([0, 1], [0, 1], color=MUTED, lw=1, ls="--", label="chance")
    ax.fill_between(fpr, tpr, color=BLUE, alpha=0.10, lw=0)
    ax.plot(fpr, tpr, color=BLUE, lw=1.8, label="model")
    _unit_box(ax)
    _legend(ax, loc="lower right")
    return _save(fig, path)


def plot_pr(recall, precision, ap: float, path, baseline: float | None = None, title: str = "Image PR") -> Path:
    """Precision-recall curve (``recall`` ascending), drawn as the steps average precision integrates;
    ``baseline`` (the fraction of anomalous items: a random ranking's precision) as a dashed line."""
    recall, precision = _curve(recall, precision, "recall", "precision")
    if recall[0] > 0:  # the first step, recall 0 -> recall[0], is at precision[0]: the area AP counts
        recall, precision = np.r_[0.0, recall], np.r_[precision[0], precision]
    fig, ax = _figure(f"{title} · AP {format_value(ap, 3)}", "Recall", "Precision")
    if baseline is not None:
        ax.axhline(float(baseline), color=MUTED, lw=1, ls="--", label=f"chance ({format_value(baseline, 2)})")
    ax.fill_between(recall, precision, step="pre", color=BLUE, alpha=0.10, lw=0)
    ax.plot(recall, precision, color=BLUE, lw=1.8, drawstyle="steps-pre", label="model")
    _unit_box(ax)
    _legend(ax, loc="lower left")
    return _save(fig, path)


def plot_pro(fpr, pro, aupro: float, fpr_limit: float, path, title: str = "Per-region overlap") -> Path:
    """PRO curve (``fpr`` ascending) up to ``fpr_limit``, the range AU-PRO integrates (normalised to [0, 1])."""
    fpr, pro = _curve(fpr, pro, "fpr", "pro")
    limit = float(fpr_limit)
    if not 0 < limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}.")
    # Cut the curve at the limit, interpolating the last point, as AU-PRO does.
    inside = fpr <= limit
    x, y = fpr[inside], pro[inside]
    if x.size == 0 or x[-1] < limit <= fpr[-1]:
        x = np.append(x, limit)
        y = np.append(y, np.interp(limit, fpr, pro))
    fig, ax = _figure(f"{title} · AU-PRO@{limit:g} {format_value(aupro, 3)}",
                      "False positive rate (normal pixels)", "Per-region overlap")
    ax.fill_between(x, y, color=BLUE, alpha=0.10, lw=0)
    ax.plot(x, y, color=BLUE, lw=1.8)
    ax.set_xlim(0, limit)
    ax.set_ylim(0, 1.02)
    return _save(fig, path)


def plot_pimo(shared_fpr, per_image_tpr, fpr_bounds, path, aupimo_mean: float | None = None,
              title: str = "PIMO") -> Path:
    """Per-image TPR against the shared FPR on normal images (log x), one thin line per anomalous image, their
    mean in bold and the AUPIMO integration range ``fpr_bounds = (L, U)`` shaded.

    Args:
        shared_fpr: (K,) shared FPR levels, ascending (zeros are dropped: no place on a log axis).
        per_image_tpr: (M, K) TPR of each anomalous image at each level (rows of NaN are dropped).
        aupimo_mean: the exact mean AUPIMO for the title (``vadkit.metrics.aupimo(...).mean``). When None, the
            title shows an estimate from these curves (trapezoid rule in log FPR), marked with "≈".
    """
    fpr = np.asarray(shared_fpr, dtype=np.float64).ravel()
    tpr = np.atleast_2d(np.asarray(per_image_tpr, dtype=np.float64))
    if tpr.shape[1] != fpr.size:
        raise ValueError(f"per_image_tpr must be (M, {fpr.size}) to match shared_fpr, got {tpr.shape}.")
    lower, upper = (float(b) for b in fpr_bounds)
    if not 0 < lower < upper <= 1:
        raise ValueError(f"fpr_bounds must satisfy 0 < lower < upper <= 1, got {fpr_bounds!r}.")
    keep = fpr > 0
    fpr, tpr = fpr[keep], tpr[:, keep]
    tpr = tpr[~np.isnan(tpr).all(axis=1)]
    if aupimo_mean is None:
        estimate = _mean_aupimo_estimate(fpr, tpr, lower, upper)
        area = "n/a" if estimate is None else f"≈ {format_value(estimate, 3)}"
    else:
        area = format_value(aupimo_mean, 3)
    fig, ax = _figure(f"{title} · mean AUPIMO {area}", "Shared FPR on normal images (log)",
                      "Per-image TPR (defect pixels found)")
    ax.set_xscale("log")
    ax.axvspan(lower, upper, color=SHADE, alpha=0.45, lw=0, label=f"AUPIMO range [{_sci(lower)}, {_sci(upper)}]")
    if fpr.size and len(tpr):
        lines = np.stack([np.broadcast_to(fpr, tpr.shape), tpr], axis=-1)  # (M, K, 2) polylines
        ax.add_collection(LineCollection(lines, colors=BLUE, linewidths=0.7, alpha=0.25))
        ax.plot(fpr, np.nanmean(tpr, axis=0), color=INK, lw=1.8, label=f"mean of {len(tpr)} images")
    left = min(lower / 3, fpr.min()) if fpr.size else lower / 3
    right = max(upper * 3, fpr.max()) if fpr.size else upper * 3
    ax.set_xlim(max(left, lower / 10), min(right, upper * 10, 1.0))
    ax.set_ylim(0, 1.02)
    _legend(ax, loc="upper left")
    return _save(fig, path)


def plot_score_histogram(scores, labels, threshold: float | None, path, title: str = "Image scores") -> Path:
    """Histograms of the scores of normal (label 0) and anomalous (label 1) images on shared bins, with the
    decision threshold as a vertical line (``None``: the model is uncalibrated, said in the legend)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape or scores.size == 0:
        raise ValueError(f"scores and labels must be non-empty and of equal length, got {scores.shape}, "
                         f"{labels.shape}.")
    anomalous = labels.astype(bool)
    edges = np.histogram_bin_edges(scores, bins=int(np.clip(math.sqrt(scores.size) * 2, 10, 50)))
    fig, ax = _figure(f"{title} · {int((~anomalous).sum())} normal, {int(anomalous.sum())} anomalous",
                      "Anomaly score", "Images")
    for values, colour, name in ((scores[~anomalous], BLUE, "normal"), (scores[anomalous], RED, "anomalous")):
        if values.size:
            ax.hist(values, bins=edges, color=colour, alpha=0.45, label=name, histtype="stepfilled")
            ax.hist(values, bins=edges, color=colour, lw=1.2, histtype="step")
    if threshold is not None:
        ax.axvline(float(threshold), color=INK, lw=1.4, ls="--", label=f"threshold {format_value(threshold, 3)}")
    else:
        ax.plot([], [], " ", label="no threshold (uncalibrated)")
    _legend(ax, loc="upper right")
    return _save(fig, path)


def plot_per_defect(per_defect: dict[str, dict[str, float]], metric: str, path) -> Path:
    """Horizontal bars of ``metric`` per defect type (best on top), each labelled with its value. Defect types
    without the metric are left out; the figure grows 0.3 inch taller per bar beyond six."""
    rows = [(name, float(values[metric])) for name, values in per_defect.items()
            if values.get(metric) is not None and not math.isnan(float(values[metric]))]
    if not rows:
        raise ValueError(f"no defect type has a value for {metric!r}.")
    rows.sort(key=lambda row: row[1])  # barh draws bottom-up: the best ends on top
    names, values = [name for name, _ in rows], np.array([value for _, value in rows])
    height = max(FIGSIZE[1], 1.2 + 0.3 * len(rows))
    label = metric_label(metric)
    fig, ax = _figure(f"{label} per defect type · mean {format_value(values.mean(), 3)}", label, None,
                      size=(FIGSIZE[0], height), fit_labels=True)
    positions = np.arange(len(rows))
    ax.barh(positions, values, color=BLUE, alpha=0.85, height=0.62)
    ax.set_yticks(positions, names)
    ax.grid(axis="y", visible=False)
    unit_range = values.min() >= 0 and values.max() <= 1
    right = 1.0 if unit_range else max(values.max(), 0) * 1.05 or 1.0
    for y, value in zip(positions, values):
        ax.text(value + right * 0.01, y, format_value(value, 3), va="center", ha="left", fontsize=8, color=INK)
    ax.set_xlim(min(values.min(), 0), right * 1.14)
    slots = max(len(rows), 6)  # a few defect types: bars keep a sensible thickness, centred
    ax.set_ylim(-0.5 - (slots - len(rows)) / 2, len(rows) - 0.5 + (slots - len(rows)) / 2)
    return _save(fig, path)


def pareto_front(x, y) -> np.ndarray:
    """Indices of the points no other point beats on both axes (lower ``x``, higher ``y``), by increasing ``x``:
    for each, no point costs at most as much and scores strictly higher, or costs less and scores as much."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    order = np.lexsort((-y, x))  # by cost, the better score first among equal costs
    front, best = [], -np.inf
    for index in order:
        if y[index] > best:
            front.append(index)
            best = y[index]
    return np.asarray(front, dtype=int)


def plot_pareto(points, x_name: str, y_name: str, path, title: str, log_x: bool = True) -> Path:
    """Score against cost: one marker per point, the Pareto front as a step line.

    ``points``: (label, colour group, marker group, x, y) tuples; points sharing a colour group (a method) share
    a colour, those sharing a marker group (a backbone) a marker. Points with a missing x or y are left out.
    """
    kept = [p for p in points if p[3] is not None and p[4] is not None and math.isfinite(p[3])
            and math.isfinite(p[4])]
    fig, ax = _figure(title, x_name, y_name, size=(FIGSIZE[0] * 1.25, FIGSIZE[1] * 1.15), fit_labels=True)
    colours = {group: _PALETTE[i % len(_PALETTE)] for i, group in enumerate(dict.fromkeys(p[1] for p in kept))}
    markers = {group: _MARKERS[i % len(_MARKERS)] for i, group in enumerate(dict.fromkeys(p[2] for p in kept))}
    if kept:
        x = np.array([p[3] for p in kept], dtype=float)
        y = np.array([p[4] for p in kept], dtype=float)
        front = pareto_front(x, y)
        ax.step(x[front], y[front], where="post", color=MUTED, lw=1.2, ls="--", zorder=1, label="Pareto front")
        for label, colour_group, marker_group, px, py in kept:
            ax.scatter([px], [py], s=46, color=colours[colour_group], marker=markers[marker_group], zorder=3,
                       edgecolors="white", linewidths=0.6)
        for index in front:
            ax.annotate(kept[index][0], (x[index], y[index]), xytext=(4, 4), textcoords="offset points", fontsize=7,
                        color=INK)
        if log_x and np.all(x > 0) and x.max() / x.min() > 20:  # a log axis only where it separates the points
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _short(value)))
        handles = [ax.scatter([], [], color=c, marker="o", s=36, label=str(g)) for g, c in colours.items()]
        handles += [ax.scatter([], [], color=MUTED, marker=m, s=36, label=str(g)) for g, m in markers.items()]
        _legend(ax, handles=handles + [ax.lines[0]], loc="best")
    else:
        ax.text(0.5, 0.5, "no finished cell has both figures", ha="center", va="center", color=MUTED,
                transform=ax.transAxes)
    return _save(fig, path)


def _figure(title: str, xlabel: str | None, ylabel: str | None, size=FIGSIZE, fit_labels: bool = False):
    """A figure with one styled axes. Fixed margins (the curves' tick labels are short) unless ``fit_labels``:
    then constrained layout sizes the margins to the labels (per-defect names), at twice the drawing time."""
    fig = Figure(figsize=size, dpi=DPI, layout="constrained" if fit_labels else None, facecolor="white")
    if not fit_labels:
        fig.subplots_adjust(left=0.12, right=0.97, bottom=0.13, top=0.9)
    FigureCanvasAgg(fig)  # the Agg renderer, attached to this figure only
    ax = fig.add_subplot()
    # A figure-level title, left-aligned: long titles use the full width, not only the axes' (long tick labels).
    fig.suptitle(title, x=0.02, ha="left", fontsize=10.5, color=INK, fontweight="bold")
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=9, color=INK)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=9, color=INK)
    ax.tick_params(labelsize=8, colors=MUTED)
    ax.grid(True, color=GRID, lw=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#9ca3af")
    return fig, ax


def _unit_box(ax) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)


def _legend(ax, **kwargs) -> None:
    ax.legend(fontsize=8, frameon=True, framealpha=0.9, edgecolor=GRID, **kwargs)


def _save(fig: Figure, path) -> Path:
    """Render and write a 256-colour palette PNG: a figure has few colours besides anti-aliasing, and the palette
    keeps plots with hundreds of translucent lines (PIMO) at ~1/3 of their full-colour size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3]
    palette = Image.fromarray(pixels).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    palette.save(path, format="PNG", optimize=False, compress_level=6)
    return path


def _short(value: float) -> str:
    """Axis numbers without exponents: 2.5e7 -> '25M', 1200 -> '1.2k', 12.5 -> '12.5'."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def _sci(value: float) -> str:
    """1e-05 -> '1e-5'."""
    return np.format_float_scientific(value, trim="-", exp_digits=1)


def _curve(x, y, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"{x_name} and {y_name} must be non-empty and of equal length, got {x.shape}, {y.shape}.")
    return x, y


def _mean_aupimo_estimate(fpr: np.ndarray, tpr: np.ndarray, lower: float, upper: float) -> float | None:
    """Mean over images of the area under TPR(log FPR) on [L, U] / log(U / L), from the plotted vertices."""
    if fpr.size < 2 or len(tpr) == 0 or fpr[0] > lower or fpr[-1] < upper:
        return None  # the curves do not cover the range
    grid = np.linspace(math.log(lower), math.log(upper), 513)
    log_fpr = np.log(fpr)
    right = np.clip(np.searchsorted(log_fpr, grid, side="left"), 1, fpr.size - 1)
    left = right - 1
    weight = np.clip((grid - log_fpr[left]) / np.maximum(log_fpr[right] - log_fpr[left], 1e-300), 0.0, 1.0)
    on_grid = tpr[:, left] * (1 - weight) + tpr[:, right] * weight  # (M, 513), images share the FPR axis
    step = grid[1] - grid[0]
    area = (on_grid[:, 1:] + on_grid[:, :-1]).sum(axis=1) * step / 2
    return float(np.nanmean(area / (grid[-1] - grid[0])))
