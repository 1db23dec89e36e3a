"""The model file: one self-describing file with config, learned state and threshold.

Layout (a ``torch.save`` archive, read back with ``weights_only=True`` so loading a file never runs code):

    {"format": "vadkit-model", "format_version": 2, "vadkit_version": "...",
     "model": "patchcore", "params": {...constructor keywords, exactly as given...},
     "state": {...every learned attribute (names ending in "_"): tensors and plain values...},
     "threshold": float | None, "threshold_rule": str | None, "threshold_source": str | None,
     "pixel_threshold": float | None, "pixel_threshold_rule": str | None}

Backbone weights are not stored: they are the published pretrained weights named by ``params["backbone"]``
(and ``params["weights"]`` when an explicit file was used), resolved again offline-first on load. This keeps
files small (a PatchCore bank at 1% is a few MB) at the price of needing those weights where it is loaded;
``state["backbone_weights_"]`` records their source and SHA-256, checked when the loaded model first builds
its backbone (:mod:`vadkit.models.backbone_model`).

Version 1 (parameters with the resolved layers, no learned-attribute names) is refused with the fix.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

from vadkit.errors import ModelFileError
from vadkit.models.base import CALIBRATION_KEYS

FORMAT = "vadkit-model"
FORMAT_VERSION = 2


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
        **{key: getattr(model, key) for key in CALIBRATION_KEYS},
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
    from vadkit.errors import VadkitError
    from vadkit.models.registry import model_class

    payload = read_model_file(path)
    try:
        cls = model_class(payload["model"])
    except KeyError:
        raise ModelFileError(f"{path} holds a '{payload['model']}' model, which this vadkit does not know") from None
    params, valid = payload["params"], cls.param_names()
    unknown = sorted(set(params) - set(valid))
    missing = sorted(set(valid) - set(params))
    if unknown or missing:
        parts = ([f"parameters this vadkit's {cls.name} does not take: {', '.join(unknown)}"] if unknown else []) + \
                ([f"no value for its parameters {', '.join(missing)}"] if missing else [])
        raise ModelFileError(f"{path} was written by vadkit {payload.get('vadkit_version', '?')} with "
                             f"{'; '.join(parts)}. Load it with that vadkit version, or re-train the model with this one")
    try:
        model = cls(**params)
    except VadkitError as error:
        raise ModelFileError(f"{path} holds parameters this vadkit rejects: {error}") from None
    try:
        model.load_state_dict(payload["state"])
    except KeyError as error:
        raise ModelFileError(f"{path} lacks the learned attribute {error} of a {cls.name} model: it is damaged or "
                             "was written by another vadkit version; re-train it") from None
    model.fitted = True
    for key in CALIBRATION_KEYS:
        setattr(model, key, payload.get(key))
    return model
