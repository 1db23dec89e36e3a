"""One cell of a benchmark grid: train, evaluate, report and profile into its own run folder.

``DIR/cells/<cell id>/`` holds what ``vadkit train`` writes (model.vad, metrics.json, predictions.npz,
per_image.csv, overlays/), ``report.html`` (``vadkit report``), ``profile.json`` (``vadkit profile --json`` of
the saved model, when the config asks for it), ``log.txt`` (everything the cell printed or warned, and the
traceback of a failure), ``cell.json`` (the exact cell config, its fingerprint, package versions, threads) and,
written last, ``status.json``.

``status.json`` is what makes a grid resumable: it is written (atomically) only when the cell has finished,
``done`` or ``failed``, together with the fingerprint of the cell config it ran. A folder without it is an
interrupted cell, cleared and run again, except that a trained method's ``training.ckpt`` of the same config is
kept and training resumes from it. A done cell whose config has since changed (new parameters under the same
label) is ``changed`` and runs again; a failed cell runs again on the next ``vadkit bench run``.

A failure inside the cell (missing dataset folder, a bad parameter value, out of memory in torch) is recorded
as ``failed`` with the error's one-line message; it never stops the grid. Ctrl-C does stop it.
"""

from __future__ import annotations

import contextlib
import functools
import datetime as _dt
import json
import platform
import shutil
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

from vadkit.bench.config import Cell

__all__ = ["CELLS_DIR", "STATUS_FILE", "cell_folder", "cell_state", "read_json", "run_cell"]

CELLS_DIR = "cells"
CELL_FILE = "cell.json"
STATUS_FILE = "status.json"
LOG_FILE = "log.txt"
PROFILE_FILE = "profile.json"
REPORT_GALLERY = 40  # images in each cell's report.html: enough to look at, small enough for a grid of them
_PACKAGES = ("vadkit", "torch", "torchvision", "timm", "faiss-cpu", "numpy", "scipy", "pillow", "ray")


def cell_folder(out: str | Path, cell: Cell) -> Path:
    return Path(out) / CELLS_DIR / cell.id


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, or None when it is missing or unreadable (a half-written file counts as missing)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cell_state(out: str | Path, cell: Cell) -> str:
    """``done`` / ``failed`` (finished with this config), ``changed`` (finished with another config),
    ``partial`` (started, not finished) or ``pending`` (never started)."""
    folder = cell_folder(out, cell)
    status = read_json(folder / STATUS_FILE)
    if status is None:
        return "partial" if folder.is_dir() and any(folder.iterdir()) else "pending"
    if status.get("fingerprint") != cell.fingerprint():
        return "changed"
    return status.get("status", "partial")


def run_cell(cell: Cell, out: str | Path, threads: int | None = None) -> dict[str, Any]:
    """Run ``cell`` into ``out/cells/<id>/`` and return its status (also written to status.json).

    ``threads``: torch/faiss threads for this cell (None: the CPUs available). Importable at module level and
    free of driver state, so that a process pool or a Ray worker can call it.
    """
    from vadkit.threads import pinned_threads

    folder = cell_folder(out, cell)
    _prepare(folder, cell)
    start = time.perf_counter()
    facts: dict[str, Any] = {}
    error = None
    with pinned_threads(threads) as n_threads, open(folder / LOG_FILE, "a", encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
        # a fresh filter per cell: each cell's log shows its own warnings, even those an earlier cell in this
        # process already raised (the once-per-location registry is reset when the filters change)
        warnings.simplefilter("default")
        warnings.showwarning = functools.partial(_log_warning, log)  # into the log, also under a caller's recorder
        _write_json(folder / CELL_FILE, {**cell.as_dict(), "fingerprint": cell.fingerprint(), "threads": n_threads,
                                         "versions": package_versions(), "host": platform.node()})
        print(f"[{_now()}] cell {cell.id} on {platform.node()}, {n_threads} thread(s)", flush=True)
        try:
            facts = _train_report_profile(cell, folder, n_threads)
        except Exception as failure:  # a cell's failure is its own: recorded, the grid goes on
            error = f"{type(failure).__name__}: {failure}"
            traceback.print_exc(file=log)
        print(f"[{_now()}] cell {cell.id} {'failed: ' + error if error else 'done'}", flush=True)
    status = {"id": cell.id, "status": "failed" if error else "done", "error": error,
              "seconds": time.perf_counter() - start, "finished": _now(), "fingerprint": cell.fingerprint(),
              **facts}
    _write_json(folder / STATUS_FILE, status)  # last: its presence means the cell finished
    return status


def _train_report_profile(cell: Cell, folder: Path, threads: int) -> dict[str, Any]:
    from vadkit import runs
    from vadkit.profiling.memory import PeakRSS

    checkpoint = folder / runs.train_test.CHECKPOINT_FILE
    start = time.perf_counter()
    with PeakRSS() as peak:
        runs.train(data=cell.dataset.path, layout=cell.dataset.layout, layout_options=cell.dataset.options,
                   model_name=cell.model_name, params=cell.params, out=folder, progress=False,
                   resume=checkpoint.is_file())
    # where a cell's time goes: train (fit, calibrate, evaluate, save), the report, the profile
    facts = {"train_s": time.perf_counter() - start, "peak_rss_train_mb": peak.peak_mb,
             "peak_rss_train_delta_mb": peak.delta_mb, "rss_method": peak.method}
    if (folder / runs.PREDICTIONS_NPZ).is_file():  # absent when the dataset has no test split
        from vadkit.runs.reporting import report_run

        start = time.perf_counter()
        report_run(folder, gallery_size=REPORT_GALLERY)
        facts["report_s"] = time.perf_counter() - start
    if cell.profile is not None:
        from vadkit.profiling import profile_model

        start = time.perf_counter()
        figures = profile_model(folder / runs.MODEL_FILE, data=cell.dataset.path, layout=cell.dataset.layout,
                                layout_options=cell.dataset.options, batch_size=cell.profile.batch_size,
                                repeats=cell.profile.repeats, warmup=cell.profile.warmup, threads=threads,
                                progress=False).as_dict()
        _write_json(folder / PROFILE_FILE, figures)
        facts["profile_s"] = time.perf_counter() - start
    return facts


def _log_warning(log, message, category, filename, lineno, file=None, line=None) -> None:
    log.write(f"warning: {category.__name__}: {message}\n")


def _prepare(folder: Path, cell: Cell) -> None:
    """Clear what an earlier, unfinished or outdated attempt left, keeping a checkpoint of the same config."""
    from vadkit.runs.train_test import CHECKPOINT_FILE

    if folder.is_dir():
        previous = read_json(folder / CELL_FILE) or {}
        keep = {CHECKPOINT_FILE} if previous.get("fingerprint") == cell.fingerprint() else set()
        for item in folder.iterdir():
            if item.name in keep:
                continue
            shutil.rmtree(item) if item.is_dir() else item.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def package_versions() -> dict[str, str | None]:
    """Python and the versions of the packages a cell's figures depend on (None: not installed)."""
    from importlib import metadata

    versions: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    partial.replace(path)


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")
