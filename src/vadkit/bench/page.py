"""``DIR/index.html``: the study on one self-contained page (the rules of :mod:`vadkit.report.html`).

Sections: ``#results`` (a table per dataset, every row linking to its cell's ``report.html``, or to its
``log.txt`` when it failed), ``#mean`` (mean over datasets per method and backbone), ``#pareto`` (per dataset,
image AUROC and pixel AU-PRO against latency, memory and MACs, with the Pareto front, as the edge-deployment
studies plot them) and ``#failures``.

Cost axes: ``latency_ms_b1``, ``peak_rss_mb`` and ``macs`` come from ``profile:``; without it the page falls
back to the figures every cell has (``predict_ms``, batched over the test set, and ``peak_rss_train_mb``) and
says so in the axis label; MACs are then not plotted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vadkit.bench.results import MARKDOWN_COLUMNS, mean_over_datasets
from vadkit.report.formatting import format_value, metric_label
from vadkit.report.html import escape_html as _e
from vadkit.report.html import figures_grid, render_page
from vadkit.report.html import section as _section

__all__ = ["INDEX_FILE", "write_index"]

INDEX_FILE = "index.html"
PLOTS_DIR = "plots"
SCORES = (("image_auroc", "Image AUROC"), ("pixel_aupro", "Pixel AU-PRO"))
#: (primary column, fallback column, axis label): see the module docstring
COSTS = (("latency_ms_b1", "predict_ms", "latency (ms per image, batch 1)"),
         ("peak_rss_mb", "peak_rss_train_mb", "peak RSS (MiB)"),
         ("macs", None, "MACs per image"))
_TABLE_COLUMNS = ("image_auroc", "image_aupr", "pixel_auroc", "pixel_aupro", "aupimo_mean", "fit_s", "predict_ms",
                  "latency_ms_b1", "peak_rss_mb", "params", "macs", "bank_bytes")


def write_index(rows: Sequence[dict[str, Any]], out: Path, *, title: str, facts: dict[str, Any]) -> Path:
    """Write ``out/index.html`` (and the plots it embeds under ``out/plots/``); returns its path."""
    out = Path(out)
    plots = _pareto_plots(rows, out / PLOTS_DIR)
    counts = {state: sum(row["status"] == state for row in rows) for state in ("done", "failed", "pending")}
    facts = {**facts, "cells": f"{len(rows)}: {counts['done']} done, {counts['failed']} failed, "
                                f"{counts['pending']} pending"}
    header = (f'<p class="eyebrow">vadkit · benchmark</p><h1>{_e(title)}</h1><dl class="meta">'
              + "".join(f'<div><dt>{_e(k)}</dt><dd title="{_e(v)}">{_e(v)}</dd></div>' for k, v in facts.items())
              + "</dl>")
    failed = [row for row in rows if row["status"] == "failed"]
    sections = [_results_section(rows), _mean_section(rows), _pareto_section(plots), _failures_section(failed)]
    nav = [("results", "Results"), ("mean", "Mean over datasets"), ("pareto", "Pareto plots"),
           ("failures", f"Failures ({len(failed)})")]
    target = out / INDEX_FILE
    target.write_text(render_page(title=title, header=header, nav=nav, sections=sections), encoding="utf-8")
    return target


def _results_section(rows) -> str:
    tables = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        mine = [row for row in rows if row["dataset"] == dataset]
        columns = [c for c in _TABLE_COLUMNS if any(row.get(c) is not None for row in mine)]
        head = ("<th>Method</th><th>Backbone</th><th class=\"num\">Seed</th><th>Status</th>"
                + "".join(f'<th class="num" title="{_e(c)}">{_e(metric_label(c))}</th>' for c in columns))
        body = "".join(f'<tr data-cell="{_e(row["cell"])}" data-status="{_e(row["status"])}">'
                       f"<td>{_link(row)}</td><td>{_e(row['backbone'])}</td><td class=\"num\">{row['seed']}</td>"
                       f"<td>{_e(row['status'])}</td>"
                       + "".join(f'<td class="num">{_e(_shown(c, row.get(c)))}</td>' for c in columns) + "</tr>"
                       for row in mine)
        tables.append(f'<h3>{_e(dataset)}</h3><div class="scroll"><table class="data results" '
                      f'data-dataset="{_e(dataset)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>')
    return _section("results", "Results", "".join(tables))


def _link(row) -> str:
    """The cell's report (done), its log (failed), or its name alone (pending)."""
    target = {"done": "report.html", "failed": "log.txt"}.get(row["status"])
    if target is None:
        return _e(row["method"])
    return f'<a href="{_e(row["cell"])}/{target}">{_e(row["method"])}</a>'


def _mean_section(rows) -> str:
    if len({row["dataset"] for row in rows}) < 2:
        return _section("mean", "Mean over datasets", '<p class="muted">One dataset: its table is above.</p>')
    means = mean_over_datasets(rows)
    if not means:
        return _section("mean", "Mean over datasets", '<p class="muted">No cell is done yet.</p>')
    head = ("<th>Method</th><th>Backbone</th><th class=\"num\">n</th>"
            + "".join(f'<th class="num">{_e(metric_label(c))}</th>' for c in MARKDOWN_COLUMNS))
    body = "".join(f"<tr><td>{_e(m['method'])}</td><td>{_e(m['backbone'])}</td><td class=\"num\">{m['n']}</td>"
                   + "".join(f'<td class="num">{_e(_shown(c, m.get(c)))}</td>' for c in MARKDOWN_COLUMNS) + "</tr>"
                   for m in means)
    note = '<p class="muted small">Mean of the cells that are done (n), over datasets and seeds.</p>'
    return _section("mean", "Mean over datasets", f'{note}<div class="scroll"><table class="data" id="mean-table">'
                                                  f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _pareto_section(plots: dict[str, Path]) -> str:
    if not plots:
        return _section("pareto", "Pareto plots", '<p class="muted">No cell has both a score and a cost yet.</p>')
    note = ('<p class="muted small">Each marker is a cell (colour: method, shape: backbone); the dashed step line '
            "joins the cells no other cell beats on both axes (lower cost, higher score).</p>")
    return _section("pareto", "Pareto plots", note + figures_grid(plots))


def _failures_section(failed) -> str:
    if not failed:
        return _section("failures", "Failures", '<p class="muted">No cell failed.</p>')
    items = "".join(f"<li><a href=\"{_e(row['cell'])}/log.txt\">{_e(row['cell'])}</a>: <code>{_e(row['error'])}"
                    f"</code></li>" for row in failed)
    return _section("failures", "Failures", f'<ul class="notes" id="failures-list">{items}</ul>')


def _pareto_plots(rows, folder: Path) -> dict[str, Path]:
    from vadkit.report.plots import plot_pareto

    for stale in folder.glob("pareto_*.png") if folder.is_dir() else ():
        stale.unlink()
    plots = {}
    done = [row for row in rows if row["status"] == "done"]
    for dataset in dict.fromkeys(row["dataset"] for row in done):
        mine = [row for row in done if row["dataset"] == dataset]
        for score, score_label in SCORES:
            if not any(row.get(score) is not None for row in mine):
                continue
            for primary, fallback, axis in COSTS:
                cost = primary if any(row.get(primary) is not None for row in mine) else fallback
                if cost is None or not any(row.get(cost) is not None for row in mine):
                    continue
                label = axis if cost == primary else f"{metric_label(cost)} (no profile)"
                points = [(f"{row['method']}/{row['backbone']}", row["method"], row["backbone"], row.get(cost),
                           row.get(score)) for row in mine]
                caption = f"{dataset}: {score_label} vs {label}"
                plots[caption] = plot_pareto(points, label, score_label,
                                             folder / f"pareto_{dataset}_{score}_{cost}.png", caption)
    return plots


def _shown(column: str, value: Any) -> str:
    if column == "macs" and value is not None:
        return f"{value / 1e9:.2f} G"
    if column in ("bank_bytes",) and value is not None:
        return f"{value / 2**20:.2f} MiB"
    if isinstance(value, float) and column not in MARKDOWN_COLUMNS[:4] and column not in ("image_aupr",):
        return format_value(value, 1)
    return format_value(value)

