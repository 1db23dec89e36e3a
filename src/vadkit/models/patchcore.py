"""PatchCore: a memory bank of locally aware patch features, subsampled by a greedy coreset.

Roth, Pemula, Zepeda, Schölkopf, Brox, Gehler. "Towards Total Recall in Industrial Anomaly Detection",
CVPR 2022. https://arxiv.org/abs/2106.08265

As the paper defines it:

* features: two mid-level layers of an ImageNet backbone (ResNet ``layer2`` + ``layer3``; the equivalent
  stride-8 / stride-16 stage ends of other backbones, see :mod:`vadkit.backbones.registry`), each averaged
  over a 3x3 neighbourhood (``patch_size``), the deeper map upsampled to the shallower one, concatenated;
* memory bank: the greedy k-center coreset (``coreset_ratio`` of all training patches; 10% and 1% in the
  paper) chosen on a random projection to ``projection_dim`` dimensions (128 in the paper);
* large training sets (not in the paper): the features are extracted batch by batch and never all held.
  Up to ``max_patches_in_memory`` training patches, the coreset is exactly the paper's (one greedy
  selection over all of them). Above it, a bounded-memory streaming selection keeps the bank at the
  requested size: :class:`~vadkit.ops.streaming_coreset.StreamingKCenter` ("filter, then merge and
  reduce": greedy k-center whenever a buffer of ``max_patches_in_memory`` patches fills, patches already
  within the last selection's radius of it dropped on arrival). Its coverage radius is certified per fit
  (:attr:`PatchCore.coreset_info_`) and bounded by 2 OPT per reduce (4 OPT with the usual two reduces);
* patch score: distance to the nearest memory-bank feature (exact search, faiss; the distance itself is
  computed from the two vectors, see ``score_embedding``);
* image score: the largest patch score s*, reweighted by how isolated its nearest bank feature m* is
  (eq. 7): s = (1 - exp(s*) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*, with N_b the ``num_neighbours``
  nearest bank features of m* (m* itself included), computed with a log-sum-exp for numerical safety.
  s* and every distance of eq. 7 are computed exactly from the vectors (float64); the nearest-neighbour
  search only says *which* bank feature is m*. (faiss' distances come from ||a||^2 - 2 a.b + ||b||^2, whose
  rounding is a visible fraction of the small distances of a normal patch; with s* from faiss and the
  denominator exact, the weight of a well-covered patch was skewed.) With b = 1, or a bank of one row,
  N_b(m*) = {m*} and eq. 7 gives a weight of exactly 0 for every image: the formula is degenerate there,
  and s = s* (no reweighting) is returned, as anomalib does;
* map: patch scores upsampled bilinearly to the input size and smoothed by a Gaussian with sigma = 4.

Paper (WideResNet-50, 224 px crop of 256, coreset 10%): MVTec AD image AUROC 99.1%, pixel AUROC 98.1%,
PRO 93.4%; bottle 100% image AUROC. Our measurements are in BENCHMARKS.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from typing import ClassVar

import numpy as np
import torch

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError
from vadkit.models.backbone_model import BackboneModel, check_sigma
from vadkit.ops.coreset import START_RULES, random_projection
from vadkit.ops.knn import NearestNeighbours, nearest_rows
from vadkit.ops.patch_features import flatten_patches, pyramid_embedding
from vadkit.ops.smoothing import to_image_maps
from vadkit.ops.streaming_coreset import StreamingKCenter

#: the bank's storage types (``bank_dtype``); rows are float16 values either way (see ``_fit``)
BANK_DTYPES = {"float32": torch.float32, "float16": torch.float16}


class PatchCore(BackboneModel):
    """PatchCore (Roth et al., CVPR 2022). Parameters are the paper's defaults unless noted.

    Args:
        backbone: feature extractor name (default ``mobilenet_v2``, the edge default; the paper uses
            ``wide_resnet50_2``).
        layers: layers to tap; default: the backbone's stride-8 and stride-16 stage ends.
        weights: explicit backbone weights file (else resolved offline-first).
        image_size, crop_size: input resize and optional centre crop (paper: 256 and 224).
        coreset_ratio: fraction of training patches kept in the memory bank, in (0, 1]. Predict time grows
            with the bank, so large training sets want a smaller ratio (measured on 25k magnetic-tile
            images: 0.2% gave the AUROC of 1% at 78 instead of 352 ms per image; BENCHMARKS.md).
        projection_dim: dimension of the random projection used for coreset selection (no projection
            when the features are not wider than this).
        num_neighbours: b, the neighbourhood of m* used by the image-score reweighting.
        patch_size: neighbourhood of the local average (3 in the paper; 1 disables it).
        sigma: Gaussian smoothing of the map, in pixels.
        coreset_search: ``"exact"`` (lazy but exact greedy k-center), ``"ivf"`` (approximate refreshes,
            much faster on large banks) or ``"auto"`` (IVF above 2e9 point-centre pairs); see
            :mod:`vadkit.ops.coreset`.
        coreset_start: the coreset's first centre: ``"mean"``, the patch nearest the mean of all patches
            (deterministic), or ``"random"``, a seeded draw (anomalib's rule; the paper leaves it open);
            see :func:`vadkit.ops.coreset.start_index`.
        seed: seed of the projection (and of a ``"random"`` start).
        max_patches_in_memory: training patches held at once. Up to this many in total, the coreset is
            the paper's exact selection over all of them (today's behaviour; magnetic_tile's 761 images
            at 256 px are 0.78M patches); above it the selection streams in a buffer of this many patches
            (see the module docstring). A buffered patch costs 2 C + 8 bytes (float16 features, id) plus
            4 x projection_dim bytes when the features are projected (C > projection_dim), and the
            selection works on a float32 copy: ~1.6 GB at the default 2**21 for mobilenet_v2 (C = 128).
            Raised to twice the bank size when the bank is larger than half of it.
        bank_dtype: storage of the memory bank, ``"float32"`` or ``"float16"`` (half the bank's memory and
            file size; the same scores, since the bank rows are float16 values either way).
    """

    name = "patchcore"
    learned: ClassVar[tuple[str, ...]] = ("memory_bank_", "coreset_info_")

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 coreset_ratio: float = 0.1, projection_dim: int = 128, num_neighbours: int = 9,
                 patch_size: int = 3, sigma: float = 4.0, coreset_search: str = "auto", coreset_start: str = "mean",
                 seed: int = 0, max_patches_in_memory: int = 2**21, bank_dtype: str = "float32") -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        if not (isinstance(coreset_ratio, (int, float)) and 0.0 < coreset_ratio <= 1.0):
            raise ParameterError(f"coreset_ratio must be in (0, 1], got {coreset_ratio!r}")
        if coreset_search not in ("auto", "exact", "ivf"):
            raise ParameterError(f"coreset_search must be 'auto', 'exact' or 'ivf', got {coreset_search!r}")
        if coreset_start not in START_RULES:
            raise ParameterError(f"coreset_start must be one of {START_RULES}, got {coreset_start!r}")
        for name, value in (("num_neighbours", num_neighbours), ("patch_size", patch_size),
                            ("projection_dim", projection_dim)):
            if not (isinstance(value, int) and value >= 1):
                raise ParameterError(f"{name} must be an integer >= 1, got {value!r}")
        if not (isinstance(max_patches_in_memory, int) and max_patches_in_memory >= 1):
            raise ParameterError(f"max_patches_in_memory must be an integer >= 1, got {max_patches_in_memory!r}")
        if bank_dtype not in BANK_DTYPES:
            raise ParameterError(f"bank_dtype must be one of {sorted(BANK_DTYPES)}, got {bank_dtype!r}")
        check_sigma(sigma)
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.num_neighbours = num_neighbours
        self.patch_size = patch_size
        self.sigma = sigma
        self.coreset_search = coreset_search
        self.coreset_start = coreset_start
        self.seed = seed
        self.max_patches_in_memory = max_patches_in_memory
        self.bank_dtype = bank_dtype
        #: (n, C) the coreset of training patch features
        self.memory_bank_: torch.Tensor | None = None
        #: how the last fit selected its bank: streamed or not, reduces, radii, certified radius bound
        self.coreset_info_: dict[str, Any] = {}
        self._index: NearestNeighbours | None = None

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Locally aware patch features (B, C, h, w) of a normalised batch."""
        return pyramid_embedding(self.features(images), self.chosen_layers(), self.patch_size)

    def _fit(self, batches: Iterator[torch.Tensor], n_images: int, progress: bool | None) -> None:
        """Stream the training patches into the coreset selector: float16 copies of the full features and,
        when they are wider than ``projection_dim``, the float32 projection the selection works on. The
        patch count is known from the first batch (patches per image x ``n_images``), hence the bank
        size k and whether the selection must stream."""
        selector = projection = None
        for images in batches:
            patches = flatten_patches(self.embed(images)).cpu()  # the coreset is selected on the CPU
            if selector is None:
                total = patches.shape[0] // images.shape[0] * n_images
                k = max(1, int(round(self.coreset_ratio * total)))
                streamed = total > self.max_patches_in_memory
                if streamed and self.max_patches_in_memory < 10 * k:
                    warnings.warn(
                        f"the streaming coreset buffer (max_patches_in_memory={self.max_patches_in_memory}) holds "
                        f"only {self.max_patches_in_memory / k:.1f}x the bank size ({k} rows): coverage degrades "
                        "with many reduces (measured: radius 1.17x exact greedy at 10x, 1.37x at 2x). Raise "
                        "max_patches_in_memory or lower coreset_ratio.", UserWarning, stacklevel=4)
                selector = StreamingKCenter(k, buffer_rows=self.max_patches_in_memory if streamed else total,
                                            expected_rows=total, search=self.coreset_search,
                                            start=self.coreset_start, seed=self.seed,
                                            certify=streamed, progress=progress)
                if patches.shape[1] > self.projection_dim:
                    projection = random_projection(patches.shape[1], self.projection_dim, self.seed)
            selector.add(patches, None if projection is None else patches @ projection)
        result = selector.finish()
        self.memory_bank_ = result.rows.to(BANK_DTYPES[self.bank_dtype]).contiguous()
        self._index = None
        self.coreset_info_ = {
            "streamed": streamed, "bank_rows": len(result.indices), "patches": result.rows_seen,
            "buffered_patches": result.rows_buffered, "max_buffer_rows": result.max_buffer_rows,
            "reduces": result.reduces, "radii": result.radii, "radius_bound": result.radius_bound,
            "guarantee_factor": result.guarantee_factor, "filter_s": result.filter_seconds,
            "reduce_s": result.reduce_seconds,
        }

    def with_memory_bank(self, bank: torch.Tensor) -> PatchCore:
        """A copy of this fitted model that scores against ``bank`` (n, C) instead of its own bank; the backbone
        and parameters are shared, not copied. For methods built on several banks of one backbone (the
        per-task banks of :mod:`vadkit.continual`)."""
        import copy

        self._check_fitted("with_memory_bank")
        if bank.ndim != 2 or bank.shape[1] != self.memory_bank_.shape[1] or bank.shape[0] == 0:
            raise ParameterError(f"a memory bank must be a non-empty (n, {self.memory_bank_.shape[1]}) tensor, "
                                 f"got shape {tuple(bank.shape)}")
        clone = copy.copy(self)
        clone.memory_bank_ = bank.to(BANK_DTYPES[self.bank_dtype]).contiguous()
        clone.coreset_info_ = {**self.coreset_info_, "bank_rows": int(bank.shape[0]), "replaced": True}
        clone._index = None
        return clone

    @property
    def index(self) -> NearestNeighbours:
        if self._index is None:
            self._index = NearestNeighbours(self.memory_bank_.float().numpy())
        return self._index

    # The three accesses to the bank that scoring makes; PatchCore-Lite answers them from its compressed bank.
    def _bank_size(self) -> int:
        return len(self.memory_bank_)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Euclidean distances and ids of the ``k`` nearest bank rows of each query, ``(n, k)`` each."""
        return self.index.search(queries, k=k)

    def _bank_rows(self, ids: np.ndarray) -> np.ndarray:
        """Bank vectors of ``ids`` (any shape), shape ``(*ids.shape, C)``."""
        return self.memory_bank_.numpy()[ids]

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores, maps, _ = self.score_embedding(self.embed(images), tuple(images.shape[-2:]))
        return scores, maps

    def score_embedding(self, embedding: torch.Tensor,
                        size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score locally aware patch features (B, C, h, w) against the bank: image scores (B,) by eq. 7,
        smoothed maps (B, *size) and the raw patch scores (B, h, w) (the scoring stage on its own, for tests
        and for comparing it with other implementations on the same features)."""
        b, _, h, w = embedding.shape
        patches = flatten_patches(embedding).float().cpu().numpy()
        _, nearest = self._search(patches, k=1)
        nearest = nearest[:, 0]
        # The search finds the nearest bank row; its distance is recomputed from the vectors, because faiss'
        # ||a||^2 - 2 a.b + ||b||^2 rounds the small distances of normal patches (measured: up to 6e-4 relative)
        distances = np.linalg.norm(patches - self._bank_rows(nearest), axis=1)
        patch_scores = torch.from_numpy(distances).view(b, h, w)
        maps = to_image_maps(patch_scores, size, self.sigma)
        scores = self._image_scores(patches.reshape(b, h * w, -1), distances.reshape(b, h * w),
                                    nearest.reshape(b, h * w))
        return torch.from_numpy(scores), maps, patch_scores

    def _image_scores(self, patches: np.ndarray, distances: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        """Eq. 7 for every image of the batch at once (see :func:`reweighted_score`).

        ``patches`` (B, P, C) test patch features, ``distances`` / ``nearest`` (B, P) their nearest-bank
        distances and ids; returns (B,) float32 image scores.
        """
        rows = np.arange(len(distances))
        worst = distances.argmax(axis=1)                              # index of m_test,* per image
        m_test = patches[rows, worst]                                 # (B, C)
        m_star = self._bank_rows(nearest[rows, worst])                # (B, C)
        b = min(self.num_neighbours, self._bank_size())
        neighbours = None
        if b > 1:
            _, neighbourhood = self._search(m_star.astype(np.float32), k=b)   # N_b(m*), m* included
            neighbours = torch.from_numpy(self._bank_rows(neighbourhood)).double()   # (B, b, C)
        scores = reweighted_score(torch.from_numpy(m_test).double(), torch.from_numpy(m_star).double(), neighbours)
        return scores.float().numpy()

    def inference_module(self) -> PatchCoreGraph:
        self._check_fitted("inference_module")
        return PatchCoreGraph(self.extractor, self.chosen_layers(), self.patch_size, self.sigma,
                              self.memory_bank_.float().to(self.device), self.num_neighbours)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.memory_bank_ is not None:  # None in PatchCore-Lite, which keeps only the compressed bank
            self.memory_bank_ = self.memory_bank_.to(BANK_DTYPES[self.bank_dtype]).contiguous()
        self._index = None

    def analytic_macs(self, n_images: int = 1) -> dict[str, int]:
        """The exact faiss search, which torch's flop counter cannot see (for ``vadkit profile``): every test
        patch against every bank feature (one distance = C multiply-accumulates), plus eq. 7's search of the
        ``num_neighbours`` nearest bank features of m*, one query per image."""
        self._check_fitted("profile")
        from vadkit.backbones import get_spec

        bank, width = self.memory_bank_.shape
        stride = min(get_spec(self.backbone).layers[name] for name in self.chosen_layers())
        height, wide = self.transform.output_size
        patches = -(-height // stride) * -(-wide // stride)  # the patch grid of the shallowest tapped layer
        return {"knn_search": n_images * patches * bank * width, "reweighting_search": n_images * bank * width}


def reweighted_score(m_test: torch.Tensor, m_star: torch.Tensor, neighbours: torch.Tensor | None) -> torch.Tensor:
    """Eq. 7: s = (1 - exp(s*) / sum_{m in N_b(m*)} exp(||m_test - m||)) * s*, with s* = ||m_test - m*||.

    ``m_test`` and ``m_star`` (B, C): the most anomalous test patch of each image and its nearest bank row;
    ``neighbours`` (B, b, C): the rows of N_b(m*) (m* among them), or None for b = 1, where the formula is
    degenerate (weight 0 for every image) and s* is returned. Computed with a log-sum-exp, in the inputs' dtype.
    """
    s_star = (m_test - m_star).norm(dim=1)
    if neighbours is None:
        return s_star
    to_neighbours = (neighbours - m_test[:, None, :]).norm(dim=2)
    weight = 1.0 - torch.exp(s_star - torch.logsumexp(to_neighbours, dim=1))
    return weight * s_star


class PatchCoreGraph(torch.nn.Module):
    """PatchCore's whole inference in torch: backbone, locally aware embedding, exact nearest-neighbour
    search over the bank (:func:`vadkit.ops.knn.nearest_rows`, in place of faiss), eq. 7 and the smoothed map.
    ``forward(images) -> (scores (B,), maps (B, H, W))``, as ``PatchCore.predict`` gives them."""

    def __init__(self, extractor: torch.nn.Module, layers: Sequence[str], patch_size: int, sigma: float,
                 bank: torch.Tensor, num_neighbours: int) -> None:
        super().__init__()
        self.extractor = extractor
        self.layers, self.patch_size, self.sigma = list(layers), patch_size, sigma
        self.num_neighbours = min(num_neighbours, bank.shape[0])
        self.register_buffer("bank", bank)

    def search(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """Ids (Q, k) of the ``k`` nearest bank rows of each query (exact; PatchCore-Lite: two-stage)."""
        return nearest_rows(queries, self.bank, k=k)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.score(self.embed(images), tuple(images.shape[-2:]))

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """The device half of a split deployment: images -> locally aware patch features (B, C, h, w)."""
        return pyramid_embedding(self.extractor(images), self.layers, self.patch_size)

    def score(self, embedding: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The server half: patch features (B, C, h, w) -> scores (B,) and maps (B, H, W) at ``size`` (the
        features may have crossed a link through a lossy codec, :mod:`vadkit.edge.codecs`)."""
        b, c, h, w = embedding.shape
        patches = embedding.permute(0, 2, 3, 1).reshape(b, h * w, c)
        nearest = self.search(patches.reshape(-1, c), 1)[:, 0].view(b, h * w)
        distances = (patches - self.bank[nearest]).norm(dim=2)                  # (B, P), exact
        maps = to_image_maps(distances.view(b, h, w), size, self.sigma)
        rows = torch.arange(b, device=embedding.device)
        worst = distances.argmax(dim=1)
        m_test, m_star = patches[rows, worst], self.bank[nearest[rows, worst]]
        neighbours = None
        if self.num_neighbours > 1:
            neighbours = self.bank[self.search(m_star, self.num_neighbours)]
        return reweighted_score(m_test, m_star, neighbours), maps
