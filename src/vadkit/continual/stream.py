"""A task stream: the ordered datasets a production line adds over time, one task per product.

A task is a dataset entry of the same form as a benchmark config's ``datasets:`` (``{name, path, layout,
options}``, read by :func:`vadkit.bench.config.parse_dataset`, relative paths against the config file's
folder), loaded with its layout into normal training images and labelled test images. The stream only holds
the samples (paths and labels); images are read when a strategy trains or predicts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from vadkit.data import Sample

__all__ = ["Task", "TaskStream"]


@dataclass(frozen=True)
class Task:
    """One task: ``train`` (normal images only) and ``test`` (normal and anomalous, with masks when any)."""

    name: str
    train: tuple[Sample, ...]
    test: tuple[Sample, ...]

    @classmethod
    def from_spec(cls, spec) -> Task:
        """Load a :class:`vadkit.bench.config.DatasetSpec` with its layout."""
        from vadkit.data import load_split
        from vadkit.errors import DataError

        try:
            split = load_split(spec.layout, spec.path, **spec.options)
        except DataError as error:  # say which task: a stream names several folders
            raise DataError(f"task {spec.name!r}: {error}") from None
        if not split.train or not split.test:
            missing = "training" if not split.train else "test"
            raise DataError(f"task {spec.name!r} ({spec.layout} at {spec.path}) has no {missing} images: a task needs "
                            "both (normal training images, labelled test images)")
        return cls(spec.name, tuple(split.train), tuple(split.test))


@dataclass(frozen=True)
class TaskStream:
    """Tasks in the order they are learned."""

    tasks: tuple[Task, ...]

    def __post_init__(self) -> None:
        from vadkit.errors import ParameterError

        if not self.tasks:
            raise ParameterError("a task stream needs at least one task")
        names = [task.name for task in self.tasks]
        if len(set(names)) != len(names):
            raise ParameterError(f"task names must be distinct, got {names}")

    @classmethod
    def from_specs(cls, specs: Sequence) -> TaskStream:
        return cls(tuple(Task.from_spec(spec) for spec in specs))

    @classmethod
    def from_folders(cls, folders: dict[str, str | Path], layout: str = "mvtec") -> TaskStream:
        """Tasks from ``{name: folder}`` in that order, all of one layout (the Python shortcut of a config)."""
        from vadkit.bench.config import parse_dataset

        return cls.from_specs([parse_dataset({"name": name, "path": str(path), "layout": layout},
                                             f"tasks[{i}]", Path.cwd()) for i, (name, path) in enumerate(folders.items())])

    @property
    def names(self) -> list[str]:
        return [task.name for task in self.tasks]

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]
