"""PaDiM: a multivariate Gaussian of the patch features at every position of the image.

Defard, Setkov, Loesch, Audigier. "PaDiM: a Patch Distribution Modeling Framework for Anomaly Detection and
Localization", ICPR 2021. https://arxiv.org/abs/2011.08785

As the paper defines it:

* features: the first three stages of an ImageNet backbone (ResNet ``layer1``..``layer3``; here the
  backbone's stride-4, -8 and -16 stage ends), upsampled to the stride-4 map and concatenated;
* a random subset of ``n_features`` channels (100 of 448 for ResNet-18, 550 of 1792 for WRN-50), fixed by
  ``seed``: the paper shows it works as well as PCA at a fraction of the cost;
* per position (i, j): mean mu_ij and covariance Sigma_ij + epsilon * I (epsilon = 0.01) over the training
  images, accumulated in a streaming way (sums of x and x x^T in float64, one pass, no stored features);
* score: Mahalanobis distance sqrt((x - mu)^T Sigma^-1 (x - mu)) per position; the map is upsampled to the
  input size and smoothed with a Gaussian of sigma = 4; the image score is the map's maximum.

``covariance="diagonal"`` is the PaDiM-Lite edge variant: only per-channel variances are kept, the distance
is sum((x - mu)^2 / (var + epsilon)) under the root, with no matrix inverse and d instead of d^2 numbers
per position (100x smaller model for d = 100).

Paper (WRN-50, 550 random channels, 224 px): MVTec AD mean image AUROC 95.3%, pixel AUROC 97.5%, PRO 92.1%.
Our measurements are in BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError, VadkitError
from vadkit.models.backbone_model import BackboneModel, check_sigma
from vadkit.ops.patch_features import pyramid_embedding
from vadkit.ops.smoothing import to_image_maps

COVARIANCES = ("full", "diagonal")


class PaDiM(BackboneModel):
    """PaDiM (Defard et al., ICPR 2021) and its diagonal-covariance edge variant.

    Args:
        backbone: feature extractor name (default ``mobilenet_v2``; the paper uses resnet18 / wide_resnet50_2).
        layers: layers to tap; default: the backbone's stride-4, -8 and -16 stage ends.
        weights: explicit backbone weights file (else resolved offline-first).
        image_size, crop_size: input resize and optional centre crop.
        n_features: size of the random channel subset (capped at the number of channels).
        covariance: ``"full"`` (the paper) or ``"diagonal"`` (PaDiM-Lite).
        epsilon: regulariser added to the covariance diagonal (0.01 in the paper).
        sigma: Gaussian smoothing of the map, in pixels.
        seed: seed of the channel subset.
    """

    name = "padim"
    learned: ClassVar[tuple[str, ...]] = ("channel_index_", "mean_", "precision_", "grid_")

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 n_features: int = 100, covariance: str = "full", epsilon: float = 0.01, sigma: float = 4.0,
                 seed: int = 0) -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        if covariance not in COVARIANCES:
            raise ParameterError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")
        if not (isinstance(n_features, int) and n_features >= 1):
            raise ParameterError(f"n_features must be an integer >= 1, got {n_features!r}")
        if not (isinstance(epsilon, (int, float)) and epsilon >= 0):
            raise ParameterError(f"epsilon must be a number >= 0, got {epsilon!r}")
        check_sigma(sigma)
        self.n_features = n_features
        self.covariance = covariance
        self.epsilon = epsilon
        self.sigma = sigma
        self.seed = seed
        self.channel_index_: torch.Tensor | None = None  # (d,) the random channel subset, sorted
        self.mean_: torch.Tensor | None = None           # (P, d)
        self.precision_: torch.Tensor | None = None      # (P, d, d) inverse covariance, or (P, d) 1/variance
        self.grid_: list[int] | None = None              # [h, w] feature positions, P = h * w

    def default_layers(self) -> list[str]:
        """ResNet layer1 + layer2 + layer3: the backbone's stride-4, -8 and -16 stage ends."""
        return self.stride_4_8_16_layers()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Selected channels of the concatenated pyramid, as (B, P, d) with P = h * w positions.

        The channel subset is drawn on the first call of a fit (it needs the pyramid's width)."""
        embedding = pyramid_embedding(self.features(images), self.chosen_layers(), patch_size=1)
        if self.channel_index_ is None:
            generator = torch.Generator().manual_seed(self.seed)
            d = min(self.n_features, embedding.shape[1])
            self.channel_index_ = torch.randperm(embedding.shape[1], generator=generator)[:d].sort().values
            self.grid_ = list(embedding.shape[-2:])
        selected = embedding[:, self.channel_index_]
        return selected.flatten(2).transpose(1, 2).double()

    def _fit(self, batches: Iterator[torch.Tensor], n_images: int, progress: bool | None) -> None:
        self.channel_index_ = self.mean_ = self.precision_ = self.grid_ = None
        count, total, second_moment = 0, None, None
        for images in batches:
            x = self.embed(images).cpu()                             # (B, P, d) float64, summed on the CPU
            if total is None:
                total = torch.zeros(x.shape[1:], dtype=torch.float64)
                second_moment = torch.zeros(x.shape[1], x.shape[2], x.shape[2]) if self.covariance == "full" \
                    else torch.zeros(x.shape[1:])
                second_moment = second_moment.double()
            total += x.sum(0)
            if self.covariance == "full":
                second_moment += torch.einsum("bpi,bpj->pij", x, x)
            else:
                second_moment += (x * x).sum(0)
            count += x.shape[0]
        if count < 2:
            raise VadkitError(f"PaDiM needs at least 2 training images to estimate a covariance, got {count}")
        mean = total / count
        if self.covariance == "full":
            covariance = (second_moment - count * mean[:, :, None] * mean[:, None, :]) / (count - 1)
            covariance += self.epsilon * torch.eye(mean.shape[1], dtype=torch.float64)
            self.precision_ = torch.linalg.inv(covariance).float()
        else:
            variance = (second_moment - count * mean * mean) / (count - 1)
            self.precision_ = (1.0 / (variance.clamp_min(0.0) + self.epsilon)).float()
        self.mean_ = mean.float()

    def distance_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of every position, (B, h, w), before upsampling and smoothing."""
        return self.inference_module().distance_grid(images)

    def inference_module(self) -> PaDiMGraph:
        self._check_fitted("inference_module")
        return PaDiMGraph(self.extractor, self.chosen_layers(), self.channel_index_.to(self.device),
                          self.mean_.to(self.device), self.precision_.to(self.device), self.grid_, self.sigma)

    def _move_to(self, device: torch.device) -> None:
        super()._move_to(device)
        if self.mean_ is not None:
            self.mean_, self.precision_ = self.mean_.to(device), self.precision_.to(device)

    def analytic_macs(self, n_images: int = 1) -> dict[str, int]:
        """Distance work torch's flop counter cannot see (for ``vadkit profile``).

        The full covariance's Mahalanobis distance is a ``bmm`` and is counted by torch; the diagonal one is
        element-wise ((delta * delta * precision).sum: one multiply-accumulate per position and feature),
        which the counter skips, so it is declared here.
        """
        self._check_fitted("profile")
        if self.covariance == "full":
            return {}
        positions = self.grid_[0] * self.grid_[1]
        return {"diagonal_mahalanobis": n_images * positions * int(self.mean_.shape[-1])}

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)


class PaDiMGraph(torch.nn.Module):
    """PaDiM's whole inference (also what ``PaDiM.predict`` runs): backbone, channel subset, Mahalanobis
    distance per position, upsampled and smoothed map, image score = the map's maximum."""

    def __init__(self, extractor: torch.nn.Module, layers: Sequence[str], channel_index: torch.Tensor,
                 mean: torch.Tensor, precision: torch.Tensor, grid: Sequence[int], sigma: float) -> None:
        super().__init__()
        self.extractor, self.layers, self.grid, self.sigma = extractor, list(layers), tuple(grid), sigma
        self.register_buffer("channel_index", channel_index)
        self.register_buffer("mean", mean)             # (P, d)
        self.register_buffer("precision", precision)   # (P, d, d) inverse covariance, or (P, d) 1 / variance

    def distance_grid(self, images: torch.Tensor) -> torch.Tensor:
        """(B, h, w) Mahalanobis distances, before upsampling and smoothing."""
        embedding = pyramid_embedding(self.extractor(images), self.layers, patch_size=1)
        delta = embedding[:, self.channel_index].flatten(2).transpose(1, 2) - self.mean       # (B, P, d)
        if self.precision.ndim == 3:
            # (P, B, d) @ (P, d, d): one batched matrix product over positions, no loop
            projected = torch.bmm(delta.transpose(0, 1), self.precision).transpose(0, 1)
            squared = (projected * delta).sum(-1)
        else:
            squared = (delta * delta * self.precision).sum(-1)
        return squared.clamp_min(0.0).sqrt().view(-1, *self.grid)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = to_image_maps(self.distance_grid(images), tuple(images.shape[-2:]), self.sigma)
        return maps.flatten(1).max(1).values, maps
