"""Efficiency figures of a model: parameters, MACs, learned-state and file size, peak RSS, latency.

* :mod:`~vadkit.profiling.memory`: :class:`PeakRSS`, the peak resident memory of one phase of work;
* :mod:`~vadkit.profiling.flops`: :func:`count_macs` / :func:`model_macs`, MACs counted by torch (and what
  it cannot count);
* :mod:`~vadkit.profiling.latency`: :func:`time_calls`, :func:`pinned_threads`: median / p95 latency after
  warm-up with the thread count pinned;
* :mod:`~vadkit.profiling.sizes`: parameter count, learned-state bytes, model-file bytes;
* :mod:`~vadkit.profiling.profile`: :func:`profile_model` puts them together (``vadkit profile``).

Importing this package does not import torch; the submodules do.
"""

from __future__ import annotations

from vadkit._lazy import lazy_attributes

_LAZY = {
    "PeakRSS": "vadkit.profiling.memory",
    "count_macs": "vadkit.profiling.flops",
    "model_macs": "vadkit.profiling.flops",
    "ModelMacs": "vadkit.profiling.flops",
    "UNCOUNTED_TORCH_OPS": "vadkit.profiling.flops",
    "Timing": "vadkit.profiling.latency",
    "time_calls": "vadkit.profiling.latency",
    "pinned_threads": "vadkit.threads",
    "available_cpus": "vadkit.threads",
    "Profile": "vadkit.profiling.profile",
    "PROFILE_KEYS": "vadkit.profiling.profile",
    "profile_model": "vadkit.profiling.profile",
}

__all__ = sorted(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
