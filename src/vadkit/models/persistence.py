"""The model file: one self-describing file with config, learned state and threshold.

Layout (a ``torch.save`` archive, read back with ``weights_only=True`` so loading a file never runs code):

    {"format": "vadkit-model", "format_version": 1, "vadkit_version": "...",
     "model": "patchcore", "params": {...constructor keywords...},
     "state": {...tensors...}, "threshold": float | None, "threshold_rule": str | None}

Backbone weights are not stored: they are the published pretrained weights named by ``params["backbone"]``
(and ``params["weights"]`` when an explicit file was used), resolved again offline-first on load. This keeps
files small (a PatchCore bank at 1% is a few MB) at the price of needing those weights where it is loaded.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from vadkit.errors import ModelFileError

FORMAT = "vadkit-model"
FORMAT_VERSION = 1


def save_model(model, path: str | Path) -> Path:
    from vadkit import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "vadkit_version": __version__,
        "model": model.name,
        "params": model.get_params(),
        "state": model.state_dict(),
        "threshold": model.threshold,
        "threshold_rule": model.threshold_rule,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a truncated model file behind
    return path


def read_model_file(path: str | Path) -> dict:
    """The raw payload of a model file, with every way it can be unusable turned into ModelFileError."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path} (train one with `vadkit train ... --out DIR`)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is not a vadkit model file (not a torch archive; truncated or another "
                             "format). Re-train or re-copy the file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError/UnpicklingError/EOFError on damaged archives
        raise ModelFileError(f"{path} is damaged or truncated and cannot be read ({error.__class__.__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''}). Re-train or re-copy it.") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{path} is a torch file but not a vadkit model (no '{FORMAT}' header)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path} has model-file format version {version}, this vadkit "
                             f"reads version {FORMAT_VERSION}: re-train it with this version, or install the "
                             f"vadkit {payload.get('vadkit_version', '?')} that wrote it")
    return payload


def load_model(path: str | Path):
    """Rebuild a fitted model from a file written by ``model.save``."""
    from vadkit.models.registry import model_class

    payload = read_model_file(path)
    try:
        cls = model_class(payload["model"])
    except KeyError:
        raise ModelFileError(f"{path} holds a '{payload['model']}' model, which this vadkit does not know") from None
    model = cls(**payload["params"])
    model.load_state_dict(payload["state"])
    model.fitted = True
    model.threshold, model.threshold_rule = payload["threshold"], payload["threshold_rule"]
    return model
