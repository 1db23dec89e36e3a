"""Peak resident memory (RSS) of one phase of work inside a running process.

    with PeakRSS() as peak:
        model.fit(train)
    peak.peak_mb, peak.delta_mb, peak.method     # MiB (2**20 bytes); "hwm" or "sampled"

Why not ``resource.getrusage().ru_maxrss``: it is the peak of the whole process so far, so a phase that
runs after a bigger one (predict after fit) would report the earlier peak. Methods, best first:

* ``"hwm"`` (Linux >= 4.0): writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's high-water mark
  ``VmHWM`` to the current RSS (proc_pid_clear_refs(5)); ``VmHWM`` read from ``/proc/self/status`` at the
  end is then the exact peak of the phase, short spikes included. The reset is checked (``VmHWM`` must drop
  to about ``VmRSS``), because sandboxes may accept the write and ignore it.
* ``"sampled"``: where the reset is not possible (no ``clear_refs``, not writable, not Linux), a daemon
  thread reads the current RSS every ``interval`` seconds (5 ms) from ``/proc/self/statm`` (or psutil,
  when installed). It can miss a spike shorter than the interval; the report names the method so the two
  are never mixed silently.
* ``"lifetime"``: no way to read the current RSS at all; ``peak_mb`` is the process-lifetime
  ``ru_maxrss`` and ``delta_mb`` is ``None``.

Before the phase starts, glibc's ``malloc_trim(0)`` returns freed heap pages to the system (where glibc
is present), so memory freed by earlier work does not hide inside the start figure. RSS counters are
per-CPU approximations in the kernel: expect a slack of about 1 MiB. Memory of child processes (e.g.
DataLoader workers) is not included.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
import threading
from pathlib import Path

MIB = 2**20
METHODS = ("auto", "hwm", "sampled")

_STATUS = Path("/proc/self/status")
_STATM = Path("/proc/self/statm")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``), or None where it cannot be read."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident set size of this process now, in bytes (None where no source is available)."""
    try:
        return int(_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil  # optional: only for platforms without /proc
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def lifetime_peak_bytes() -> int:
    """``ru_maxrss`` of this process: KiB on Linux, bytes on macOS."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def release_freed_memory() -> None:
    """Ask glibc to give freed heap memory back to the kernel (no-op elsewhere)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS; True only if the reset demonstrably worked."""
    try:
        with open(_CLEAR_REFS, "w") as handle:
            handle.write("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    # After a real reset VmHWM is the RSS of the moment (a few pages of slack for concurrent threads).
    return hwm is not None and rss is not None and hwm <= rss + 4096


class _Sampler(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(name="vadkit-rss-sampler", daemon=True)
        self.interval = interval
        self.peak = current_rss_bytes() or 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, current_rss_bytes() or 0)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, current_rss_bytes() or 0)


class PeakRSS:
    """Context manager measuring the peak RSS of the code it wraps.

    Args:
        method: ``"auto"`` (kernel high-water mark when it can be reset, else sampling), ``"hwm"`` (fail
            with RuntimeError when the reset is not possible) or ``"sampled"`` (always the thread).
        interval: sampling period in seconds for the ``"sampled"`` method.

    Attributes (after the block): ``start_mb`` (RSS when the block began), ``peak_mb`` (highest RSS during
    the block, absolute), ``delta_mb`` (``peak_mb - start_mb``, the phase's own growth), ``method``
    (``"hwm"``, ``"sampled"`` or ``"lifetime"``, see the module docstring). All in MiB.
    """

    def __init__(self, method: str = "auto", interval: float = 0.005) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.requested = method
        self.interval = interval
        self.method: str | None = None
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self.delta_mb: float | None = None
        self._sampler: _Sampler | None = None

    def __enter__(self) -> PeakRSS:
        release_freed_memory()
        if self.requested in ("auto", "hwm") and reset_high_water_mark():
            self.method = "hwm"
        elif self.requested == "hwm":
            raise RuntimeError("the kernel peak-RSS mark cannot be reset here (/proc/self/clear_refs); "
                               "use PeakRSS(method='sampled')")
        elif current_rss_bytes() is not None:
            self.method = "sampled"
            self._sampler = _Sampler(self.interval)
            self._sampler.start()
        else:
            self.method = "lifetime"
        start = current_rss_bytes()
        self.start_mb = None if start is None else start / MIB
        return self

    def __exit__(self, *exc_info) -> None:
        if self.method == "hwm":
            hwm = _status_kib("VmHWM")
            peak = max(hwm * 1024 if hwm is not None else 0, current_rss_bytes() or 0)
        elif self.method == "sampled":
            peak = self._sampler.stop()
            self._sampler = None
        else:
            peak = lifetime_peak_bytes()
        self.peak_mb = peak / MIB
        if self.method != "lifetime" and self.start_mb is not None:
            self.delta_mb = max(0.0, self.peak_mb - self.start_mb)

    def __repr__(self) -> str:
        return f"PeakRSS(method={self.method!r}, peak_mb={self.peak_mb}, delta_mb={self.delta_mb})"
