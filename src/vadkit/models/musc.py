"""MuSc: zero-shot anomaly detection by mutual scoring of the unlabelled test images.

Li, Huang, Zhang, Wei, Zhu, Hu, Zhang, Gao. "MuSc: Zero-Shot Industrial Anomaly Classification and
Segmentation with Mutual Scoring of the Unlabeled Images", ICLR 2024. https://arxiv.org/abs/2401.16753
(official code: github.com/xrli-U/MuSc).

No training images at all: a patch of a normal image finds close patches in most other images of the same
product, an anomalous patch in few. MuSc is *transductive*: the images given to ``predict`` score each
other, so a score depends on the set it was computed in (``transductive = True``; ``vadkit train`` and
``vadkit test`` give it the whole test split at once, and say so). As the paper and its code define it:

* features: 4 blocks of a frozen ViT (blocks 3, 6, 9, 12 of a 12-block ViT, 0-based ``blocks.2``, ``.5``,
  ``.8``, ``.11``), patch tokens through the final LayerNorm (the code's DINOv2 path);
* LNAMD (local neighbourhood aggregation with multiple degrees): each image's feature map normalised over
  (C, H, W), averaged over r x r neighbourhoods for r in {1, 3, 5} (zero padding counted), L2-normalised;
* MSM (mutual scoring): per layer and degree, the distance of each patch to its nearest patch in every other
  image; a patch's score is the mean of the smallest 30% of those N - 1 distances (the "interval average"),
  averaged over layers and degrees;
* map: patch scores upsampled bilinearly (no smoothing in the code: ``sigma=0``); image score: its maximum;
* RsCIN (re-scoring with a constrained image-level neighbourhood): image scores min-max normalised, then
  smoothed over each image's k most similar images (cosine similarity of the class tokens, the image itself
  included, weights the similarities) for k in {1, 2, 3}, averaged;
* ``subsets``: the code can split the test set into subsets scored separately (mutual scoring within a subset
  only; RsCIN over all), trading a little accuracy for N^2 / subsets work.

Deviations: the paper's backbone, CLIP ViT-L/14-336 at 518 px, cannot be obtained offline; the default is the
offline DINOv2 ViT-S/14 (``dinov2_vits14_imgfocus``; the code supports DINOv2 encoders, blocks 3/6/9/12 of a
12-block ViT) at 224 px (the CPU cost grows with the square of the patches per image). Subsets are drawn
round-robin from a seeded permutation (the code stratifies by defect type, which a zero-shot method cannot
know). The class tokens are L2-normalised before RsCIN (the code's CLIP path; its DINOv2 path forgets to).

Paper (CLIP ViT-L/14-336, 518 px): MVTec AD image AUROC 97.8, pixel AUROC 97.3; with DINOv2 ViT-B/14 at
518 px, 96.3 / 98.1. Our measurements: BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError, VadkitError
from vadkit.models.backbone_model import BackboneModel, check_sigma
from vadkit.models.base import Prediction
from vadkit.ops.smoothing import gaussian_blur


def default_layers_of(depth: int) -> list[str]:
    """The last block of each quarter of the ViT: blocks 2, 5, 8, 11 of 12 (the paper's ViT-B / DINOv2-B taps)."""
    return [f"blocks.{(i + 1) * depth // 4 - 1}" for i in range(4)]


def aggregate_neighbourhood(grid: torch.Tensor, degree: int) -> torch.Tensor:
    """LNAMD for one layer and degree: (N, C, h, w) -> unit patch vectors (N, h * w, C)."""
    normalised = F.layer_norm(grid, grid.shape[1:])                        # over (C, H, W), no affine, eps 1e-5
    if degree > 1:
        normalised = F.avg_pool2d(normalised, degree, stride=1, padding=degree // 2, count_include_pad=True)
    return F.normalize(normalised.flatten(2).transpose(1, 2), dim=-1)


#: the distance given to an image's own patches: above any distance between unit vectors (2), so never kept
_OWN = 4.0


def mutual_scores(patches: torch.Tensor, interval: float, groups: Sequence[torch.Tensor], chunk: int = 4) -> torch.Tensor:
    """MSM for one layer and degree. ``patches`` (N, P, C) unit vectors; every image is scored against the other
    images of its group (``groups``: index tensors partitioning 0..N-1). Returns (N, P): each patch's mean distance
    to its nearest patch in the closest ``interval`` share of the other images."""
    n, p, _ = patches.shape
    scores = torch.empty(n, p, dtype=patches.dtype, device=patches.device)
    for members in groups:
        others = patches[members]                                                         # (M, P, C)
        m = others.shape[0]
        if not torch.compiler.is_exporting() and m < 2:
            raise VadkitError("mutual scoring needs at least 2 images in every subset (got 1): "
                              "score more images at once, or use fewer subsets")
        distance = nearest_distances(others, chunk)                                          # (M, P, M)
        own = torch.eye(m, dtype=torch.bool, device=patches.device)
        distance = distance.masked_fill(own[:, None, :], _OWN)
        # the number of other images averaged, max(1, floor(interval * (M - 1))), as a tensor: an exported graph
        # keeps the batch size free
        rank = torch.arange(m, device=patches.device, dtype=patches.dtype)
        keep = torch.floor(interval * rank[-1]).clamp_min(1.0)
        taken = (rank < keep).to(patches.dtype)
        scores[members] = (distance.sort(dim=2).values * taken).sum(dim=2) / keep
    return scores


def nearest_distances(patches: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """(M, P, M): the distance of each patch of each image to its nearest patch in each image (unit vectors).

    One similarity block Z_i Z_j^T gives both directions (its row maxima are image i's patches against j, its column
    maxima j's against i), so in eager mode each pair of images is computed once: half the work of all pairs.
    While exporting, one block of all against all (a loop over the batch would freeze its size into the graph)."""
    m, p, c = patches.shape
    flat = patches.reshape(m * p, c)
    if torch.compiler.is_exporting():
        similarity = (flat @ flat.T).view(m, p, m, p)
        return (2.0 - 2.0 * similarity.amax(dim=3)).clamp_min(0.0).sqrt()
    nearest = torch.empty(m, p, m, dtype=patches.dtype, device=patches.device)
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        similarity = (flat[start * p:stop * p] @ flat[start * p:].T).view(stop - start, p, m - start, p)
        nearest[start:stop, :, start:] = similarity.amax(dim=3)                   # block images -> later images
        nearest[start:, :, start:stop] = similarity.amax(dim=1).permute(1, 2, 0)  # later images -> block images
    return (2.0 - 2.0 * nearest).clamp_min(0.0).sqrt()


def rescore(scores: torch.Tensor, class_tokens: torch.Tensor, windows: Sequence[int]) -> torch.Tensor:
    """RsCIN: min-max normalised image scores (N,) averaged over each image's ``k`` most similar images (class-token
    cosine similarity as weights, itself included), for every k in ``windows``, then averaged over the windows."""
    span = (scores.max() - scores.min()).clamp_min(1e-12)
    normalised = (scores - scores.min()) / span
    unit = F.normalize(class_tokens, dim=-1)
    similarity = unit @ unit.T                                                               # (N, N)
    # each row's similarities ranked (0 = the most similar: the image itself); ranks, not topk, so that an exported
    # graph takes any number of images, fewer than k included
    rank = similarity.argsort(dim=1, descending=True).argsort(dim=1)
    results = []
    for k in windows:
        weights = similarity * (rank < k)
        results.append((weights * normalised[None, :]).sum(dim=1) / weights.sum(dim=1))
    return torch.stack(results).mean(dim=0)


class MuSc(BackboneModel):
    """MuSc (Li et al., ICLR 2024): zero-shot and transductive. See the module docstring.

    Args:
        backbone: a ViT (default ``dinov2_vits14_imgfocus``); layers: 4 taps (default: the last block of each
            quarter); weights: explicit backbone weights file.
        image_size, crop_size: input resize (default 224) and optional centre crop (paper: 518).
        degrees: LNAMD's neighbourhood sizes (1, 3, 5).
        interval: share of the other images whose nearest patches a patch's score averages (0.3).
        windows: RsCIN's neighbourhood sizes k (1, 2, 3 for MVTec AD; 1, 8, 9 for VisA); empty: no re-scoring.
        subsets: score the images in this many subsets (1: all together).
        sigma: Gaussian smoothing of the map in pixels (0, as the code).
        seed: the draw of the subsets.
    """

    name = "musc"
    requires_fit: ClassVar[bool] = False
    transductive: ClassVar[bool] = True

    def __init__(self, *, backbone: str = "dinov2_vits14_imgfocus", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 224, crop_size: int | None = None, resize: str = "stretch",
                 degrees: Sequence[int] = (1, 3, 5), interval: float = 0.3, windows: Sequence[int] = (1, 2, 3),
                 subsets: int = 1, sigma: float = 0.0, seed: int = 0) -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        from vadkit.backbones import get_spec

        if not get_spec(backbone).vit:
            raise ParameterError(f"{self.name} compares a ViT's tokens and class tokens: {backbone!r} is not a "
                                 "vision transformer (use dinov2_vits14_imgfocus, dinov2_vits14 or a timm ViT)")
        degrees, windows = list(degrees), list(windows)
        if not degrees or not all(isinstance(d, int) and d >= 1 and d % 2 for d in degrees):
            raise ParameterError(f"degrees must be odd integers >= 1 (neighbourhood sides), got {degrees!r}")
        if not all(isinstance(k, int) and k >= 1 for k in windows):
            raise ParameterError(f"windows must be integers >= 1 (image neighbourhood sizes), got {windows!r}")
        if not (isinstance(interval, (int, float)) and 0 < interval <= 1):
            raise ParameterError(f"interval must be in (0, 1], got {interval!r}")
        if not (isinstance(subsets, int) and subsets >= 1):
            raise ParameterError(f"subsets must be an integer >= 1, got {subsets!r}")
        check_sigma(sigma)
        self.degrees, self.interval, self.windows = degrees, interval, windows
        self.subsets, self.sigma, self.seed = subsets, sigma, seed

    def default_layers(self) -> list[str]:
        from vadkit.backbones import get_spec

        return default_layers_of(sum(1 for layer in get_spec(self.backbone).layers if layer.startswith("blocks.")))

    def fit(self, data=None, *, val=None, batch_size=None, progress=None) -> MuSc:
        """Zero-shot: nothing is learned from training images (they are ignored). Records the layers, the
        backbone's weights and the input size, so that a saved model scores with the same features."""
        self._prepare_fit()
        self.input_size_ = list(self.transform.output_size)
        self.fitted = True
        return self

    # -- prediction: every image of a call scores the others ------------------------------------------
    def predict(self, data, *, batch_size: int | None = None, progress: bool | None = None) -> Prediction:
        """Scores and maps of the images given, scored against each other (at least 2 per subset)."""
        from vadkit.progress import track

        if not isinstance(data, torch.Tensor):
            data = self.as_dataset(data)
        graph = self.inference_module()
        layers, class_tokens = [], []
        batches = track(self._batches(data, batch_size), f"{self.name}: features",
                        total=self.n_batches(len(data), batch_size), enabled=progress)
        with torch.inference_mode():
            for images in batches:
                self._check_input_size(images)
                grids, tokens = graph.features(images.to(self.device))
                layers.append(grids)
                class_tokens.append(tokens)
            grids = [torch.cat([part[i] for part in layers]) for i in range(len(layers[0]))]
            class_tokens = torch.cat(class_tokens)
            scores, maps = graph.score(grids, class_tokens, tuple(images.shape[-2:]),
                                       groups=self._groups(len(class_tokens)))
        scores = scores.float().cpu().numpy()
        labels = None if self.threshold is None else (scores >= float(self.threshold)).astype("int64")
        return Prediction(scores, maps.float().cpu().numpy(), labels)

    def predict_batches(self, data, *, batch_size: int | None = None) -> Iterator[Prediction]:
        """One prediction of all the images (they are scored jointly, never batch by batch)."""
        yield self.predict(data, batch_size=batch_size, progress=False)

    def _groups(self, n: int) -> list[torch.Tensor]:
        if self.subsets == 1:
            return [torch.arange(n)]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
        return [order[i::self.subsets].sort().values for i in range(self.subsets)]

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)

    def inference_module(self) -> MuScGraph:
        return MuScGraph(self.extractor, self.degrees, self.interval, self.windows, self.sigma)


class MuScGraph(torch.nn.Module):
    """MuSc over one batch: ``forward(images (N, 3, H, W)) -> (scores (N,), maps (N, H, W))``, the N images
    scoring each other. ``features`` and ``score`` are its two halves (predict runs them over batches)."""

    def __init__(self, extractor: torch.nn.Module, degrees: Sequence[int], interval: float, windows: Sequence[int],
                 sigma: float) -> None:
        super().__init__()
        self.extractor, self.degrees, self.interval = extractor, list(degrees), interval
        self.windows, self.sigma = list(windows), sigma

    def features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Patch grids (N, C, h, w) of each tapped block through the final LayerNorm, and the last tapped block's
        class token (N, C)."""
        tokens = self.extractor.tokens(images, norm=True)
        h, w = (side // self.extractor.patch_size for side in images.shape[-2:])
        prefix = self.extractor.num_prefix_tokens
        grids = [t[:, prefix:].reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2) for t in tokens.values()]
        return grids, list(tokens.values())[-1][:, 0]

    def score(self, grids: list[torch.Tensor], class_tokens: torch.Tensor, size: tuple[int, int],
              groups: Sequence[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = grids[0].shape
        groups = [torch.arange(n, device=class_tokens.device)] if groups is None else groups
        total = torch.zeros(n, h * w, dtype=grids[0].dtype, device=grids[0].device)
        for grid in grids:
            for degree in self.degrees:
                total += mutual_scores(aggregate_neighbourhood(grid, degree), self.interval, groups)
        patch_scores = (total / (len(grids) * len(self.degrees))).view(n, 1, h, w)
        maps = F.interpolate(patch_scores, size=size, mode="bilinear", align_corners=True).squeeze(1)
        maps = gaussian_blur(maps, self.sigma)
        scores = maps.flatten(1).amax(dim=1)
        if self.windows:
            scores = rescore(scores, class_tokens, self.windows)
        return scores, maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grids, class_tokens = self.features(images)
        return self.score(grids, class_tokens, tuple(images.shape[-2:]))
