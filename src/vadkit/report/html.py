"""One self-contained HTML report: summary, thresholds, curves, per-defect table and an image gallery.

Self-contained means one file that works offline, e-mailed or archived: CSS and JavaScript are inline, images are
base64 ``data:`` URIs, there is no external URL of any kind (no CDN, no web font), and a Content-Security-Policy
meta tag forbids the page from loading anything that is not inline or ``data:``. Every text from the caller
(names, notes, metric keys) is HTML-escaped.

Sections, in order (their ids are anchors of the navigation bar): ``#summary`` (metrics with intervals, run
facts), ``#notes``, ``#thresholds``, ``#curves``, ``#per-defect``, ``#gallery``.

The gallery is plain JavaScript, no framework. The script relies on:

- ``#gallery-grid``: the container of the cards, ``article.card`` elements with ``data-score`` (float),
  ``data-name``, ``data-outcome`` (``TP``/``FP``/``FN``/``TN``, or ``none`` without a threshold), ``data-label``
  (0/1) and ``data-defect``;
- buttons ``[data-sort]`` (``score-desc``, ``score-asc``, ``name``; ids ``#sort-score-desc``...) and
  ``[data-filter]`` (``all``, ``fp``, ``fn``, ``errors``, ``anomalous``, ``normal``; ids ``#filter-fp``...), the
  active one with ``aria-pressed="true"``;
- ``#gallery-count``: "N of M images", the visible count also in its ``data-visible`` attribute;
  ``#gallery-empty``: shown when no card matches;
- ``#viewer`` (a ``<dialog>``): a click on a panel shows it enlarged.

Cards are written sorted by score, highest first (the initial state, also without JavaScript); hidden cards get
the ``hidden`` attribute. Panel images are ``loading="lazy"`` with their size set, so a report with a few
hundred cards opens at once and decodes images as they scroll into view.
"""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

from vadkit.report.formatting import format_value, metric_label
from vadkit.report.gallery import GalleryItem
from vadkit.visualize import COLORMAP_ANCHORS

__all__ = ["GalleryItem", "escape_html", "figures_grid", "render_page", "render_report", "section", "write_report"]

# Summary entries that describe the run rather than measure it: shown with the run facts, not as metrics.
_FACT_KEYS = frozenset({"threshold", "test images", "anomalous images", "normal images", "n_test", "n_train",
                        "train images"})
_HEADER_KEYS = ("model", "backbone", "data", "date", "report written")
_FILTERS = (("all", "All"), ("fp", "False positives"), ("fn", "False negatives"), ("errors", "Errors"),
            ("anomalous", "Anomalous"), ("normal", "Normal"))
_SORTS = (("score-desc", "Score ↓"), ("score-asc", "Score ↑"), ("name", "Name"))
_OUTCOME_TITLES = {"TP": "true positive: anomalous, flagged", "FP": "false positive: normal, flagged",
                   "FN": "false negative: anomalous, missed", "TN": "true negative: normal, passed",
                   "none": "no threshold: the model is uncalibrated"}
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml",
         ".webp": "image/webp", ".gif": "image/gif"}


def write_report(path, *, title: str, summary: Mapping[str, object],
                 intervals: Mapping[str, tuple[float, float]] | None, per_defect: Mapping[str, Mapping[str, float]],
                 threshold_table: Sequence[Mapping[str, object]], plots: Mapping[str, Path],
                 gallery: Sequence[GalleryItem], notes: Sequence[str]) -> Path:
    """Write the report to ``path`` (UTF-8) and return it.

    Args:
        title: the page title.
        summary: run facts and metrics, in display order. Numbers become rows of the metrics table (with their
            ``intervals`` entry), except counts and the threshold, which join the text facts under "Run";
            ``model``, ``backbone``, ``data`` and ``date`` (or ``report written``) go to the header.
        intervals: metric key -> (low, high) 95% bootstrap interval; None or {} when not computed.
        per_defect: defect type -> metric key -> value (one table row per defect type).
        threshold_table: one dict per operating point; the columns are the union of the keys, in first-seen order.
        plots: caption -> image file (PNG, JPEG or SVG), embedded in this order.
        gallery: the cards, any order (written by descending score).
        notes: free-text remarks shown under the summary.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = render_report(title=title, summary=summary, intervals=intervals, per_defect=per_defect,
                         threshold_table=threshold_table, plots=plots, gallery=gallery, notes=notes)
    path.write_text(page, encoding="utf-8")
    return path


def render_report(*, title: str, summary: Mapping[str, object],
                  intervals: Mapping[str, tuple[float, float]] | None,
                  per_defect: Mapping[str, Mapping[str, float]], threshold_table: Sequence[Mapping[str, object]],
                  plots: Mapping[str, Path], gallery: Sequence[GalleryItem], notes: Sequence[str]) -> str:
    """The report as a string (see ``write_report``)."""
    intervals = dict(intervals or {})
    sections = [
        _summary_section(summary, intervals),
        _notes_section(notes),
        _thresholds_section(threshold_table),
        _curves_section(plots),
        _per_defect_section(per_defect),
        _gallery_section(gallery, summary.get("threshold")),
    ]
    nav = [("summary", "Summary"), *([("notes", "Notes")] if notes else []), ("thresholds", "Thresholds"),
           ("curves", "Curves"), ("per-defect", "Per defect"), ("gallery", f"Gallery ({len(gallery)})")]
    return render_page(title=title, header=_header(title, summary), nav=nav, sections=sections, script=_SCRIPT)


def render_page(*, title: str, header: str, nav: Sequence[tuple[str, str]], sections: Sequence[str],
                script: str = "") -> str:
    """The self-contained page every vadkit report uses (the module docstring's rules): ``header`` and
    ``sections`` are HTML the caller escaped; ``nav`` is (anchor, text) pairs of the navigation bar."""
    from vadkit import __version__

    return _PAGE.format(
        title=_e(title),
        header=header,
        nav="".join(f'<a href="#{anchor}">{_e(text)}</a>' for anchor, text in nav),
        sections="\n".join(sections),
        version=_e(__version__),
        css=_CSS,
        script=script,
    )


# --------------------------------------------------------------------------------------------------- sections


def _header(title: str, summary: Mapping[str, object]) -> str:
    model = summary.get("model")
    if model is not None and summary.get("backbone"):
        model = f"{model} ({summary['backbone']})"
    data = summary.get("data") or summary.get("layout")
    date = summary.get("date") or summary.get("report written") or _dt.datetime.now().isoformat(timespec="seconds")
    facts = [("Model", model), ("Data", data), ("Date", str(date).replace("T", " "))]
    items = "".join(f'<div><dt>{_e(name)}</dt><dd title="{_e(value)}">{_e(value)}</dd></div>'
                    for name, value in facts if value is not None)
    return (f'<p class="eyebrow">vadkit · anomaly detection report</p><h1>{_e(title)}</h1>'
            f'<dl class="meta">{items}</dl>')


def _is_metric(key: str, value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and key not in _FACT_KEYS


def _summary_section(summary: Mapping[str, object], intervals: Mapping[str, tuple[float, float]]) -> str:
    header_keys = set(_HEADER_KEYS) | ({"layout"} if not summary.get("data") else set())
    metrics = [(k, v) for k, v in summary.items() if _is_metric(k, v)]
    facts = [(k, v) for k, v in summary.items() if not _is_metric(k, v) and k not in header_keys]
    with_intervals = any(key in intervals for key, _ in metrics)
    rows = []
    for key, value in metrics:
        cells = [f'<th scope="row">{_e(metric_label(key))}<code>{_e(key)}</code></th>',
                 f'<td class="num">{_e(format_value(value))}</td>']
        if with_intervals:
            bounds = intervals.get(key)
            text = f"[{format_value(bounds[0])}, {format_value(bounds[1])}]" if bounds is not None else "—"
            cells.append(f'<td class="num interval">{_e(text)}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "<th>Metric</th><th class=\"num\">Value</th>" + ('<th class="num">95% interval</th>' if with_intervals
                                                           else "")
    table = (f'<table class="data" id="summary-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
             f"</tbody></table>" if rows else '<p class="muted">No metric was computed.</p>')
    fact_items = "".join(f"<div><dt>{_e(_capitalise(metric_label(k)))}</dt><dd>{_e(format_value(v))}</dd></div>"
                         for k, v in facts)
    facts_box = f'<aside class="facts"><h3>Run</h3><dl>{fact_items}</dl></aside>' if facts else ""
    return _section("summary", "Summary", f'<div class="summary-grid"><div>{table}</div>{facts_box}</div>')


def _notes_section(notes: Sequence[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return _section("notes", "Notes", f'<ul class="notes">{items}</ul>')


def _thresholds_section(rows: Sequence[Mapping[str, object]]) -> str:
    if not rows:
        body = '<p class="muted">No operating point: the model has no threshold, or the test set has one class.</p>'
        return _section("thresholds", "Thresholds", body)
    # One column per name, whatever the spelling: "miss rate" in one row and "miss_rate" in another are one column.
    rows = [{_column_key(key): value for key, value in row.items()} for row in rows]
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    numeric = {c: _numeric_column(rows, c) for c in columns}
    head = "".join(f'<th class="{"num" if numeric[c] else ""}">{_e(_capitalise(metric_label(c)))}</th>'
                   for c in columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if numeric[c] else ""}">{_e(format_value(row.get(c)))}</td>'
                         for c in columns) + "</tr>"
        for row in rows)
    table = f'<table class="data" id="thresholds-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    return _section("thresholds", "Thresholds", f'<div class="scroll">{table}</div>')


def _curves_section(plots: Mapping[str, Path]) -> str:
    if not plots:
        return _section("curves", "Curves", '<p class="muted">No curve was plotted.</p>')
    return _section("curves", "Curves", figures_grid(plots))


def figures_grid(plots: Mapping[str, Path]) -> str:
    """Image files embedded as ``data:`` URIs in a grid of captioned figures (caption -> file, in order)."""
    figures = []
    for caption, file in plots.items():
        file = Path(file)
        data = file.read_bytes()
        mime = _MIME.get(file.suffix.lower(), "image/png")
        figures.append(f'<figure class="plot"><img src="{_data_uri(data, mime)}" alt="{_e(caption)}"'
                       f'{_size_attributes(data)} decoding="async"><figcaption>{_e(caption)}</figcaption></figure>')
    return f'<div class="plots">{"".join(figures)}</div>'


def _per_defect_section(per_defect: Mapping[str, Mapping[str, float]]) -> str:
    if not per_defect:
        return _section("per-defect", "Per defect type", '<p class="muted">No per-defect breakdown.</p>')
    columns: list[str] = []
    for values in per_defect.values():
        columns += [key for key in values if key not in columns]
    head = "<th>Defect type</th>" + "".join(f'<th class="num">{_e(metric_label(c))}</th>' for c in columns)
    rows = []
    for defect, values in per_defect.items():
        cells = [f'<th scope="row">{_e(defect)}</th>']
        for column in columns:
            value = values.get(column)
            cells.append(f'<td class="num">{_bar(value)}{_e(format_value(value, 3))}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    table = (f'<table class="data bars" id="per-defect-table"><thead><tr>{head}</tr></thead>'
             f"<tbody>{''.join(rows)}</tbody></table>")
    note = '<p class="muted small">Bars: metric value on a 0–1 scale.</p>'
    return _section("per-defect", "Per defect type", f'<div class="scroll">{table}</div>{note}')


def _gallery_section(gallery: Sequence[GalleryItem], threshold: object = None) -> str:
    if not gallery:
        return _section("gallery", "Gallery", '<p class="muted">No image in the gallery.</p>')
    items = sorted(gallery, key=lambda item: -_sortable(item.score))
    outcomes = [item.outcome or "none" for item in items]
    counts = {
        "all": len(items),
        "fp": outcomes.count("FP"),
        "fn": outcomes.count("FN"),
        "errors": outcomes.count("FP") + outcomes.count("FN"),
        "anomalous": sum(int(item.label) == 1 for item in items),
        "normal": sum(int(item.label) == 0 for item in items),
    }
    sort_buttons = "".join(
        f'<button type="button" id="sort-{key}" data-sort="{key}" aria-pressed="{str(key == "score-desc").lower()}">'
        f"{_e(text)}</button>" for key, text in _SORTS)
    filter_buttons = "".join(
        f'<button type="button" id="filter-{key}" data-filter="{key}" aria-pressed="{str(key == "all").lower()}">'
        f'{_e(text)} <span class="n">{counts[key]}</span></button>' for key, text in _FILTERS)
    rule = format_value(threshold) if isinstance(threshold, (int, float)) else "threshold"
    scale = ", ".join(f"rgb({r},{g},{b})" for r, g, b in COLORMAP_ANCHORS)
    legend = (
        '<div class="legend">'
        '<span class="tile-key"><i class="swatch contour"></i>1 · image, ground truth outlined</span>'
        f'<span class="tile-key"><i class="swatch scale" style="background:linear-gradient(90deg,{scale})"></i>'
        "2 · anomaly map, low → high (one scale for all images)</span>"
        f'<span class="tile-key"><i class="swatch predicted"></i>3 · predicted defect (map ≥ {_e(rule)})</span>'
        "</div>"
    )
    controls = (
        '<div class="controls">'
        f'<div class="group" role="group" aria-label="Sort"><span class="group-label">Sort</span>{sort_buttons}</div>'
        f'<div class="group" role="group" aria-label="Filter"><span class="group-label">Show</span>{filter_buttons}'
        "</div>"
        f'<p id="gallery-count" data-visible="{len(items)}" aria-live="polite">{len(items)} of {len(items)} images</p>'
        "</div>"
    )
    cards = "".join(_card(item, outcome) for item, outcome in zip(items, outcomes))
    body = (f"{legend}{controls}<div id=\"gallery-grid\" class=\"gallery\">{cards}</div>"
            '<p id="gallery-empty" class="muted" hidden>No image matches this filter.</p>')
    return _section("gallery", "Gallery", body)


def _card(item: GalleryItem, outcome: str) -> str:
    label = int(item.label)
    truth = "anomalous" if label else "normal"
    if item.predicted is None:
        decision = "no threshold"
    else:
        decision = "flagged" if int(item.predicted) else "passed"
    details = [f"score <b>{_e(format_value(item.score))}</b>"]
    if item.aupimo is not None and not (isinstance(item.aupimo, float) and math.isnan(item.aupimo)):
        details.append(f"AUPIMO <b>{_e(format_value(item.aupimo, 3))}</b>")
    badge_text = outcome if outcome != "none" else "n/a"
    alt = f"{item.name}: image with ground truth, anomaly heatmap, predicted defect"
    return (
        f'<article class="card outcome-{outcome.lower()}" data-score="{_score_attribute(item.score)}" '
        f'data-name="{_e(item.name)}" data-outcome="{outcome}" data-label="{label}" '
        f'data-defect="{_e(item.defect_type)}">'
        f'<button type="button" class="zoom" aria-label="Enlarge {_e(item.name)}">'
        f'<img src="{_data_uri(item.png, "image/png")}" alt="{_e(alt)}"{_size_attributes(item.png)} '
        'loading="lazy" decoding="async"></button>'
        '<div class="caption">'
        f'<div class="title-row"><span class="name" title="{_e(item.name)}">{_e(item.name)}</span>'
        f'<span class="badge badge-{outcome.lower()}" title="{_e(_OUTCOME_TITLES[outcome])}">{badge_text}</span></div>'
        f'<div class="sub"><span class="chip">{_e(item.defect_type)}</span>{" · ".join(details)}</div>'
        f'<div class="sub muted">truth {truth} · model {decision}</div>'
        "</div></article>"
    )


# ---------------------------------------------------------------------------------------------------- helpers


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _section(anchor: str, heading: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{_e(heading)}</h2>{body}</section>'


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# for other pages built on render_page (the benchmark summary)
escape_html = _e
section = _section


def _size_attributes(data: bytes) -> str:
    """``width``/``height`` from the image header, so the layout does not jump while lazy images decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        return ""  # e.g. SVG: the browser sizes it
    return f' width="{width}" height="{height}"'


def _column_key(key: str) -> str:
    return key.strip().lower().replace(" ", "_")


def _numeric_column(rows: Sequence[Mapping[str, object]], column: str) -> bool:
    values = [row.get(column) for row in rows if row.get(column) is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _bar(value: object) -> str:
    """A small bar for floats in [0, 1] (AUROC, AUPIMO...), so weak defect types stand out."""
    if isinstance(value, float) and not math.isnan(value) and 0.0 <= value <= 1.0:
        return f'<span class="bar" aria-hidden="true"><i style="width:{value * 100:.1f}%"></i></span>'
    return ""


def _sortable(score: float) -> float:
    score = float(score)
    return -math.inf if math.isnan(score) else score


def _score_attribute(score: float) -> str:
    return repr(float(score))


_CSS = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--bg:#f6f7f9;--card:#fff;--accent:#2563eb;
--tp:#15803d;--tn:#64748b;--fp:#d97706;--fn:#dc2626;
font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);
background:var(--bg);line-height:1.45}
*{box-sizing:border-box}
body{margin:0}
[hidden]{display:none!important}
.wrap{max-width:1280px;margin:0 auto;padding:0 24px}
header.page{background:#fff}
header.page .top{padding:18px 24px 12px}
.eyebrow{margin:0;font-size:12px;letter-spacing:.06em;text-transform:uppercase;color:var(--muted)}
h1{margin:2px 0 8px;font-size:24px;line-height:1.2;word-break:break-word}
.meta{display:flex;flex-wrap:wrap;gap:6px 28px;margin:0;font-size:13px}
.meta div{display:flex;gap:6px;min-width:0}
.meta dt{color:var(--muted)}
.meta dd{margin:0;font-weight:600;max-width:520px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.navbar{position:sticky;top:0;z-index:5;background:rgba(255,255,255,.96);border-bottom:1px solid var(--line);
height:40px}
nav.toc{display:flex;gap:4px;padding-top:6px;padding-bottom:6px;overflow-x:auto}
nav.toc a{color:var(--ink);text-decoration:none;font-size:13px;padding:4px 10px;border-radius:999px}
nav.toc a:hover{background:#eef2ff;color:var(--accent)}
main{padding-top:8px;padding-bottom:40px}
section{margin-top:28px;scroll-margin-top:52px}
h2{font-size:18px;margin:0 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:14px;margin:0 0 8px}
.muted{color:var(--muted)}
.small{font-size:12px}
.scroll{overflow-x:auto}
table.data{border-collapse:collapse;background:#fff;border:1px solid var(--line);border-radius:8px;
font-size:13px;font-variant-numeric:tabular-nums;min-width:min(100%,420px)}
table.data th,table.data td{padding:6px 12px;text-align:left;border-bottom:1px solid var(--line);
white-space:nowrap}
table.data thead th{background:#f9fafb;font-weight:600;color:#374151;font-size:12px}
table.data tbody tr:last-child>*{border-bottom:0}
table.data tbody tr:hover{background:#f9fafb}
table.data .num{text-align:right}
table.data th[scope=row]{font-weight:500}
table.data th[scope=row] code{display:block;font-size:11px;color:var(--muted);font-weight:400}
.interval{color:#4b5563}
table.bars thead th{white-space:normal;min-width:72px;max-width:120px;vertical-align:bottom}
.bar{display:inline-block;width:36px;height:7px;border-radius:4px;background:#eef2f7;margin-right:6px;
vertical-align:middle;overflow:hidden}
.bar i{display:block;height:100%;background:#60a5fa;border-radius:4px}
.summary-grid{display:grid;grid-template-columns:minmax(0,auto) minmax(240px,360px);gap:20px;align-items:start;
justify-content:start}
.facts{background:#fff;border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.facts dl{margin:0;display:grid;grid-template-columns:auto 1fr;gap:4px 12px;font-size:13px}
.facts div{display:contents}
.facts dt{color:var(--muted)}
.facts dd{margin:0;word-break:break-word}
ul.notes{margin:0;padding:10px 14px 10px 30px;background:#fffbeb;border:1px solid #fde68a;border-radius:8px;
font-size:13px}
ul.notes li+li{margin-top:4px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
figure.plot{margin:0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:8px}
figure.plot img{display:block;width:100%;height:auto}
figure.plot figcaption{font-size:12px;color:var(--muted);padding-top:4px;text-align:center}
.legend{display:flex;flex-wrap:wrap;gap:6px 22px;font-size:12px;color:#4b5563;margin-bottom:10px}
.tile-key{display:flex;align-items:center;gap:6px}
.swatch{display:inline-block;width:28px;height:12px;border-radius:3px;border:1px solid #d1d5db}
.swatch.contour{background:#fff;border:2px solid #00c800}
.swatch.predicted{background:#f87171}
.controls{display:flex;flex-wrap:wrap;align-items:center;gap:10px 18px;background:#fff;border:1px solid var(--line);
border-radius:8px;padding:8px 12px;margin-bottom:14px;position:sticky;top:46px;z-index:4;
box-shadow:0 2px 6px rgba(0,0,0,.04)}
.group{display:flex;flex-wrap:wrap;align-items:center;gap:4px}
.group-label{font-size:12px;color:var(--muted);margin-right:4px}
.controls button{font:inherit;font-size:12.5px;border:1px solid #d1d5db;background:#fff;color:var(--ink);
border-radius:6px;padding:4px 10px;cursor:pointer}
.controls button:hover{border-color:var(--accent)}
.controls button[aria-pressed=true]{background:var(--accent);border-color:var(--accent);color:#fff}
.controls button .n{opacity:.7;font-variant-numeric:tabular-nums}
#gallery-count{margin:0 0 0 auto;font-size:13px;color:var(--muted);font-variant-numeric:tabular-nums}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(360px,1fr));gap:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;overflow:hidden;
box-shadow:0 1px 2px rgba(0,0,0,.04);display:flex;flex-direction:column;border-top:3px solid var(--line)}
.card.outcome-fp{border-top-color:var(--fp)}
.card.outcome-fn{border-top-color:var(--fn)}
.card.outcome-tp{border-top-color:var(--tp)}
.card.outcome-tn{border-top-color:#cbd5e1}
.zoom{display:block;padding:0;margin:0;border:0;background:#fff;cursor:zoom-in;width:100%}
.zoom img{display:block;width:100%;height:auto;image-rendering:auto}
.caption{padding:8px 12px 10px;font-size:12.5px}
.title-row{display:flex;align-items:center;gap:8px;justify-content:space-between}
.name{font-weight:600;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;min-width:0}
.sub{margin-top:3px;color:#374151;font-variant-numeric:tabular-nums}
.sub.muted{color:var(--muted)}
.chip{display:inline-block;background:#f3f4f6;border-radius:4px;padding:0 6px;margin-right:6px;color:#374151}
.badge{flex:none;font-size:11px;font-weight:700;letter-spacing:.03em;border-radius:4px;padding:1px 7px;color:#fff}
.badge-tp{background:var(--tp)}.badge-tn{background:var(--tn)}.badge-fp{background:var(--fp)}
.badge-fn{background:var(--fn)}.badge-none{background:#9ca3af}
dialog#viewer{border:0;border-radius:10px;padding:12px;max-width:96vw;box-shadow:0 10px 40px rgba(0,0,0,.35)}
dialog#viewer::backdrop{background:rgba(17,24,39,.7)}
dialog#viewer img{display:block;max-width:92vw;max-height:80vh;width:auto;height:auto;image-rendering:pixelated}
#viewer-caption{margin:8px 0 0;font-size:13px;color:var(--muted)}
footer{font-size:12px;color:var(--muted);padding:20px 24px 30px;text-align:center}
@media (max-width:760px){.summary-grid{grid-template-columns:1fr}.controls{position:static}
#gallery-count{margin-left:0}}
"""

_SCRIPT = """
(function () {
  "use strict";
  const grid = document.getElementById("gallery-grid");
  if (!grid) return;
  const count = document.getElementById("gallery-count");
  const empty = document.getElementById("gallery-empty");
  const items = Array.from(grid.querySelectorAll(".card"), (el, index) => ({
    el, index, score: parseFloat(el.dataset.score), name: el.dataset.name || "",
    outcome: el.dataset.outcome, label: el.dataset.label,
  }));
  const byName = (a, b) => a.name.localeCompare(b.name, undefined, {numeric: true}) || a.index - b.index;
  const orders = {
    "score-desc": (a, b) => (b.score - a.score) || byName(a, b),
    "score-asc": (a, b) => (a.score - b.score) || byName(a, b),
    "name": byName,
  };
  const filters = {
    all: () => true,
    fp: (it) => it.outcome === "FP",
    fn: (it) => it.outcome === "FN",
    errors: (it) => it.outcome === "FP" || it.outcome === "FN",
    anomalous: (it) => it.label === "1",
    normal: (it) => it.label === "0",
  };
  const state = {sort: "score-desc", filter: "all"};

  function apply() {
    items.sort(orders[state.sort]);
    const fragment = document.createDocumentFragment();
    let shown = 0;
    for (const it of items) {
      const visible = filters[state.filter](it);
      it.el.hidden = !visible;
      if (visible) shown += 1;
      fragment.appendChild(it.el);
    }
    grid.appendChild(fragment);
    count.textContent = shown + " of " + items.length + " images";
    count.dataset.visible = String(shown);
    empty.hidden = shown > 0;
    for (const b of document.querySelectorAll("[data-sort]")) {
      b.setAttribute("aria-pressed", String(b.dataset.sort === state.sort));
    }
    for (const b of document.querySelectorAll("[data-filter]")) {
      b.setAttribute("aria-pressed", String(b.dataset.filter === state.filter));
    }
  }

  for (const b of document.querySelectorAll("[data-sort]")) {
    b.addEventListener("click", () => { state.sort = b.dataset.sort; apply(); });
  }
  for (const b of document.querySelectorAll("[data-filter]")) {
    b.addEventListener("click", () => { state.filter = b.dataset.filter; apply(); });
  }
  apply();

  const viewer = document.getElementById("viewer");
  if (!viewer || typeof viewer.showModal !== "function") return;
  const viewerImg = document.getElementById("viewer-img");
  const viewerCaption = document.getElementById("viewer-caption");
  grid.addEventListener("click", (event) => {
    const zoom = event.target.closest(".zoom");
    if (!zoom) return;
    const card = zoom.closest(".card");
    const img = zoom.querySelector("img");
    viewerImg.src = img.src;
    viewerImg.alt = img.alt;
    viewerCaption.textContent = card.querySelector(".name").textContent + " · " +
      card.querySelector(".sub").textContent;
    viewer.showModal();
  });
  viewer.addEventListener("click", () => viewer.close());
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
script-src 'unsafe-inline'">
<meta name="generator" content="vadkit {version}">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>{css}</style>
</head>
<body>
<header class="page"><div class="top wrap">{header}</div></header>
<div class="navbar"><nav class="toc wrap" aria-label="Sections">{nav}</nav></div>
<main class="wrap">
{sections}
</main>
<footer>Written by vadkit {version}. A single self-contained file: it needs no network access.</footer>
<dialog id="viewer" aria-label="Enlarged panel"><img id="viewer-img" alt=""><p id="viewer-caption"></p></dialog>
<script>{script}</script>
</body>
</html>
"""
