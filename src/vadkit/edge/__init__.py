"""Deployment: a fitted model as an ONNX bundle, and a runtime that needs neither torch nor faiss.

* :mod:`~vadkit.edge.bundle`: the bundle on disk (``model.onnx`` + ``vadkit-edge.json``), torch-free.
* :mod:`~vadkit.edge.export`: :func:`export_model`, the method's whole inference graph as one ONNX model.
* :mod:`~vadkit.edge.runtime`: :class:`Runtime`, ``Runtime(DIR).predict(paths)`` with onnxruntime, numpy and
  Pillow only (install vadkit with ``--no-deps`` beside those three on an edge box).
* :mod:`~vadkit.edge.parity`: :func:`check_parity`, the exported model against the PyTorch one on real images.
* :mod:`~vadkit.edge.quantize`: :func:`quantize_bundle`, onnxruntime static int8 quantisation calibrated on
  normal images.

Names are imported on first use, so ``import vadkit.edge`` stays free of torch.
"""

from __future__ import annotations

from vadkit._lazy import lazy_attributes

_LAZY = {
    "Runtime": "vadkit.edge.runtime",
    "read_bundle": "vadkit.edge.bundle",
    "export_model": "vadkit.edge.export",
    "check_parity": "vadkit.edge.parity",
    "quantize_bundle": "vadkit.edge.quantize",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
