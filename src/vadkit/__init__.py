"""vadkit: visual anomaly detection — learn "normal" from defect-free images, score and localise defects.

>>> import vadkit
>>> model = vadkit.create_model("patchcore", backbone="mobilenet_v2", coreset_ratio=0.1)
>>> model.fit(train_samples); pred = model.predict(test_samples)
>>> model.save("bottle.vad"); model = vadkit.load("bottle.vad")

The top-level names are imported lazily, so ``import vadkit`` (and ``vadkit --help``) does not import torch.
"""

from __future__ import annotations

from vadkit._lazy import lazy_attributes
from vadkit.threads import sleep_when_idle

__version__ = "0.1.0"

# Before torch or faiss start their OpenMP runtimes: idle threads sleep instead of spinning (vadkit.threads)
sleep_when_idle()

_LAZY = {
    "create_model": "vadkit.models",
    "list_models": "vadkit.models",
    "load": "vadkit.models:load_model",
    "Prediction": "vadkit.models",
    "load_split": "vadkit.data",
    "ImageDataset": "vadkit.data",
    "compute_metrics": "vadkit.metrics",
}

__all__ = ["__version__", *_LAZY]

__getattr__ = lazy_attributes(__name__, _LAZY, globals())[0]
