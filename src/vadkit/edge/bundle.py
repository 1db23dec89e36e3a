"""An exported model on disk: ``DIR/model.onnx`` and ``DIR/vadkit-edge.json``. Torch-free.

The ONNX model maps normalised images ``images`` (B, 3, H, W) float32 to ``scores`` (B,) and ``maps``
(B, H, W), the numbers ``model.predict`` gives. The JSON holds what the graph cannot: how to preprocess an
image (the model's :class:`~vadkit.data.transforms.Transform`), the calibrated thresholds, the method and
where it came from, and the SHA-256 of the ONNX file (a runtime refuses a file that does not match it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from vadkit.errors import ModelFileError

BUNDLE_FORMAT = "vadkit-edge"
BUNDLE_VERSION = 1
ONNX_NAME = "model.onnx"
SPEC_NAME = "vadkit-edge.json"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_spec(directory: str | Path, spec: dict[str, Any]) -> Path:
    """Write the bundle's JSON (format and version added; the ONNX file's hash recorded)."""
    directory = Path(directory)
    spec = {"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, **spec,
            "onnx_sha256": file_sha256(directory / ONNX_NAME)}
    path = directory / SPEC_NAME
    path.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def read_bundle(directory: str | Path, *, verify: bool = True) -> dict[str, Any]:
    """The JSON of the bundle in ``directory``, checked: its format, its version, the ONNX file beside it and
    (``verify``) that file's hash. Every way a bundle can be unusable is one :class:`ModelFileError`."""
    directory = Path(directory)
    spec_path, onnx_path = directory / SPEC_NAME, directory / ONNX_NAME
    fix = "export it again with `vadkit export MODEL.vad --format onnx --out DIR`"
    if not spec_path.is_file() or not onnx_path.is_file():
        missing = spec_path if not spec_path.is_file() else onnx_path
        raise ModelFileError(f"{directory} is not a vadkit export: {missing.name} is missing ({fix})")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelFileError(f"{spec_path} is not valid JSON ({error}); {fix}") from None
    if not isinstance(spec, dict) or spec.get("format") != BUNDLE_FORMAT:
        raise ModelFileError(f"{spec_path} is not a vadkit export description; {fix}")
    if spec.get("format_version") != BUNDLE_VERSION:
        raise ModelFileError(f"{spec_path} has export format version {spec.get('format_version')!r}, this vadkit "
                             f"reads version {BUNDLE_VERSION}; {fix} with this vadkit")
    if verify and file_sha256(onnx_path) != spec.get("onnx_sha256"):
        raise ModelFileError(f"{onnx_path} does not match the SHA-256 recorded in {SPEC_NAME} (modified or "
                             f"truncated); {fix}")
    return spec
