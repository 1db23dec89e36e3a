"""Replay memory under a fixed budget: a reservoir per task, rebalanced so every seen task keeps an equal share.

Replay is the simplest continual-learning defence against forgetting, and the one the continual anomaly-detection
studies found worth its memory (Dalle Pezze, Anello, Masiero, Susto, "Continual Learning Approaches for Anomaly
Detection", arXiv:2212.11192; on the edge, with STFPM and PaSTe and compressed replay: Barusco, D'Antoni, Dalle
Pezze, Borsatti, Susto, "Memory Efficient Continual Learning for Edge-Based Visual Anomaly Detection", 2025,
arXiv:2503.02691). Its two rules are here, independent of images:

* per task, a uniform sample of its training items, drawn by reservoir sampling with random keys: each item gets
  an independent uniform key and the reservoir keeps the smallest keys (Efraimidis & Spirakis' algorithm with
  equal weights). It streams (O(capacity) items held), every subset of a given size is equally likely, and
  shrinking it (dropping the largest keys) leaves a uniform sample of the smaller size: what rebalancing needs;
* a budget in *cost units* (1 per item for a budget of images, the stored bytes of each item for a byte budget),
  split equally among the tasks seen so far: when task t arrives every reservoir shrinks to budget // t, so the
  total never exceeds the budget. With unequal costs (compressed images), a reservoir keeps the longest prefix of
  its key order that fits its share (still a uniformly random order, cut where the bytes run out).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

import numpy as np

__all__ = ["Reservoir", "TaskBalancedMemory"]

T = TypeVar("T")


class Reservoir(Generic[T]):
    """A uniform random sample of a stream under a capacity in cost units (see the module docstring).

    ``cost(item)``: the item's size in the budget's unit (default 1: a capacity in items). ``rng``: a numpy
    Generator (seeded by the caller, so a seed gives the same sample).
    """

    def __init__(self, capacity: int, rng: np.random.Generator, cost: Callable[[T], int] | None = None) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        self._rng = rng
        self._cost = cost or (lambda item: 1)
        self._keys: list[float] = []          # ascending
        self._items: list[tuple[T, int]] = []  # (item, cost), in key order
        self.total = 0
        self.seen = 0

    def offer(self, item: T | Callable[[], T]) -> None:
        """Offer one item of the stream. ``item`` may be a zero-argument callable that makes it (e.g. encodes an
        image): it is called only when the item's key would be kept, so rejected items cost nothing."""
        self.seen += 1
        key = float(self._rng.random())
        if self._keys and key > self._keys[-1] and self.total >= self.capacity:
            return  # larger than every kept key while full: could only be dropped again
        value = item() if callable(item) else item
        position = bisect.bisect(self._keys, key)
        cost = int(self._cost(value))
        self._keys.insert(position, key)
        self._items.insert(position, (value, cost))
        self.total += cost
        self._trim()

    def extend(self, items: Iterable[T | Callable[[], T]]) -> Reservoir[T]:
        for item in items:
            self.offer(item)
        return self

    def shrink(self, capacity: int) -> None:
        """Lower the capacity, dropping the largest keys: what is kept is a uniform sample again."""
        self.capacity = capacity
        self._trim()

    def _trim(self) -> None:
        while self._items and self.total > self.capacity:
            self._keys.pop()
            _, cost = self._items.pop()
            self.total -= cost

    @property
    def items(self) -> list[T]:
        return [item for item, _ in self._items]

    def __len__(self) -> int:
        return len(self._items)


class TaskBalancedMemory(Generic[T]):
    """One :class:`Reservoir` per task under one total ``budget`` (cost units), split equally among the tasks.

    ``add_task(items)`` shrinks every existing reservoir to ``budget // n_tasks`` and fills the new one from the
    stream ``items``; ``total`` never exceeds ``budget``. ``seed`` makes the samples reproducible (task t draws its
    keys from the generator seeded by ``(seed, t)``).
    """

    def __init__(self, budget: int, cost: Callable[[T], int] | None = None, seed: int = 0) -> None:
        if not (isinstance(budget, int) and not isinstance(budget, bool) and budget >= 1):
            raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
        self.budget, self._cost, self.seed = budget, cost, seed
        self.reservoirs: list[Reservoir[T]] = []

    def share(self, n_tasks: int) -> int:
        return self.budget // n_tasks

    def add_task(self, items: Iterable[T | Callable[[], T]]) -> Reservoir[T]:
        share = self.share(len(self.reservoirs) + 1)
        for reservoir in self.reservoirs:
            reservoir.shrink(share)
        rng = np.random.default_rng([self.seed, len(self.reservoirs)])
        reservoir = Reservoir(share, rng, self._cost).extend(items)
        self.reservoirs.append(reservoir)
        return reservoir

    @property
    def total(self) -> int:
        """Cost units stored (images, or bytes for a byte budget)."""
        return sum(reservoir.total for reservoir in self.reservoirs)

    def items(self) -> list[T]:
        """Every stored item, task by task."""
        return [item for reservoir in self.reservoirs for item in reservoir.items]

    def counts(self) -> list[int]:
        return [len(reservoir) for reservoir in self.reservoirs]

    def describe(self) -> dict[str, Any]:
        return {"budget": self.budget, "stored": self.total, "items_per_task": self.counts()}
