"""Shared plumbing of methods built on a frozen pretrained backbone (PatchCore, PaDiM, ...).

Holds the backbone parameters every such method takes (``backbone``, ``layers``, ``weights``,
``image_size``, ``crop_size``), builds the :class:`~vadkit.backbones.FeatureExtractor` on first use (so a
model can be created, inspected and validated without loading weights), and derives the input
:class:`~vadkit.data.Transform` from the backbone's normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vadkit.data import Transform
from vadkit.errors import ParameterError
from vadkit.models.base import AnomalyModel


def check_sigma(sigma) -> None:
    """Smoothing sigma in pixels: 0 turns smoothing off; negative values are a mistake, not "off"."""
    if not (isinstance(sigma, (int, float)) and sigma >= 0):
        raise ParameterError(f"sigma must be a number >= 0 (pixels; 0 = no smoothing), got {sigma!r}")


class BackboneModel(AnomalyModel):
    """An :class:`AnomalyModel` whose features come from a frozen pretrained network."""

    def __init__(self, *, backbone: str, layers: Sequence[str] | None, weights: str | None,
                 image_size: int, crop_size: int | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = [layers] if isinstance(layers, str) else (list(layers) if layers is not None else None)
        self.weights = weights
        self.image_size = image_size
        self.crop_size = crop_size
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
        for name in ("image_size", "crop_size"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value > 0):
                raise ParameterError(f"{name} must be a positive integer (pixels), got {value!r}")

    @property
    def extractor(self):
        """The frozen feature extractor (built, and its weights resolved, on first access)."""
        if self._extractor is None:
            from vadkit.backbones import create_extractor

            # record the resolved layers, so a saved model keeps them even if a default changes later
            self.layers = self.chosen_layers()
            self._extractor = create_extractor(self.backbone, self.layers, weights=self.weights)
        return self._extractor

    def chosen_layers(self) -> list[str]:
        """The layers to tap: the user's ``layers`` or the method's default for this backbone."""
        if self.layers is not None:
            return list(self.layers)
        return self.default_layers()

    def default_layers(self) -> list[str]:
        from vadkit.backbones import get_spec

        return list(get_spec(self.backbone).default_layers)

    @property
    def transform(self) -> Transform:
        from vadkit.backbones import get_spec

        spec = get_spec(self.backbone)
        return Transform(image_size=self.image_size, crop_size=self.crop_size, mean=spec.mean, std=spec.std)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the backbone on a normalised batch (no autograd)."""
        with torch.inference_mode():
            return self.extractor(images)
