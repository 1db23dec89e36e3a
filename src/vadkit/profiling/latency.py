"""Latency: median and 95th percentile of repeated calls, after warm-up, with the thread count pinned.

Protocol (what every vadkit latency figure means):

* threads: ``torch.set_num_threads(n)`` (and faiss' OpenMP threads) set explicitly for the measurement and
  restored afterwards; default ``n`` = the CPUs this process may run on (``os.sched_getaffinity``);
* warm-up: ``warmup`` untimed calls first (oneDNN primitive caches, allocator, lazy indexes);
* ``repeats`` timed calls with ``time.perf_counter``; the median is the figure, the p95 (linear
  interpolation, ``numpy.percentile``) shows the tail;
* a method and its backbone are timed in alternation, call by call (:func:`time_interleaved`), and their
  ratio is the median of the per-round ratios (:func:`paired_ratio`): on a shared machine a burst of load
  then inflates both sides of a ratio instead of one;
* per image: a batch's time divided by its size, so batch 1 and batch N compare directly;
* inputs: real images, already decoded, resized and normalised (a tensor), so decoding is excluded; the
  predict timing covers what ``model.predict_batches`` does per batch (model + copy of scores and maps
  to numpy).

On a machine shared with other busy processes, pin fewer threads than CPUs (``--threads 1``): OpenMP
threads wait for each other at every operator, so losing a core to another process slows them many-fold
(here, 2 cores at a load of ~5: a tiny PaDiM's profile took 18 s with 2 threads, 1.7 s with 1; MVTec bottle
backbone at batch 1: 1116 ms median with 2 threads, 28 ms with 1). The figures state the thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vadkit.threads import available_cpus, pinned_threads  # noqa: F401 - re-exported: the one thread policy


@dataclass(frozen=True)
class Timing:
    """Repeated timings of one call, in milliseconds: ``median_ms``, ``p95_ms`` and every sample."""

    samples_ms: tuple[float, ...]

    @property
    def median_ms(self) -> float:
        return float(np.median(self.samples_ms))

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.samples_ms, 95))

    def per_item(self, n: int) -> Timing:
        """The same timings divided by ``n`` (a batch's time -> time per image)."""
        return Timing(tuple(t / n for t in self.samples_ms))


def _check_counts(repeats, warmup) -> None:
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats must be an integer >= 1, got {repeats!r}")
    if not (isinstance(warmup, int) and warmup >= 0):
        raise ValueError(f"warmup must be an integer >= 0, got {warmup!r}")


def time_calls(fn: Callable[[], object], *, repeats: int = 20, warmup: int = 3,
               clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; ``clock`` returns seconds."""
    return time_interleaved({"fn": fn}, repeats=repeats, warmup=warmup, clock=clock)["fn"]


def time_interleaved(calls: dict[str, Callable[[], object]], *, repeats: int = 20, warmup: int = 3,
                     clock: Callable[[], float] = time.perf_counter) -> dict[str, Timing]:
    """Time several calls round by round (each round calls every one once, the order reversed every other
    round), so that a burst of load from other processes hits them alike and their paired ratio
    (:func:`paired_ratio`) stays meaningful on a shared machine. Warm-up rounds come first, untimed."""
    _check_counts(repeats, warmup)
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else reversed(names):
            start = clock()
            calls[name]()
            samples[name].append(1000.0 * (clock() - start))
    return {name: Timing(tuple(values)) for name, values in samples.items()}


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over rounds of ``a``'s time / ``b``'s time, for timings from one :func:`time_interleaved`."""
    if len(a.samples_ms) != len(b.samples_ms):
        raise ValueError("paired_ratio needs timings of the same rounds")
    return float(np.median([x / y for x, y in zip(a.samples_ms, b.samples_ms)]))


def make_batches(images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Batches of ``batch_size`` covering every image of ``images`` once (the last one filled up by
    wrapping around to the first images), built before timing so no copy is timed."""
    n_batches = -(-images.shape[0] // batch_size)
    index = torch.arange(n_batches * batch_size) % images.shape[0]
    return [images[chunk].contiguous() for chunk in index.split(batch_size)]


def _rotating(batches: list[torch.Tensor], work: Callable[[torch.Tensor], None]) -> Callable[[], None]:
    """A call that runs ``work`` on the next batch each time (so a figure is not one image's)."""
    state = {"call": 0}

    def call() -> None:
        work(batches[state["call"] % len(batches)])
        state["call"] += 1

    return call


def predict_call(model, images: torch.Tensor, batch_size: int) -> Callable[[], None]:
    """One ``model.predict_batches`` step per call on the next batch of ``batch_size`` of ``images``
    (normalised, ``(N, 3, H, W)``)."""

    def work(batch: torch.Tensor) -> None:
        for _ in model.predict_batches(batch, batch_size=batch_size):
            pass

    return _rotating(make_batches(images, batch_size), work)


def backbone_call(extractor: Callable[[torch.Tensor], object], images: torch.Tensor,
                  batch_size: int) -> Callable[[], None]:
    """One forward of the feature extractor alone (the floor of predict) per call, same batches."""

    def work(batch: torch.Tensor) -> None:
        with torch.inference_mode():
            extractor(batch)

    return _rotating(make_batches(images, batch_size), work)
