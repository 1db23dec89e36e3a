"""Anomaly-detection methods, one file per method, all implementing :class:`~vadkit.models.base.AnomalyModel`.

>>> model = create_model("patchcore", backbone="mobilenet_v2", coreset_ratio=0.1)
"""

from vadkit.models.base import AnomalyModel, NotFittedError, Prediction
from vadkit.models.persistence import load_model
from vadkit.models.registry import create_model, list_models, model_class

__all__ = ["AnomalyModel", "NotFittedError", "Prediction", "create_model", "list_models", "load_model", "model_class"]
