"""HTTP serving: ``vadkit serve MODEL`` (a ``.vad`` file or a folder written by ``vadkit export``).

* :mod:`~vadkit.serve.app`: :func:`create_app`, the FastAPI application (``POST /predict``, ``GET /health``,
  ``GET /metrics``, the OpenAPI schema at ``/openapi.json``), with concurrent requests batched together;
  :func:`load_predictor`, the one place that tells a bundle from a model file.

Needs the ``serve`` extra (``pip install 'vadkit[serve]'``: fastapi, uvicorn, python-multipart). Names are
imported on first use, so ``import vadkit.serve`` needs neither FastAPI nor torch; serving a bundle never
imports torch.
"""

from __future__ import annotations

from vadkit._lazy import lazy_attributes

_LAZY = {
    "create_app": "vadkit.serve.app",
    "load_predictor": "vadkit.serve.app",
    "Predictor": "vadkit.serve.app",
}

__all__ = list(_LAZY)

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
