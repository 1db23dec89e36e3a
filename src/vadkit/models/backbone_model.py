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
from vadkit.models.base import AnomalyModel


class BackboneModel(AnomalyModel):
    """An :class:`AnomalyModel` whose features come from a frozen pretrained network."""

    def __init__(self, *, backbone: str, layers: Sequence[str] | None, weights: str | None,
                 image_size: int, crop_size: int | None) -> None:
        super().__init__()
        self.backbone = backbone
        self.layers = list(layers) if layers is not None else None
        self.weights = weights
        self.image_size = image_size
        self.crop_size = crop_size
        self._extractor = None

    @property
    def extractor(self):
        """The frozen feature extractor (built, and its weights resolved, on first access)."""
        if self._extractor is None:
            from vadkit.backbones import create_extractor

            self._extractor = create_extractor(self.backbone, self.chosen_layers(), weights=self.weights)
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
