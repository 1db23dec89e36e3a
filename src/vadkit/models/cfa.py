"""CFA: a trained patch descriptor pulls normal patch features onto a fixed memory of normal centres.

Lee, Lee, Song. "CFA: Coupled-Hypersphere-Based Feature Adaptation for Target-Oriented Anomaly Localization",
IEEE Access 10 (2022). https://arxiv.org/abs/2206.04325
(authors' code: github.com/sungwool/CFA_for_anomaly_localization, ``utils/cfa.py``, ``utils/coordconv.py``,
``trainer_cfa.py``; anomalib: ``models/image/cfa/``)

As the authors' code defines it (their ``DSVDD`` and ``Descriptor`` modules, and their trainer):

* features: a frozen ImageNet CNN (WideResNet-50-2 by default, ResNet-18 too) tapped at ResNet layer1..layer3,
  i.e. the stride-4, -8 and -16 stage ends; here the backbone's equivalents (MobileNetV2 ``features.3 / .6 /
  .13`` by default). Each map is averaged over its 3 x 3 neighbourhood (stride 1, zero padding counted),
  upsampled bilinearly to the stride-4 map and concatenated (:func:`~vadkit.ops.patch_features.pyramid_embedding`,
  PatchCore's locally aware features);
* patch descriptor phi, trained: a CoordConv, i.e. two coordinate channels (the row and the column position,
  each from -1 to 1 across the map) concatenated to the features, then one 1 x 1 convolution with bias from
  D + 2 to D / gamma_d channels (``gamma_d = 1``);
* memory bank C of normal centres, fixed during training (the authors' answer in issue #3 of their repository:
  "it is not learned after initialization"): before the first step, the descriptor as initialised is run over
  every training image and its output is averaged over the images position by position, giving H x W centres
  of dimension D / gamma_d; with ``gamma_c > 1`` they are clustered by k-means into (H * W) / gamma_c centres;
* loss (squared Euclidean distances D to the centres, the K + J nearest of each patch, nearest first):
  attraction ``mean(max(0, D_k - r^2))`` over the K nearest, repulsion ``mean(max(0, r^2 - D_j - alpha))`` over
  the next J (the hard negatives), the means over the batch, the positions and the K (resp. J) neighbours,
  the sum multiplied by 1 / nu = 1000. ``K = 3, J = 3, alpha = 0.1``; the radius r starts at 1e-5 and is a
  learned parameter (``nn.Parameter`` in the authors' ``DSVDD``, optimised with the descriptor): without it
  the repulsion could never act (r^2 - D - alpha < 0 for every D >= 0);
* score of a patch: Euclidean distances d_1 <= ... <= d_K to its K nearest centres, ``softmin(d)_1 * d_1``
  (the softmin over the K distances, temperature 1); the map is upsampled bilinearly to the input size and
  smoothed by a Gaussian of sigma = 4; the image score is the map's maximum;
* training: AdamW, learning rate 1e-3, weight decay 5e-4, amsgrad, batch size 4, 30 epochs; images resized to
  256 and centre-cropped to 224 (their "R+C" setting; ``image_size=256, crop_size=224`` here).

Memory and compute. The bank holds ``(H * W) / gamma_c`` float32 vectors of ``D / gamma_d``: for MobileNetV2 at
256 px (64 x 64 stride-4 grid, D = 24 + 32 + 96 = 152) 4096 x 152 x 4 bytes = 2.5 MB; for the paper's
WideResNet-50-2 at 224 px (56 x 56, D = 1792) 22.5 MB. Its size does not grow with the training set, unlike
PatchCore's. The nearest-centre search costs (H * W) x (H * W) / gamma_c x D / gamma_d multiply-accumulates per
image (2.55 G for MobileNetV2 at 256 px, about 9 times its backbone's 0.27 G): on an edge box,
``gamma_c=4`` (or ``gamma_d=2``) divides it, and the bank, by 4 (by 2). The search runs in torch
(:func:`nearest_centres`, chunked, so memory stays bounded whatever the batch) inside the inference module, so
export, serving and profiling see it.

Deviations, stated:

* the centres are the exact mean over the training images (summed in float64); the authors keep a running
  mean of batch means, which is the same number when every batch is full (their loader drops the last one);
* k-means (``gamma_c > 1``): faiss' k-means seeded by ``seed`` (100 Lloyd iterations from a random init),
  where the authors run scikit-learn's unseeded k-means++ for up to 3000 iterations: the hook that builds
  the bank must give the same bank for the same seed (a resumed training rebuilds it);
* the hard negatives are the J centres nearest after the K attracted ones (ranks K+1..K+J); the authors' code
  takes the K ranks from J+1 to K+J, the same ranks at their K = J = 3;
* the nearest centres are found without gradients and their distances recomputed exactly with gradients: the
  same values and gradients as the authors' top-k over the full distance matrix, without holding that
  (batch x H*W x H*W) matrix; square roots of distances are taken of non-negative numbers (the authors' expanded
  ||a||^2 + ||c||^2 - 2 a.c can round below zero);
* the feature maps are upsampled to the largest map's (height, width): the authors pass only the height, which
  is the same for the square images they use; their ResNet applies a leaky ReLU to the stage outputs, an
  identity on ResNets' non-negative outputs, not applied here (MobileNetV2's stage outputs are linear);
* anomalib keeps the radius fixed (a plain tensor, not optimised), so its repulsion never acts; the authors'
  learned radius is used here;
* the Gaussian pads borders by reflection without repeating the edge pixel (scipy's default, which the
  authors use, repeats it): a difference within the 16-pixel border;
* budget and model selection: the default stops at ``max_steps`` (a fit in minutes on a 2-core CPU; 200 steps
  of 4 images are 30 epochs of a 27-image training set); ``epochs=30, max_steps=None`` is the authors'. The
  authors report the best test metrics over the 30 epochs (selection on the test set); here the last weights
  are kept, or with ``fit(val=...)`` those with the lowest validation loss on held-out normal images;
* the default backbone is MobileNetV2 (the edge setting of this library); ``backbone="wide_resnet50_2",
  crop_size=224`` is the paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError, VadkitError
from vadkit.models.backbone_model import BackboneModel, check_sigma
from vadkit.models.trained import TrainedModel, check_number
from vadkit.ops.knn import query_chunks
from vadkit.ops.patch_features import flatten_patches, pyramid_embedding
from vadkit.ops.smoothing import to_image_maps

#: the authors' scale of the loss (their ``nu``: the loss is multiplied by 1 / nu)
NU = 1e-3
#: Lloyd iterations of the k-means that compresses the memory bank (gamma_c > 1)
KMEANS_ITERATIONS = 100
#: distance-matrix entries a chunk of the nearest-centre search may hold (16 MiB of float32)
SEARCH_BUDGET = 1 << 22


def add_coordinates(x: torch.Tensor) -> torch.Tensor:
    """CoordConv's input (B, C + 2, H, W): ``x`` followed by the row and the column coordinate channels, each
    running from -1 (first row / column) to 1 (last), as in the authors' ``AddCoords``."""
    batch, _, height, width = x.shape
    rows = torch.linspace(-1.0, 1.0, height, device=x.device, dtype=x.dtype).view(1, 1, height, 1)
    columns = torch.linspace(-1.0, 1.0, width, device=x.device, dtype=x.dtype).view(1, 1, 1, width)
    return torch.cat([x, rows.expand(batch, 1, height, width), columns.expand(batch, 1, height, width)], dim=1)


def nearest_centres(queries: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (n, k) of the ``k`` nearest ``centres`` (M, D) of each query (n, D), nearest first: exact search in
    torch, chunked over the queries so that a chunk's distances stay within :data:`SEARCH_BUDGET` entries.

    Ranks by ||c||^2 - 2 q.c (||q||^2 is the same for every centre of a query), one fused BLAS call per chunk
    (``addmm``): 2-3x faster on CPU than :func:`~vadkit.ops.knn.nearest_rows`, whose chunks over the bank add
    ||q||^2 and merge running top-k lists (measured on a 4096 x 152 bank, 16384 queries: 0.26 s vs 0.5-0.75 s),
    and as fast as faiss' flat index. The search is CFA's largest cost (see the module docstring)."""
    centre_norms = centres.pow(2).sum(1)
    rows = max(1, SEARCH_BUDGET // centres.shape[0])
    parts = [torch.addmm(centre_norms, queries[chunk], centres.T, alpha=-2.0).topk(k, dim=1, largest=False).indices
             for chunk in query_chunks(queries.shape[0], rows)]
    return torch.cat(parts)


def nearest_squared_distances(descriptors: torch.Tensor, centres: torch.Tensor, k: int) -> torch.Tensor:
    """(n, k) squared Euclidean distances of each descriptor (n, D) to its ``k`` nearest ``centres`` (M, D),
    ascending. The neighbours are searched without gradients; the distances carry the descriptors' gradient."""
    with torch.no_grad():
        indices = nearest_centres(descriptors.detach(), centres, k)
    squared = (descriptors[:, None, :] - centres[indices]).pow(2).sum(-1)
    return squared.sort(dim=1).values  # the search ranks by an expanded formula; exact order here


def coupled_hypersphere_loss(squared: torch.Tensor, radius: torch.Tensor, num_nearest: int,
                             num_hard_negatives: int, alpha: float) -> torch.Tensor:
    """CFA's loss from the (n, K + J) ascending squared distances of n patches to their nearest centres:
    ``(mean(relu(D[:, :K] - r^2)) + mean(relu(r^2 - D[:, K:K+J] - alpha))) / nu``."""
    r2 = radius.pow(2)
    attraction = F.relu(squared[:, :num_nearest] - r2).mean()
    if num_hard_negatives == 0:
        return attraction / NU
    repulsion = F.relu(r2 - squared[:, num_nearest:num_nearest + num_hard_negatives] - alpha).mean()
    return (attraction + repulsion) / NU


def patch_scores(squared: torch.Tensor) -> torch.Tensor:
    """(n,) CFA patch scores from the (n, K) ascending squared distances to the K nearest centres: the nearest
    Euclidean distance weighted by its softmin over the K distances."""
    distances = squared.clamp_min(0).sqrt()
    return F.softmin(distances, dim=1)[:, 0] * distances[:, 0]


class PatchDescriptor(nn.Module):
    """CFA's trained part: the CoordConv patch descriptor (coordinate channels, then a 1 x 1 convolution with
    bias) applied to the aggregated feature pyramid. ``radius`` is the loss's learned hypersphere radius, kept
    here so that the training loop optimises, checkpoints and restores it with the descriptor's weights; it
    plays no part in inference."""

    def __init__(self, layers: Sequence[str], in_channels: int, out_channels: int, radius: float) -> None:
        super().__init__()
        self.layers = list(layers)
        self.conv = nn.Conv2d(in_channels + 2, out_channels, kernel_size=1)
        self.radius = nn.Parameter(torch.tensor([float(radius)]))

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Backbone features {layer: (B, C_l, h_l, w_l)} -> descriptors (B, D / gamma_d, H, W)."""
        return self.conv(add_coordinates(pyramid_embedding(features, self.layers, patch_size=3)))


class CFA(TrainedModel, BackboneModel):
    """CFA (Lee et al., IEEE Access 2022). See the module docstring for the method and its deviations.

    Args:
        backbone, layers, weights, image_size, crop_size: the frozen feature extractor (layers: default the
            stride-4, -8 and -16 stage ends, the paper's ResNet layer1..layer3). The paper: WideResNet-50-2,
            ``image_size=256, crop_size=224``.
        gamma_c: memory compression: (H * W) / gamma_c centres, by k-means when > 1 (the paper's default 1).
        gamma_d: descriptor compression: D / gamma_d descriptor channels (default 1).
        num_nearest: K, the nearest centres attracted and softmin-weighted in the score (3).
        num_hard_negatives: J, the next nearest centres repelled (3; 0 turns repulsion off).
        radius: initial hypersphere radius r, learned during training (1e-5).
        alpha: repulsion margin (0.1).
        lr, weight_decay: AdamW with amsgrad, the authors' 1e-3 / 5e-4.
        sigma: Gaussian smoothing of the map, in pixels (4).
        epochs, max_steps, max_time: the training budget (the first reached stops training). Default:
            ``max_steps=200`` (minutes on a 2-core CPU); the authors' is ``epochs=30, max_steps=None``. The loss
            is still falling at 200 steps: a larger budget (e.g. ``max_steps=600``) can detect better.
        batch_size: training batch (the authors' 4).
        seed: initial descriptor weights, shuffling and the k-means of the memory bank.
        validate_every, patience, num_workers: see :mod:`vadkit.models.trained`.
    """

    name = "cfa"
    learned: ClassVar[tuple[str, ...]] = ("descriptor_", "centres_")

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 gamma_c: int = 1, gamma_d: int = 1, num_nearest: int = 3, num_hard_negatives: int = 3,
                 radius: float = 1e-5, alpha: float = 0.1, lr: float = 1e-3, weight_decay: float = 5e-4,
                 sigma: float = 4.0, epochs: int | None = None, max_steps: int | None = 200,
                 max_time: float | None = None, batch_size: int = 4, seed: int = 0,
                 validate_every: int | None = None, patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers,
                         backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        for name, value, low in (("gamma_c", gamma_c, 1), ("gamma_d", gamma_d, 1), ("num_nearest", num_nearest, 1),
                                 ("num_hard_negatives", num_hard_negatives, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ParameterError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, value, positive in (("radius", radius, True), ("alpha", alpha, False), ("lr", lr, True),
                                      ("weight_decay", weight_decay, False)):
            check_number(name, value, positive=positive)
        check_sigma(sigma)
        self.gamma_c, self.gamma_d = gamma_c, gamma_d
        self.num_nearest, self.num_hard_negatives = num_nearest, num_hard_negatives
        self.radius, self.alpha, self.lr, self.weight_decay, self.sigma = radius, alpha, lr, weight_decay, sigma
        channels = self.input_channels()
        if channels // gamma_d < 1:
            raise ParameterError(f"gamma_d={gamma_d} leaves no descriptor channel: the tapped layers have "
                                 f"{channels} channels")
        #: the descriptor (and the learned radius)
        self.descriptor_: PatchDescriptor | None = None
        #: (M, D / gamma_d) float32 memory of normal centres, fixed after :meth:`before_training`
        self.centres_: torch.Tensor | None = None

    def default_layers(self) -> list[str]:
        return self.stride_4_8_16_layers()

    def input_channels(self) -> int:
        """D, the channels of the concatenated feature pyramid."""
        from vadkit.backbones import get_spec

        spec = get_spec(self.backbone)
        return sum(spec.channels[layer] for layer in self.chosen_layers())

    # -- training -------------------------------------------------------------------------------------
    def build_networks(self) -> None:
        channels = self.input_channels()
        self.descriptor_ = PatchDescriptor(self.chosen_layers(), channels, channels // self.gamma_d, self.radius)

    def _descriptors(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            features = self.extractor(images)
        return self.descriptor_(features)

    def before_training(self, dataset) -> None:
        """The memory bank: the initial descriptor's output averaged over the training images per position
        (float64 sums), then k-means to (H * W) / gamma_c centres when gamma_c > 1 (seeded by ``seed``)."""
        total, count = None, 0
        for images in self._sized(self._batches(dataset, None)):
            batch_sum = self._descriptors(images).sum(0, dtype=torch.float64)
            total = batch_sum if total is None else total + batch_sum
            count += len(images)
        centres = flatten_patches((total / count)[None]).float()  # (H * W, D), row-major positions
        needed = self.num_nearest + self.num_hard_negatives
        n_centres = centres.shape[0] // self.gamma_c
        if n_centres < needed:
            raise VadkitError(f"cfa: {centres.shape[0]} positions / gamma_c={self.gamma_c} give {n_centres} centres, "
                              f"fewer than num_nearest + num_hard_negatives = {needed}: lower gamma_c, K or J, or use "
                              "larger images")
        if self.gamma_c > 1:
            centres = kmeans(centres, n_centres, self.seed)
        self.centres_ = centres.contiguous()

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        descriptors = flatten_patches(self._descriptors(images))
        squared = nearest_squared_distances(descriptors, self.centres_, self.num_nearest + self.num_hard_negatives)
        return coupled_hypersphere_loss(squared, self.descriptor_.radius, self.num_nearest, self.num_hard_negatives,
                                        self.alpha)

    def configure_optimizer(self, total_steps: int | None):
        optimizer = torch.optim.AdamW(list(self.trainable_parameters()), lr=self.lr, weight_decay=self.weight_decay,
                                      amsgrad=True)
        return optimizer, None

    def _move_to(self, device: torch.device) -> None:
        super()._move_to(device)
        if self.centres_ is not None:
            self.centres_ = self.centres_.to(device)

    def load_state_dict(self, state) -> None:
        super().load_state_dict(state)
        self.centres_ = self.centres_.to(self.device)

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self) -> CFAGraph:
        self._check_fitted("inference_module")
        return CFAGraph(self.extractor, self.descriptor_, self.centres_, self.num_nearest, self.sigma)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)


def kmeans(points: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """(k, D) k-means centres of ``points`` (N, D), seeded (faiss, exact assignments; a function of the points and
    the seed)."""
    import faiss

    data = np.ascontiguousarray(points.detach().cpu().numpy(), dtype=np.float32)
    clustering = faiss.Kmeans(data.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, min_points_per_centroid=1,
                              max_points_per_centroid=max(256, -(-data.shape[0] // k)))
    clustering.train(data)
    return torch.from_numpy(clustering.centroids.copy()).to(points.device)


class CFAGraph(nn.Module):
    """CFA's inference (also what ``CFA.predict`` runs): backbone, descriptor, the K nearest centres of every
    patch, the softmin-weighted distance map upsampled and smoothed, and its maximum.
    ``forward(images) -> (scores (B,), maps (B, H, W))``."""

    def __init__(self, extractor: nn.Module, descriptor: PatchDescriptor, centres: torch.Tensor, num_nearest: int,
                 sigma: float) -> None:
        super().__init__()
        self.extractor, self.descriptor = extractor, descriptor
        self.register_buffer("centres", centres)
        self.num_nearest, self.sigma = num_nearest, sigma

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        descriptors = self.descriptor(self.extractor(images))
        batch, _, height, width = descriptors.shape
        squared = nearest_squared_distances(flatten_patches(descriptors), self.centres, self.num_nearest)
        scores = patch_scores(squared).view(batch, height, width)
        maps = to_image_maps(scores, tuple(images.shape[-2:]), self.sigma)
        return maps.flatten(1).amax(1), maps
