"""Export a fitted model as an ONNX bundle (:mod:`vadkit.edge.bundle`): the whole inference graph in one file.

Every method's ``inference_module()`` (backbone, memory-bank search or student / flow / decoder, map
post-processing, image score) is traced with ``torch.export`` and translated by torch's ONNX exporter (the
``dynamo=True`` path, opset 18), with the batch dimension left free. Every registered method exports as one
graph (the tests export each and check parity), so there is no split for a runtime to reassemble. The
memory-bank searches run as exact matrix products + TopK in the graph (faiss does them in ``predict``), so an
exported PatchCore holds its bank as a constant: the file grows with the bank (``bank rows x channels x 4``
bytes).

Parity is part of the export (:mod:`vadkit.edge.parity`); ``vadkit export --check DATA`` measures it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import platform
import time
import warnings
from pathlib import Path
from typing import Any

from vadkit.edge.bundle import ONNX_NAME, read_bundle, write_spec
from vadkit.errors import ParameterError, VadkitError

OPSET = 18
INPUT_NAME, OUTPUT_NAMES = "images", ("scores", "maps")


def export_model(model, out: str | Path, *, opset: int = OPSET, source: str | Path | None = None,
                 verbose: bool = False) -> Path:
    """Write ``out/model.onnx`` and ``out/vadkit-edge.json`` for the fitted ``model``; returns ``out``.

    ``source``: the model file it came from (recorded with its SHA-256). ``verbose``: show the exporter's own
    messages and warnings (silenced by default: they describe torch internals, not the user's model).
    """
    import torch

    from vadkit import __version__
    from vadkit.edge.bundle import file_sha256

    model._check_fitted("export")
    blocker = model.export_blocker()
    if blocker:
        raise ParameterError(f"this {model.name} model cannot be exported to ONNX: {blocker}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    graph = model.inference_module().eval()
    height, width = model.input_size_
    example = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0)).to(model.device)
    batch = torch.export.Dim("batch", min=1)
    started = time.perf_counter()
    quiet = contextlib.nullcontext() if verbose else _silenced()
    try:
        with quiet, torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=opset, verbose=verbose,
                                        input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                        dynamic_shapes=({0: batch},), external_data=False)
            program.save(str(out / ONNX_NAME))
    except Exception as error:  # torch.export's errors are long; the first line says what failed
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise VadkitError(f"exporting this {model.name} model to ONNX failed: {first} "
                          "(run again with verbose=True / --verbose for the exporter's full report)") from error
    weights = getattr(model, "backbone_weights_", None) or {}
    spec: dict[str, Any] = {
        "method": model.name,
        # a transductive graph scores the images of one call against each other: a runtime feeds them all at once
        "transductive": bool(getattr(model, "transductive", False)),
        "backbone": model.backbone,
        "params": _plain(model.get_params()),
        "input_size": [height, width],
        "transform": _plain(dataclasses.asdict(model.transform)),
        "threshold": model.threshold,
        "threshold_rule": model.threshold_rule,
        "pixel_threshold": model.pixel_threshold,
        "pixel_threshold_rule": model.pixel_threshold_rule,
        "inputs": {INPUT_NAME: ["batch", 3, height, width]},
        "outputs": {OUTPUT_NAMES[0]: ["batch"], OUTPUT_NAMES[1]: ["batch", height, width]},
        "opset": opset,
        "precision": "fp32",
        "backbone_weights_sha256": weights.get("sha256") if isinstance(weights, dict) else None,
        "source_model": None if source is None else {"path": str(source), "sha256": file_sha256(source)},
        "exported_with": {"vadkit": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "export_seconds": round(time.perf_counter() - started, 1),
    }
    write_spec(out, spec)
    read_bundle(out)  # what a runtime will check, checked once here
    return out


@contextlib.contextmanager
def _silenced():
    """torch's exporter prints progress lines and raises warnings about its own internals."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _plain(value: Any) -> Any:
    """JSON-ready: tuples as lists, anything exotic as its string."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
