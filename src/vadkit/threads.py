"""One thread policy for every library that computes in parallel: torch (intra-op) and faiss (OpenMP).

Both run OpenMP thread pools of their own (each wheel bundles its own ``libgomp``). Left to their defaults
they can ask for more threads than there are cores between them, and OpenMP threads that wait for each
other at every parallel region then slow down many-fold on a busy machine (vadkit's test suite once took
65 s instead of 7 for one test). So every command sets one count for all of them
(:func:`set_threads`, the CLI's ``--threads``; default: the CPUs this process may run on).

Setting it early is what makes it hold everywhere: before torch or faiss is imported, ``OMP_NUM_THREADS``
is what their runtimes read when they start; once imported, their own setters are called too.

Waiting threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``, set by ``import vadkit`` unless the
user set it): by default an OpenMP thread that finishes its part keeps a core busy for a while, waiting for
the next parallel region. With two runtimes taking turns (torch's backbone, then faiss' search) and other
processes on the machine, those spinning threads starve the ones with work. Measured on this project's
2-core machine with 3 busy processes beside it and 2 threads (BENCHMARKS.md, "One thread policy"):
PatchCore predict 78 -> 31 ms per image against libgomp's default, a bare MobileNetV2 forward 50 -> 24 ms;
on a quiet machine PASSIVE is no slower for predict, and a bare forward loses 24% against ACTIVE.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

#: what :func:`sleep_when_idle` sets when the user has not chosen
WAIT_POLICY = "PASSIVE"


def sleep_when_idle() -> None:
    """Make OpenMP threads sleep when they have no work (see the module docstring); a choice the user made in
    ``OMP_WAIT_POLICY`` is kept. Takes effect for the runtimes loaded after it (torch, faiss)."""
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)


def available_cpus() -> int:
    """CPUs this process may run on (respects taskset / cgroup cpusets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _check(threads) -> int:
    n = available_cpus() if threads is None else threads
    if isinstance(n, bool) or not (isinstance(n, int) and n >= 1):
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return n


def get_threads() -> dict[str, int | None]:
    """The thread counts in force: ``{"torch": n, "faiss": n}`` (None for a library not imported yet)."""
    torch = sys.modules.get("torch")
    faiss = sys.modules.get("faiss")
    return {"torch": torch.get_num_threads() if torch is not None else None,
            "faiss": faiss.omp_get_max_threads() if faiss is not None else None}


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` (default: :func:`available_cpus`) in torch and faiss, now and once they are imported;
    returns the count."""
    n = _check(threads)
    os.environ["OMP_NUM_THREADS"] = str(n)  # read by each OpenMP runtime when it starts
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    return n


@contextlib.contextmanager
def pinned_threads(threads: int | None = None) -> Iterator[int]:
    """Run the block with exactly ``threads`` threads in torch and faiss (both imported here); yields the
    count and restores the previous settings afterwards."""
    import faiss  # noqa: F401 - imported so that its setting is pinned too
    import torch  # noqa: F401

    n = _check(threads)
    previous = get_threads()
    environment = os.environ.get("OMP_NUM_THREADS")
    set_threads(n)
    try:
        yield n
    finally:
        sys.modules["torch"].set_num_threads(previous["torch"])
        sys.modules["faiss"].omp_set_num_threads(previous["faiss"])
        if environment is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = environment
