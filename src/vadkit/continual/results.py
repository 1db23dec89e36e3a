"""The bookkeeping of a continual run: the matrix R[t, j] of a metric after learning task t, on task j.

Continual-learning papers summarise R the same few ways (Lopez-Paz & Ranzato's GEM paper defined BWT; the
continual anomaly-detection papers of Pezze et al. report R, average and forgetting the same way), and they are
defined here once, as plain numpy on a (T, T) array whose entries above the diagonal (tasks not yet seen) are NaN:

* ``average[t]``: mean of R[t, 0..t], the metric over the tasks seen after learning task t;
* ``forgetting[j]`` for j < T-1: max over t in [j, T-2] of R[t, j], minus R[T-1, j] (how much of the best
  performance on task j the end of the stream has lost; the last task has none by definition);
* ``bwt``: mean over j < T-1 of R[T-1, j] - R[j, j] (backward transfer: negative when learning later tasks
  hurt earlier ones).

:class:`ContinualResults` holds R for every metric with the run's other figures (memory, training time,
task-identification accuracy) and writes results.json and results.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ContinualResults", "average_seen", "backward_transfer", "forgetting"]


def _square(matrix) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"R must be a non-empty square (T, T) matrix, got shape {matrix.shape}")
    return matrix


def average_seen(matrix) -> np.ndarray:
    """(T,) mean of R[t, 0..t] for each t (NaN entries of unevaluable tasks ignored; NaN if all are)."""
    matrix = _square(matrix)
    out = np.full(len(matrix), np.nan)
    for t in range(len(matrix)):
        seen = matrix[t, :t + 1]
        if np.isfinite(seen).any():
            out[t] = np.nanmean(seen)
    return out


def forgetting(matrix) -> np.ndarray:
    """(T-1,) forgetting of tasks 0..T-2: max over t in [j, T-2] of R[t, j] minus R[T-1, j]."""
    matrix = _square(matrix)
    last = len(matrix) - 1
    out = np.full(last, np.nan)
    for j in range(last):
        history = matrix[j:last, j]
        if np.isfinite(history).any() and np.isfinite(matrix[last, j]):
            out[j] = np.nanmax(history) - matrix[last, j]
    return out


def backward_transfer(matrix) -> float:
    """Mean over j < T-1 of R[T-1, j] - R[j, j] (NaN with one task: nothing to transfer back to)."""
    matrix = _square(matrix)
    last = len(matrix) - 1
    deltas = np.array([matrix[last, j] - matrix[j, j] for j in range(last)])
    deltas = deltas[np.isfinite(deltas)]
    return float(deltas.mean()) if len(deltas) else math.nan


def _nan_mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def _jsonable(value):
    """NaN -> None (JSON has no NaN), numpy -> Python, recursively."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(item) for item in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


@dataclass
class ContinualResults:
    """What a task stream measured.

    Attributes:
        tasks: task names, in stream order (T).
        metrics: the metric keys of ``R`` (registry keys of :mod:`vadkit.metrics.registry`).
        R: metric -> (T, T) array, R[t, j] after learning task t on task j; NaN above the diagonal and where the
            metric is undefined on a task (e.g. pixel metrics without masks).
        memory_bytes: (T,) model state + replay memory or banks after each task; ``memory_detail`` splits it.
        train_seconds: (T,) seconds spent learning each task.
        task_id_accuracy: rule -> (T, T) fraction of task j's test images attributed to task j after task t, for
            strategies that pick a task at inference (empty otherwise).
        info: strategy, method and their parameters.
    """

    tasks: list[str]
    metrics: list[str]
    R: dict[str, np.ndarray]
    memory_bytes: list[int] = field(default_factory=list)
    memory_detail: dict[str, list[int]] = field(default_factory=dict)
    train_seconds: list[float] = field(default_factory=list)
    task_id_accuracy: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def average(self, metric: str) -> np.ndarray:
        return average_seen(self.R[metric])

    def forgetting(self, metric: str) -> np.ndarray:
        return forgetting(self.R[metric])

    def bwt(self, metric: str) -> float:
        return backward_transfer(self.R[metric])

    def as_dict(self) -> dict[str, Any]:
        """The content of results.json (NaN written as null)."""
        return _jsonable({
            "tasks": self.tasks, "metric": self.metrics,
            "R": {metric: self.R[metric] for metric in self.metrics},
            "average": {metric: self.average(metric) for metric in self.metrics},
            "final_average": {metric: self.average(metric)[-1] for metric in self.metrics},
            "forgetting": {metric: {"per_task": self.forgetting(metric), "mean": _nan_mean(self.forgetting(metric))}
                           for metric in self.metrics},
            "bwt": {metric: self.bwt(metric) for metric in self.metrics},
            "memory_bytes": self.memory_bytes, "memory_detail": self.memory_detail,
            "train_seconds": self.train_seconds,
            "task_id_accuracy": {rule: {"matrix": matrix, "average": average_seen(matrix)}
                                 for rule, matrix in self.task_id_accuracy.items()},
            **self.info,
        })

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def markdown(self) -> str:
        """results.md: per metric, R with the average after each task, then forgetting and BWT; then memory and
        time per task, and task-identification accuracy where the strategy predicts the task."""
        from vadkit.metrics import registry

        def number(value: float, digits: int = 3) -> str:
            return "-" if not math.isfinite(value) else f"{value:.{digits}f}"

        header = "| after \\ on | " + " | ".join(self.tasks) + " | average |"
        rule = "|" + "---|" * (len(self.tasks) + 2)
        title = self.info.get("strategy", "continual")
        lines = [f"# Continual learning: {title} with {self.info.get('method', '?')}", ""]
        for metric in self.metrics:
            try:
                label = registry.get(metric).label
            except KeyError:
                label = metric
            lines += [f"## {label} (`{metric}`)", "", header, rule]
            average = self.average(metric)
            for t, task in enumerate(self.tasks):
                cells = [number(value) for value in self.R[metric][t]]
                lines.append(f"| {task} | " + " | ".join(cells) + f" | {number(average[t])} |")
            per_task = self.forgetting(metric)
            lines += ["", f"Forgetting: mean {number(_nan_mean(per_task))} (per task: "
                      f"{', '.join(f'{task} {number(v)}' for task, v in zip(self.tasks, per_task)) or 'none'}); "
                      f"BWT {number(self.bwt(metric))}.", ""]
        lines += ["## Memory and training time", "", "| after task | memory (MiB) | train (s) |", "|---|---|---|"]
        for task, memory, seconds in zip(self.tasks, self.memory_bytes, self.train_seconds):
            lines.append(f"| {task} | {memory / 2**20:.2f} | {seconds:.1f} |")
        for rule_name, matrix in self.task_id_accuracy.items():
            lines += ["", f"## Task-identification accuracy (`{rule_name}`)", "", header, rule]
            average = average_seen(matrix)
            for t, task in enumerate(self.tasks):
                lines.append(f"| {task} | " + " | ".join(number(v, 2) for v in matrix[t]) + f" | {number(average[t], 2)} |")
        return "\n".join(lines) + "\n"

    def write_markdown(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.markdown(), encoding="utf-8")
        return path
