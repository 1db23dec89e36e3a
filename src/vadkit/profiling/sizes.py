"""Static sizes of a model: network parameters, learned state (memory bank / statistics), model file.

* parameters: every ``torch.nn.Module`` the model holds as an attribute (the frozen backbone as built, i.e.
  truncated after its deepest tapped layer; a student or decoder network for trained methods; the model
  itself if it is a module), each parameter counted once even when modules share it;
* learned state: the bytes of every tensor and array in ``model.state_dict()``, found recursively (a
  PatchCore memory bank, PaDiM's means and inverse covariances, product-quantisation codes and codebooks,
  a serialised index...), whatever the method; plain numbers and strings are ignored. It is the state
  *as stored*: a method that rebuilds a search index at load time may hold more while predicting;
* model file: the size on disk of the ``.vad`` file (:mod:`vadkit.models.persistence`: parameters and
  learned state, not the backbone's pretrained weights).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


def _modules(model) -> Iterator[nn.Module]:
    if isinstance(model, nn.Module):
        yield model
    extractor = getattr(model, "extractor", None)  # built lazily by BackboneModel: build it now
    if isinstance(extractor, nn.Module):
        yield extractor
    for value in vars(model).values():
        if isinstance(value, nn.Module):
            yield value
        elif isinstance(value, (list, tuple)):
            yield from (item for item in value if isinstance(item, nn.Module))
        elif isinstance(value, Mapping):
            yield from (item for item in value.values() if isinstance(item, nn.Module))


def parameters(model) -> list[torch.nn.Parameter]:
    """Every distinct torch parameter of the modules the model holds."""
    seen: dict[int, torch.nn.Parameter] = {}
    for module in _modules(model):
        for parameter in module.parameters():
            seen.setdefault(id(parameter), parameter)
    return list(seen.values())


def parameter_count(model) -> int:
    return sum(p.numel() for p in parameters(model))


def parameter_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in parameters(model))


def array_bytes(value: Any) -> int:
    """Bytes of every tensor / numpy array / bytes object inside ``value`` (dicts, lists, tuples walked)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) if not isinstance(value, memoryview) else value.nbytes
    if isinstance(value, Mapping):
        return sum(array_bytes(item) for item in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return sum(array_bytes(item) for item in value)
    return 0


def state_bytes(model) -> int:
    """Bytes of the learned state (memory bank, statistics, codes) of a fitted model."""
    return array_bytes(model.state_dict())


def saved_file_bytes(model) -> int:
    """Size of the model file ``model.save`` writes (saved to a temporary folder, then removed)."""
    with tempfile.TemporaryDirectory(prefix="vadkit-profile-") as folder:
        return model.save(Path(folder) / "model.vad").stat().st_size
