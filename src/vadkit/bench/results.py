"""The results of a grid as one table: ``results.csv``, ``results.md`` and ``results.parquet`` (with pyarrow).

One row per cell of the config, in grid order, whatever its state, so a table never hides a cell. Columns:

- ``dataset, method, backbone, seed, status``: ``method`` is the config label (the method name unless two
  entries of one method are labelled apart); ``status`` is ``done``, ``failed``, or ``pending`` (never run, or
  interrupted, or run with another config: ``vadkit bench plan`` says which);
- every registered metric (:mod:`vadkit.metrics.registry`, in its order: ``image_auroc``, ..., ``pixel_aupro``,
  ``aupimo_mean``, ...), empty where undefined (no masks) or not finished;
- efficiency (:data:`EFFICIENCY_COLUMNS`): ``fit_s`` (fit wall time), ``predict_ms`` (predict time per image
  over the test set, batched), ``peak_rss_train_mb`` (peak RSS of the process while training and evaluating
  the cell) and ``peak_rss_train_delta_mb`` (its growth during the cell: with the ``local`` executor the process
  also holds what earlier cells left, e.g. imported libraries, so compare deltas there), and with
  ``profile:`` the `vadkit profile` figures of the saved model: ``latency_ms_b1`` / ``latency_ms_bN`` (median
  ms per image at batch 1 / N), ``backbone_ms_b1``, ``latency_ratio_b1`` (over the backbone alone),
  ``peak_rss_mb`` (the higher of the train and predict peaks), ``params``, ``param_bytes``, ``macs``,
  ``macs_backbone``, ``bank_bytes`` (learned state), ``file_bytes`` (model file);
- ``n_train, n_test, seconds`` (the whole cell) and its parts ``train_s`` (``vadkit train``: fit, calibrate,
  evaluate, save), ``report_s`` and ``profile_s``, ``model`` (registered name), ``params`` (in ``--param``
  syntax), ``cell`` (its folder, relative to DIR) and ``error`` (a failed cell's message).

results.md has one Markdown table per dataset (the headline columns, :data:`MARKDOWN_COLUMNS`) and, with more
than one dataset, a table of the mean over datasets per method and backbone, taken only over cells that are
done (``n`` says how many), and only for columns every one of those cells has (a dataset without masks
leaves the pixel means empty).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vadkit.bench.cell import CELLS_DIR, PROFILE_FILE, STATUS_FILE, cell_folder, cell_state, read_json
from vadkit.bench.config import Cell

__all__ = ["EFFICIENCY_COLUMNS", "MARKDOWN_COLUMNS", "collect_rows", "columns", "write_results"]

KEY_COLUMNS = ("dataset", "method", "backbone", "seed", "status")
EFFICIENCY_COLUMNS = ("fit_s", "predict_ms", "peak_rss_train_mb", "peak_rss_train_delta_mb", "latency_ms_b1",
                      "latency_ms_bN", "backbone_ms_b1", "latency_ratio_b1", "peak_rss_mb", "params", "param_bytes",
                      "macs", "macs_backbone", "bank_bytes", "file_bytes")
TRAILING_COLUMNS = ("n_train", "n_test", "seconds", "train_s", "report_s", "profile_s", "model", "params_set", "cell",
                    "error")
MARKDOWN_COLUMNS = ("image_auroc", "pixel_auroc", "pixel_aupro", "aupimo_mean", "fit_s", "latency_ms_b1",
                    "peak_rss_mb", "macs")
# profile.json key -> column (the rest share their name)
_PROFILE_COLUMNS = ("latency_ms_b1", "latency_ms_bN", "backbone_ms_b1", "latency_ratio_b1", "params",
                    "param_bytes", "macs", "macs_backbone", "bank_bytes", "file_bytes")


def metric_columns() -> tuple[str, ...]:
    from vadkit.metrics import registry

    return registry.keys()


def columns() -> tuple[str, ...]:
    return KEY_COLUMNS + metric_columns() + EFFICIENCY_COLUMNS + TRAILING_COLUMNS


def collect_rows(cells: Sequence[Cell], out: Path) -> list[dict[str, Any]]:
    """One row per cell (module docstring), read from the cell folders; None where a value is missing."""
    return [_row(cell, Path(out)) for cell in cells]


def _row(cell: Cell, out: Path) -> dict[str, Any]:
    from vadkit.profiling.profile import format_params

    folder = cell_folder(out, cell)
    state = cell_state(out, cell)
    row: dict[str, Any] = dict.fromkeys(columns())
    row.update(dataset=cell.dataset.name, method=cell.method.label, backbone=cell.backbone or "default",
               seed=cell.seed, status=state if state in ("done", "failed") else "pending", model=cell.method.name,
               params_set=format_params(cell.method.params), cell=f"{CELLS_DIR}/{cell.id}")
    if state not in ("done", "failed"):
        return row
    status = read_json(folder / STATUS_FILE) or {}
    row.update(error=status.get("error"), seconds=status.get("seconds"), train_s=status.get("train_s"),
               report_s=status.get("report_s"), profile_s=status.get("profile_s"),
               peak_rss_train_mb=status.get("peak_rss_train_mb"),
               peak_rss_train_delta_mb=status.get("peak_rss_train_delta_mb"))
    if state == "failed":
        return row
    metrics = read_json(folder / "metrics.json") or {}
    for key in metric_columns():
        row[key] = _number(metrics.get(key))
    row.update(fit_s=metrics.get("fit_seconds"), predict_ms=metrics.get("predict_ms_per_image"),
               n_train=metrics.get("n_train"), n_test=metrics.get("n_test"))
    profile = read_json(folder / PROFILE_FILE)
    if profile is not None:
        for key in _PROFILE_COLUMNS:
            row[key] = profile.get(key)
        peaks = [p for p in (row["peak_rss_train_mb"], profile.get("peak_rss_predict_mb")) if p is not None]
        row["peak_rss_mb"] = max(peaks) if peaks else None
    return row


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def write_results(rows: Sequence[dict[str, Any]], out: Path, title: str) -> dict[str, Path]:
    """Write results.csv, results.md and (where pyarrow is installed) results.parquet; returns their paths."""
    out = Path(out)
    written = {"csv": out / "results.csv", "md": out / "results.md"}
    with open(written["csv"], "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns())
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    written["md"].write_text(markdown(rows, title), encoding="utf-8")
    parquet = _write_parquet(rows, out / "results.parquet")
    if parquet is not None:
        written["parquet"] = parquet
    return written


def _write_parquet(rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    # one typed column each: numbers as float64 (None -> null), the rest as strings
    numeric = {c for c in columns() if c not in KEY_COLUMNS + ("model", "params_set", "cell", "error")}
    table = pa.table({c: pa.array([row.get(c) for row in rows],
                                  type=pa.float64() if c in numeric else (pa.int64() if c == "seed" else pa.string()))
                      for c in columns()})
    pq.write_table(table, path)
    return path


def markdown(rows: Sequence[dict[str, Any]], title: str) -> str:
    """results.md: one table per dataset, then the mean over datasets (module docstring)."""
    lines = [f"# {title}", ""]
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        mine = [row for row in rows if row["dataset"] == dataset]
        lines += [f"## {dataset}", "", *_table(mine, ("method", "backbone", "seed", "status")), ""]
        failed = [row for row in mine if row["status"] == "failed"]
        lines += [f"- {row['method']} / {row['backbone']} / seed {row['seed']}: {row['error']}" for row in failed]
        if failed:
            lines.append("")
    means = mean_over_datasets(rows) if len({row["dataset"] for row in rows}) > 1 else []
    if means:
        lines += ["## Mean over datasets", "", "Mean of the cells that are done (n of them), over datasets and "
                  "seeds.", "", *_table(means, ("method", "backbone", "n")), ""]
    return "\n".join(lines)


def mean_over_datasets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, backbone): the mean of every headline column over the done cells (None unless every one of
    them has the value: e.g. pixel metrics when one dataset has no masks)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "done":
            groups.setdefault((row["method"], row["backbone"]), []).append(row)
    means = []
    for (method, backbone), members in groups.items():
        mean = {"method": method, "backbone": backbone, "n": len(members)}
        for column in MARKDOWN_COLUMNS:
            values = [row.get(column) for row in members]
            # a mean over some of the datasets would read as a mean over all of them: none unless every cell has it
            mean[column] = None if any(v is None for v in values) else sum(values) / len(values)
        means.append(mean)
    return means


def _table(rows: Sequence[dict[str, Any]], keys: tuple[str, ...]) -> list[str]:
    header = keys + MARKDOWN_COLUMNS
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if k in keys else "---:" for k in header) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_cell_text(column, row.get(column)) for column in header) + " |")
    return out


def _cell_text(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if column == "macs":
        return f"{value / 1e9:.2f} G"
    if isinstance(value, float):
        return f"{value:.4f}" if column in metric_columns() else f"{value:.1f}"
    return str(value)
