"""``vadkit bench plan`` and ``vadkit bench run``: a config's grid, what is done, and running what is not.

``run_bench`` writes, under ``out``: ``cells/<id>/`` (one run folder per cell, :mod:`vadkit.bench.cell`),
``bench.json`` (the study's name, config, executor and versions), ``results.csv`` / ``results.md`` /
``results.parquet`` (:mod:`vadkit.bench.results`) and ``index.html`` (:mod:`vadkit.bench.page`). The tables and
page are rewritten after every run, also after Ctrl-C (then with the unfinished cells as ``pending``), and
cover every cell of the config: a rerun of the same command runs only the cells that are not done.

Threads per cell, unless given (``threads`` here or in the config): all CPUs for ``local``, the CPUs divided
by the workers for ``process``, 1 for ``ray`` (whose CPUs are the cluster's, unknown to the driver).
"""

from __future__ import annotations

import datetime as _dt
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vadkit.bench.cell import cell_state, package_versions
from vadkit.bench.config import BenchConfig, Cell, load_config
from vadkit.bench.executors import run_cells
from vadkit.bench.page import write_index
from vadkit.bench.results import collect_rows, write_results

__all__ = ["BenchRun", "plan_bench", "run_bench"]

BENCH_FILE = "bench.json"


@dataclass
class BenchRun:
    """What a ``run_bench`` call did: the rows of results.csv, the files written, the cells it ran."""

    config: BenchConfig
    rows: list[dict[str, Any]]
    files: dict[str, Path]
    ran: list[str]

    def count(self, status: str) -> int:
        return sum(row["status"] == status for row in self.rows)


def plan_bench(config: str | Path | BenchConfig, out: str | Path | None = None) -> list[tuple[Cell, str]]:
    """Every cell of the grid with its state in ``out`` (``pending`` for all when no ``out`` is given)."""
    config = config if isinstance(config, BenchConfig) else load_config(config)
    return [(cell, "pending" if out is None else cell_state(out, cell)) for cell in config.cells()]


def run_bench(config: str | Path | BenchConfig, out: str | Path, *, executor: str = "local",
              workers: int | None = None, threads: int | None = None, address: str | None = None,
              progress: bool | None = None) -> BenchRun:
    """Run the cells of ``config`` that are not done, then write the tables and the page (module docstring)."""
    from vadkit.progress import progress_enabled

    config = config if isinstance(config, BenchConfig) else load_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cells = config.cells()
    todo = [cell for cell in cells if cell_state(out, cell) != "done"]
    per_cell = _threads(threads or config.threads, executor, workers)
    _write_bench_file(out, config, executor, workers, per_cell)
    ran: list[str] = []
    console, bar = _progress(progress_enabled(progress), len(todo))

    def on_result(cell: Cell, status: dict[str, Any]) -> None:
        ran.append(cell.id)
        console.print(_result_line(cell, status, out))
        if bar is not None:
            bar.advance(bar.task_ids[0])

    console.print(f"[bold]{config.name}[/bold]: {len(cells)} cells, {len(cells) - len(todo)} done, running "
                      f"{len(todo)} with the {executor} executor ({per_cell if per_cell else 'default'} thread(s) "
                      f"per cell) into {out}")
    try:
        if bar is not None:
            bar.start()
        # absolute: a Ray worker's working directory is not the driver's
        run_cells(todo, out.resolve(), executor=executor, workers=workers, threads=per_cell, address=address,
                  on_result=on_result)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: finished cells are kept; run the same command again to run "
                      "the rest")
        raise
    finally:
        if bar is not None:
            bar.stop()
        rows = collect_rows(cells, out)
        files = write_results(rows, out, config.name)
        files["html"] = write_index(rows, out, title=config.name, facts=_page_facts(config, executor, per_cell))
    return BenchRun(config, rows, files, ran)


def _threads(threads: int | None, executor: str, workers: int | None) -> int:
    if threads is not None:
        return threads
    if executor == "ray":
        return 1
    from vadkit.threads import available_cpus

    return max(1, available_cpus() // (workers or 1)) if executor == "process" else available_cpus()


def _progress(enabled: bool, total: int):
    """A console on the real stderr (cells redirect sys.stdout/err to their logs while they run) for one line per
    finished cell, and a bar over the cells (None when progress bars are off)."""
    from rich.console import Console

    console = Console(file=sys.stderr)
    if not enabled:
        return console, None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                   redirect_stdout=False, redirect_stderr=False, transient=True)
    bar.add_task("cells", total=total)
    return console, bar


def _result_line(cell: Cell, status: dict[str, Any], out: Path) -> str:
    from vadkit.bench.cell import cell_folder, read_json

    seconds = status.get("seconds")
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    if status.get("status") != "done":
        return f"[red]failed[/red] {cell.id}{took}: {status.get('error')}"
    metrics = read_json(cell_folder(out, cell) / "metrics.json") or {}
    auroc = metrics.get("image_auroc")
    return f"[green]done[/green]   {cell.id}{took}" + (f": image AUROC {auroc:.4f}" if auroc is not None else "")


def _write_bench_file(out: Path, config: BenchConfig, executor: str, workers, threads) -> None:
    import json

    payload = {"name": config.name, "config_file": str(config.path.resolve()), "config": config.raw,
               "executor": executor, "workers": workers, "threads_per_cell": threads,
               "started": _dt.datetime.now().isoformat(timespec="seconds"), "versions": package_versions()}
    (out / BENCH_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")


def _page_facts(config: BenchConfig, executor: str, threads) -> dict[str, Any]:
    return {"config": config.path.name, "executor": executor, "threads per cell": threads,
            "written": _dt.datetime.now().isoformat(timespec="seconds").replace("T", " ")}
