"""Run a task stream: learn the tasks in order and evaluate on every task seen after each one.

An app over the layers (docs/architecture.md): a strategy learns, ``vadkit.runs``' evaluation scores (the same
``PredictionRecord`` and ``evaluate_record`` that ``vadkit train`` and ``vadkit eval`` use, so R[t, j] is the
number a ``vadkit test`` of that model on task j would report), and :class:`ContinualResults` keeps the books.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vadkit.continual.config import DEFAULT_METRICS
from vadkit.continual.results import ContinualResults
from vadkit.continual.stream import TaskStream

__all__ = ["RESULT_FILES", "evaluate_step", "make_strategy", "run_config", "run_stream", "write_results"]

RESULT_FILES = {"json": "results.json", "markdown": "results.md", "heatmap": "r_matrix.png"}


def make_strategy(strategy: str, method: str, method_params: dict[str, Any] | None = None,
                  params: dict[str, Any] | None = None, device: str = "cpu"):
    """A strategy by name, over fresh models ``create_model(method, **method_params)`` on ``device``."""
    from vadkit.continual.strategies import STRATEGIES
    from vadkit.errors import ParameterError
    from vadkit.models import create_model

    if strategy not in STRATEGIES:
        raise ParameterError(f"unknown strategy {strategy!r}; available: {', '.join(STRATEGIES)}")
    method_params = dict(method_params or {})
    return STRATEGIES[strategy](lambda: create_model(method, **method_params).to(device), **(params or {}))


def evaluate_step(strategy, task, index: int, metrics: Sequence[str], progress: bool | None = None) -> tuple[dict, dict]:
    """The metrics of ``strategy`` on ``task``'s test images (NaN where undefined, e.g. pixel metrics without
    masks), and the fraction of them each task-selection rule attributes to task number ``index`` (empty when
    the strategy picks no task)."""
    from vadkit.data import ImageDataset
    from vadkit.runs.evaluation import evaluate_record
    from vadkit.runs.record import PredictionRecord

    dataset = ImageDataset(list(task.test), strategy.transform)
    prediction = strategy.predict(dataset, progress=progress)
    record = PredictionRecord.from_prediction(dataset, prediction.scores, prediction.maps, {"task": task.name})
    values = evaluate_record(record, intervals=False).metrics
    row = {metric: _number(values.get(metric)) for metric in metrics}
    accuracy = {rule: float(np.mean(ids == index)) for rule, ids in prediction.task_ids.items()}
    return row, accuracy


def _number(value) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def run_stream(stream: TaskStream, strategy, *, metrics: Sequence[str] = DEFAULT_METRICS,
               progress: bool | None = None, info: dict[str, Any] | None = None) -> ContinualResults:
    """Learn ``stream``'s tasks in order with ``strategy`` (a :class:`~vadkit.continual.strategies.Strategy`,
    e.g. from :func:`make_strategy`), evaluating on tasks 0..t after task t; returns the results."""
    from vadkit.progress import task as progress_task

    n = len(stream)
    metrics = list(metrics)
    R = {metric: np.full((n, n), np.nan) for metric in metrics}
    task_ids: dict[str, np.ndarray] = {}
    memory, detail, seconds = [], {"model": [], "buffer": []}, []
    with progress_task(f"continual: {strategy.name}", total=n * (n + 1) // 2 + n, enabled=progress) as bar:
        for t, current in enumerate(stream):
            bar.describe(f"continual: {strategy.name}, learning {current.name} ({t + 1}/{n})")
            start = time.perf_counter()
            strategy.learn(t, current, progress=False if progress is False else None)
            seconds.append(time.perf_counter() - start)
            bar.advance()
            held = strategy.memory()
            memory.append(int(held["model"] + held["buffer"]))
            for key in detail:
                detail[key].append(int(held[key]))
            for j in range(t + 1):
                bar.describe(f"continual: {strategy.name}, after {current.name}: testing {stream[j].name}")
                row, accuracy = evaluate_step(strategy, stream[j], j, metrics, progress=False)
                for metric, value in row.items():
                    R[metric][t, j] = value
                for rule, value in accuracy.items():
                    task_ids.setdefault(rule, np.full((n, n), np.nan))[t, j] = value
                bar.advance()
    info = {"strategy": strategy.name, "strategy_params": strategy.get_params(),
            "method": strategy.model.name, "method_params": strategy.model.get_params(), **(info or {})}
    return ContinualResults(tasks=stream.names, metrics=metrics, R=R, memory_bytes=memory, memory_detail=detail,
                            train_seconds=seconds, task_id_accuracy=task_ids, info=info)


def write_results(results: ContinualResults, out: str | Path, heatmap_metric: str | None = None) -> dict[str, Path]:
    """DIR/results.json, DIR/results.md and DIR/r_matrix.png (R of ``heatmap_metric``, default the first)."""
    from vadkit.continual.plot import save_r_heatmap

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metric = heatmap_metric or results.metrics[0]
    return {"json": results.write_json(out / RESULT_FILES["json"]),
            "markdown": results.write_markdown(out / RESULT_FILES["markdown"]),
            "heatmap": save_r_heatmap(results, metric, out / RESULT_FILES["heatmap"])}


def run_config(config: str | Path, out: str | Path, progress: bool | None = None) -> tuple[ContinualResults, dict]:
    """``vadkit continual run CONFIG --out DIR``: read the config, run the stream, write the three files."""
    from vadkit.continual.config import load_config

    loaded = load_config(config)
    stream = TaskStream.from_specs(loaded.tasks)
    strategy = make_strategy(loaded.strategy, loaded.method, loaded.method_params, loaded.params, loaded.device)
    results = run_stream(stream, strategy, metrics=loaded.metrics, progress=progress,
                         info={"name": loaded.name, "config": str(Path(config).resolve())})
    return results, write_results(results, out)
