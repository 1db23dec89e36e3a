"""Progress bars for long work (feature extraction, coreset selection), drawn with rich.

One helper so every long loop looks the same and every one of them can be silenced (``enabled=False``,
or ``VADKIT_PROGRESS=0`` in the environment for logs and CI).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(enabled: bool | None = None) -> bool:
    """Resolve the ``progress`` argument: explicit value wins, else the VADKIT_PROGRESS variable (default on)."""
    if enabled is not None:
        return enabled
    return os.environ.get("VADKIT_PROGRESS", "1") not in ("0", "false", "no")


def track(iterable: Iterable[T], description: str, total: int | None = None, enabled: bool | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar (transient, so finished bars do not clutter the terminal)."""
    if not progress_enabled(enabled):
        yield from iterable
        return
    from rich.progress import track as rich_track

    yield from rich_track(iterable, description=description, total=total, transient=True)


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        pass

    def describe(self, description: str) -> None:
        pass


class _RichTask:
    def __init__(self, progress, task_id) -> None:
        self._progress, self._task_id = progress, task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task_id, amount)

    def describe(self, description: str) -> None:
        """Change the bar's text (e.g. to show the current training loss)."""
        self._progress.update(self._task_id, description=description)


@contextmanager
def task(description: str, total: float | None, enabled: bool | None = None):
    """A progress bar advanced by hand, for loops that are not a simple iterable (e.g. coreset selection,
    a training loop); ``total=None`` when the end is not known in advance (a time budget)."""
    if not progress_enabled(enabled):
        yield _NullTask()
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        yield _RichTask(progress, progress.add_task(description, total=total))
