"""Latency statistics (median / p95 after warm-up), interleaving, batching and thread pinning."""

import time

import numpy as np
import pytest
import torch

from vadkit.profiling.latency import (Timing, available_cpus, make_batches, paired_ratio, pinned_threads,
                                      time_calls, time_interleaved)


class FakeClock:
    """A clock that each timed call advances by the next of the given durations (ms)."""

    def __init__(self, durations_ms):
        self.now, self.durations = 0.0, list(durations_ms)

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.now += self.durations.pop(0) / 1000.0


def test_median_and_p95_of_known_durations_after_warm_up():
    clock = FakeClock([1000, 1000, 5, 1, 3, 2, 4])  # two slow warm-up calls, then five timed ones
    timing = time_calls(clock.work, repeats=5, warmup=2, clock=clock)
    assert timing.samples_ms == pytest.approx((5, 1, 3, 2, 4))
    assert timing.median_ms == pytest.approx(3.0)
    assert timing.p95_ms == pytest.approx(4.8)  # linear interpolation between 4 and 5
    assert timing.per_item(2).median_ms == pytest.approx(1.5)


def test_real_sleeps_are_timed():
    timing = time_calls(lambda: time.sleep(0.02), repeats=5, warmup=1)
    assert len(timing.samples_ms) == 5
    assert 20.0 <= timing.median_ms < 200.0 and timing.p95_ms >= timing.median_ms


def test_interleaved_rounds_alternate_the_order_and_pair_the_ratio():
    order = []
    clock = FakeClock([])

    def make(name, duration):
        def call():
            order.append(name)
            clock.durations.append(duration)
            clock.work()
        return call

    timings = time_interleaved({"a": make("a", 6), "b": make("b", 2)}, repeats=4, warmup=1, clock=clock)
    assert order == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]
    assert timings["a"].median_ms == pytest.approx(6) and timings["b"].median_ms == pytest.approx(2)
    assert paired_ratio(timings["a"], timings["b"]) == pytest.approx(3.0)
    # a load burst hitting one round inflates both sides: the paired ratio does not move
    assert paired_ratio(Timing((6, 60, 6)), Timing((2, 20, 2))) == pytest.approx(3.0)


def test_invalid_counts_are_rejected():
    with pytest.raises(ValueError, match="repeats"):
        time_calls(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_calls(lambda: None, warmup=-1)


def test_threads_are_pinned_and_restored():
    import faiss

    before, before_faiss = torch.get_num_threads(), faiss.omp_get_max_threads()
    with pinned_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    assert torch.get_num_threads() == before and faiss.omp_get_max_threads() == before_faiss
    with pytest.raises(RuntimeError), pinned_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with pinned_threads() as n:
        assert n == available_cpus() == torch.get_num_threads()


def test_batches_cover_every_image_and_wrap_around():
    images = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    batches = make_batches(images, 2)
    firsts = np.concatenate([b[:, 0, 0, 0].numpy() for b in batches])
    assert [len(b) for b in batches] == [2, 2, 2] and firsts.tolist() == [0, 1, 2, 3, 4, 0]
    assert [b[:, 0, 0, 0].tolist() for b in make_batches(images[:3], 8)] == [[0, 1, 2, 0, 1, 2, 0, 1]]
