"""Shared plumbing of methods built on a frozen pretrained backbone (PatchCore, PaDiM, ...).

Holds the backbone parameters every such method takes (``backbone``, ``layers``, ``weights``,
``image_size``, ``crop_size``, ``resize``: an input of any shape, see :class:`~vadkit.data.Transform`), builds the :class:`~vadkit.backbones.FeatureExtractor` on first use (so a
model can be created, inspected and validated without loading weights), and derives the input
:class:`~vadkit.data.Transform` from the backbone's normalisation.

What a fit learns about the backbone is kept, so a saved model means the same thing wherever it is loaded:
``layers_``, the layers actually tapped (the user's ``layers``, or the method's default at fit time: a
default that changes in a later vadkit does not change a saved model), and ``backbone_weights_``, where
the pretrained weights came from and the SHA-256 of their tensors. A loaded model whose weights resolve to
other tensors (another cached file, another package version) stops with a :class:`ModelFileError` instead
of scoring with features its memory bank was never built from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from vadkit.data import Transform
from vadkit.data.transforms import Size, parse_size
from vadkit.errors import ModelFileError, ParameterError
from vadkit.models.base import AnomalyModel


def check_sigma(sigma) -> None:
    """Smoothing sigma in pixels: 0 turns smoothing off; negative values are a mistake, not "off"."""
    if not (isinstance(sigma, (int, float)) and sigma >= 0):
        raise ParameterError(f"sigma must be a number >= 0 (pixels; 0 = no smoothing), got {sigma!r}")


def check_input_geometry(image_size, crop_size, resize) -> None:
    """``image_size`` / ``crop_size`` (a side, ``(H, W)`` or ``"HxW"``) and ``resize``, or a ParameterError: the
    Transform's own checks (sizes, a crop inside the resize, a known mode), raised at construction."""
    try:
        Transform(image_size=image_size, crop_size=crop_size, resize=resize)
    except ValueError as error:
        raise ParameterError(str(error)) from None


class BackboneModel(AnomalyModel):
    """An :class:`AnomalyModel` whose features come from a frozen pretrained network."""

    learned: ClassVar[tuple[str, ...]] = ("layers_", "backbone_weights_")

    def __init__(self, *, backbone: str, layers: Sequence[str] | None, weights: str | None,
                 image_size: Size, crop_size: Size | None, resize: str = "stretch") -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        self.weights = weights
        self.image_size = image_size
        self.crop_size = crop_size
        self.resize = resize
        #: the layers the fitted model taps (see the module docstring)
        self.layers_: list[str] | None = None
        #: {"source": where the weights came from, "sha256": digest of their tensors}, recorded at fit
        self.backbone_weights_: dict[str, Any] | None = None
        self._extractor = None
        self._validate_backbone()

    def _validate_backbone(self) -> None:
        """Fail at construction, not after minutes of work, on an unknown backbone/layer or a bad size."""
        from vadkit.backbones import get_spec

        try:
            spec = get_spec(self.backbone)
        except ValueError as error:
            raise ParameterError(str(error)) from None
        unknown = [layer for layer in self.layers or () if layer not in spec.layers]
        if unknown:
            valid = ", ".join(f"{name} (stride {stride})" for name, stride in spec.layers.items())
            raise ParameterError(f"unknown layer(s) {unknown} for backbone {self.backbone!r}; valid: {valid}")
        check_input_geometry(self.image_size, self.crop_size, self.resize)
        patch = spec.patch_size
        name = "crop_size" if self.crop_size is not None else "image_size"
        for side in parse_size(getattr(self, name), name):
            if patch is not None and side % patch:  # a ViT cuts its input into whole patches
                lower, upper = max(patch, side - side % patch), side - side % patch + patch
                raise ParameterError(f"{name}={getattr(self, name)!r}: {side} is not a multiple of {self.backbone}'s "
                                     f"patch size {patch}: the border pixels would never be seen; use {lower} or "
                                     f"{upper}")

    @property
    def extractor(self):
        """The frozen feature extractor (built, and its weights resolved, on first access; for a loaded
        model, the weights are checked against the ones it was fitted with)."""
        if self._extractor is None:
            from vadkit.backbones import create_extractor

            extractor = create_extractor(self.backbone, self.chosen_layers(), weights=self.weights)
            self._check_weights(extractor)
            self._extractor = extractor
        return self._extractor

    def _weights_record(self, extractor) -> dict[str, Any]:
        return {"source": extractor.weights_source, "sha256": extractor.weights_sha256}

    def _check_weights(self, extractor) -> None:
        expected = self.backbone_weights_
        if expected is None:
            return
        found = self._weights_record(extractor)
        if found["sha256"] != expected["sha256"]:
            raise ModelFileError(
                f"this {self.name} model was fitted with {self.backbone} weights from {expected['source']} "
                f"(SHA-256 {expected['sha256'][:12]}...), but the weights found now, from {found['source']}, differ "
                f"(SHA-256 {found['sha256'][:12]}...): its learned state does not fit these features. Install "
                "the same weights (or pass weights=<the original file>), or re-train the model.")

    def _prepare_fit(self) -> None:
        """Record what the fit depends on (layers, weights) before the method sees any image."""
        self.layers_ = self.chosen_layers()
        self.backbone_weights_ = None  # a refit may use other weights: record the ones used now
        self.backbone_weights_ = self._weights_record(self.extractor)

    def _move_to(self, device: torch.device) -> None:
        self.extractor.to(device)

    def chosen_layers(self) -> list[str]:
        """The layers to tap: the fitted ``layers_``, else the user's ``layers`` or the method's default."""
        if self.layers_ is not None:
            return list(self.layers_)
        if self.layers is not None:
            return list(self.layers)
        return self.default_layers()

    def stride_4_8_16_layers(self) -> list[str]:
        """The stride-4 stage end before the backbone's default pair (stride 8 and 16): ResNet layer1..layer3,
        MobileNetV2 features.3 / .6 / .13. The pyramid of PaDiM and STFPM."""
        from vadkit.backbones import get_spec

        spec = get_spec(self.backbone)
        pair = list(spec.default_layers)
        shallower = [name for name, stride in spec.layers.items() if 4 <= stride < spec.layers[pair[0]]]
        return ([shallower[-1]] if shallower else []) + pair

    def default_layers(self) -> list[str]:
        from vadkit.backbones import get_spec

        return list(get_spec(self.backbone).default_layers)

    @property
    def transform(self) -> Transform:
        from vadkit.backbones import get_spec

        spec = get_spec(self.backbone)
        return Transform(image_size=self.image_size, crop_size=self.crop_size, mean=spec.mean, std=spec.std,
                         resize=self.resize)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the backbone on a normalised batch (no autograd)."""
        with torch.inference_mode():
            return self.extractor(images)
