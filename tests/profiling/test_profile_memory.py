"""PeakRSS: the peak of one phase, not of the process so far, by either method."""

import time

import numpy as np
import pytest

from vadkit.profiling import memory
from vadkit.profiling.memory import PeakRSS

MIB = 2**20


def allocate(megabytes: int, hold: float = 0.0) -> None:
    block = np.ones(megabytes * MIB, dtype=np.uint8)  # np.ones writes every page: all of it is resident
    time.sleep(hold)  # the sampling method needs the block to live for a few periods
    del block


@pytest.mark.parametrize("method", ["auto", "sampled"])
def test_a_phase_allocating_200_mb_shows_it(method):
    with PeakRSS(method=method) as peak:
        allocate(200, hold=0.1)
    assert peak.method in ("hwm", "sampled") if method == "auto" else peak.method == "sampled"
    assert peak.delta_mb >= 180
    assert peak.peak_mb == pytest.approx(peak.start_mb + peak.delta_mb)


@pytest.mark.parametrize("method", ["auto", "sampled"])
def test_an_earlier_bigger_peak_does_not_leak_into_the_phase(method):
    allocate(300)  # freed again: only the process-lifetime peak remembers it
    with PeakRSS(method=method) as peak:
        allocate(20, hold=0.05)
    assert 15 <= peak.delta_mb < 100


def test_auto_falls_back_to_sampling_when_the_kernel_mark_cannot_be_reset(monkeypatch, tmp_path):
    monkeypatch.setattr(memory, "_CLEAR_REFS", tmp_path / "missing" / "clear_refs")
    with PeakRSS() as peak:
        allocate(100, hold=0.1)
    assert peak.method == "sampled" and peak.delta_mb >= 90
    with pytest.raises(RuntimeError, match="sampled"):
        with PeakRSS(method="hwm"):
            pass


def test_the_high_water_mark_method_is_used_where_the_kernel_allows_it():
    if not memory.reset_high_water_mark():
        pytest.skip("/proc/self/clear_refs cannot reset the peak RSS here")
    with PeakRSS() as peak:
        allocate(50)  # freed at once: only the kernel mark can still see it
    assert peak.method == "hwm" and peak.delta_mb >= 45


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="method"):
        PeakRSS(method="psutil")
