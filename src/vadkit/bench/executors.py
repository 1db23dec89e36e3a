"""Where the cells of a grid run: in this process, in a pool of processes, or on a Ray cluster.

All three call the same :func:`~vadkit.bench.cell.run_cell` with the same arguments, so a cell writes the same
folder and the same files wherever it runs; only the scheduling differs.

- ``local`` (default): one cell after another in this process. Its peak RSS figures include what earlier
  cells left in the process (imported libraries, allocator caches): compare their ``_delta`` columns.
- ``process``: ``workers`` processes on this machine (``spawn``ed, each used for one cell only, so a cell's peak
  RSS is its own and a crash takes no other cell with it). With ``workers=1`` (the default) the cleanest
  efficiency figures: one cell at a time, each in a fresh process.
- ``ray``: one Ray task per cell, reserving ``threads`` CPUs each, each in a fresh worker process.
  ``address`` is passed to ``ray.init`` (``auto``: the cluster this machine belongs to; ``HOST:PORT``: a head
  node); without one a private local instance is started (no dashboard) and shut down afterwards; a Ray
  already initialised in this process (``ray.init`` called by the caller) is used as it is. Every worker must
  have vadkit installed and reach the dataset paths and ``--out`` at the same paths as the driver (a shared
  file system): the cells write their folders there. ``workers`` bounds the tasks in flight (default: as many
  as the cluster schedules).

Latency figures are free of interference only when one cell runs at a time (``local``, or ``workers=1``, or
``threads`` equal to each Ray node's CPUs).

``on_result(cell, status)`` is called in the driver as each cell finishes, in completion order.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vadkit.bench.cell import run_cell
from vadkit.bench.config import Cell
from vadkit.errors import ParameterError, VadkitError

__all__ = ["EXECUTORS", "run_cells"]

EXECUTORS = ("local", "process", "ray")
OnResult = Callable[[Cell, dict[str, Any]], None]


def run_cells(cells: Sequence[Cell], out: Path, *, executor: str = "local", workers: int | None = None,
              threads: int | None = None, address: str | None = None, on_result: OnResult) -> None:
    """Run ``cells`` into ``out/cells/`` with ``executor`` (module docstring); ``threads`` per cell."""
    if executor not in EXECUTORS:
        raise ParameterError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise ParameterError(f"workers must be >= 1, got {workers}")
    if address is not None and executor != "ray":
        raise ParameterError(f"--address is for the ray executor, not {executor!r}")
    if not cells:
        return
    if executor == "local":
        for cell in cells:
            on_result(cell, run_cell(cell, out, threads))
    elif executor == "process":
        _run_processes(cells, out, workers or 1, threads, on_result)
    else:
        _run_ray(cells, out, workers, threads, address, on_result)


def _run_processes(cells, out, workers: int, threads, on_result: OnResult) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch/OpenMP threads
    # one cell per worker process (Python >= 3.11): a cell's peak RSS is its own, a crash takes no other cell
    fresh = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, **fresh)
    try:
        futures = {pool.submit(run_cell, cell, out, threads): cell for cell in cells}
        for future in as_completed(futures):
            cell = futures[future]
            try:
                status = future.result()
            except BrokenProcessPool:
                # the worker died (killed, out of memory): the cell has no status.json and runs again next time
                status = {"id": cell.id, "status": "failed", "error": "the worker process died (killed or out of "
                          "memory); the cell runs again on the next `vadkit bench run`"}
            on_result(cell, status)
    except BaseException:  # Ctrl-C: drop the queued cells instead of waiting for all of them
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_ray(cells, out, workers: int | None, threads, address: str | None, on_result: OnResult) -> None:
    try:
        import ray
    except ImportError:
        raise VadkitError("the ray executor needs Ray: pip install 'vadkit[ray]' (or pip install ray)") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address is None:  # "local": always a new private instance, never a cluster found on the machine
            ray.init(address="local", include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    running: dict[Any, Cell] = {}
    try:
        cpus = threads or 1
        _check_feasible(ray, cpus)
        # max_calls=1: a fresh worker process per cell, as in the process pool (own peak RSS, no leftovers)
        task = ray.remote(num_cpus=cpus, max_retries=0, max_calls=1)(run_cell)
        waiting = list(cells)
        limit = workers or len(cells)
        while waiting or running:
            while waiting and len(running) < limit:
                cell = waiting.pop(0)
                running[task.remote(cell, str(out), threads)] = cell
            done, _ = ray.wait(list(running), num_returns=1)
            for reference in done:
                cell = running.pop(reference)
                try:
                    status = ray.get(reference)
                except ray.exceptions.RayError as error:  # the worker died; run_cell itself records failures
                    status = {"id": cell.id, "status": "failed", "error": f"Ray: {type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else ''}"}
                on_result(cell, status)
    except BaseException:  # Ctrl-C: stop this run's tasks (a cluster the caller started keeps running)
        for reference in running:
            ray.cancel(reference, force=True)
        raise
    finally:
        if started_here:
            ray.shutdown()


def _check_feasible(ray, cpus: int) -> None:
    """A task asking for more CPUs than any node has would wait forever: say so instead."""
    largest = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")), default=0)
    if cpus > largest:
        raise ParameterError(f"each cell asks for {cpus} CPUs (threads) but the largest Ray node has {largest:g}: "
                             f"give --threads {int(largest) or 1} or fewer (or `threads:` in the config)")
