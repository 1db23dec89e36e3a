"""vadkit: visual anomaly detection — learn "normal" from defect-free images, score and localise defects.

>>> import vadkit
>>> model = vadkit.create_model("patchcore", backbone="mobilenet_v2", coreset_ratio=0.1)
>>> model.fit(train_samples); pred = model.predict(test_samples)
>>> model.save("bottle.vad"); model = vadkit.load("bottle.vad")

The top-level names are imported lazily, so ``import vadkit`` (and ``vadkit --help``) does not import torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "create_model": ("vadkit.models", "create_model"),
    "list_models": ("vadkit.models", "list_models"),
    "load": ("vadkit.models", "load_model"),
    "Prediction": ("vadkit.models", "Prediction"),
    "load_split": ("vadkit.data", "load_split"),
    "ImageDataset": ("vadkit.data", "ImageDataset"),
    "compute_metrics": ("vadkit.metrics", "compute_metrics"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vadkit' has no attribute {name!r}")
