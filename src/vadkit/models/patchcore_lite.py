"""PatchCore-Lite: PatchCore whose memory bank is stored product-quantised, searched coarse-to-fine.

Stropeni, Genilotti, Borsatti, Barusco, Dalle Pezze, Susto. "Efficient Visual Anomaly Detection at the Edge:
Enabling Real-Time Industrial Inspection on Resource-Constrained Devices", arXiv:2603.20288, 2026.
https://arxiv.org/abs/2603.20288

The method, as the paper describes it: the PatchCore memory bank is product-quantised; inference runs a
coarse search on the PQ codes, keeps the top-k candidates, and runs an exact search on that subset.

Product quantisation (Jégou et al., TPAMI 2011). Each d-dimensional bank vector is cut into M sub-vectors of
d/M dimensions; each sub-vector is replaced by the index of its nearest of 2^nbits centroids, learned by
k-means per sub-space. A vector costs M * nbits / 8 bytes (plus 2^nbits * d floats of codebooks, shared).
Asymmetric distance computation (ADC): for a query, a table of its squared distances to every centroid of
every sub-space is built once (2^nbits * d multiply-adds); the distance to any code is then the sum of M
table look-ups, so a scan over the bank never decodes a vector.

Re-rank modes (``rerank``) and an honest finding. For faiss' ``IndexPQ`` the ADC distance *is* the exact
squared distance to the decoded vector (checked to float precision), so "re-rank the ADC candidates
exactly on their decoded vectors" returns the very ranking and distances ADC already gave:

* ``"decoded"``: the paper's description, implemented literally (decode the candidates, recompute the
  distances). With 8-bit codes (``IndexPQ``) it reproduces plain ADC and exists for fidelity and for
  comparison; with 4-bit FastScan codes it only removes FastScan's 8-bit rounding of the look-up tables.
  Its scores carry the full PQ error: on real features the nearest-neighbour distance (the anomaly
  score) comes out about twice too large (+118% mean relative error, PQ8x8 on MVTec bottle), because
  normal patches sit much closer to the bank than PQ's reconstruction error.
* ``"sq8"`` (default): the candidates are re-ranked on a second, finer code of every bank vector, an 8-bit
  scalar quantiser (per-dimension min/max, 1 byte per value: 4x smaller than float32; faiss
  ``IndexRefine(IndexPQ…, IndexScalarQuantizer(QT_8bit))``). Its distances are within 0.3% of exact.
* ``"fp16"``: the same with a float16 copy (2x smaller than float32, error ~0.05%).

The image score's reweighting (PatchCore eq. 7) needs the bank vectors m* and its neighbourhood N_b(m*):
they are the re-rank level's reconstructions (SQ8 / fp16 vectors, or the PQ-decoded vectors in
``"decoded"`` mode), and N_b(m*) is found with the same two-stage search.

``pq_bits=4`` uses faiss' ``IndexPQFastScan`` (codes packed two per byte, SIMD look-ups on 8-bit-rounded
tables), which scans the bank 5-10x faster than ``IndexPQ``; other widths use ``IndexPQ``.

Defaults, chosen by measurement (``benchmarks/bench_patchcore_lite.py``; the figures are in BENCHMARKS.md,
"PatchCore-Lite"): ``pq_bits=4`` with sub-vectors of 4 dimensions (M = d/4, 32 for mobilenet_v2),
``rerank="sq8"``, ``rerank_k=16``. Of the configurations measured it is the one that keeps PatchCore's
image and pixel AUROC with a 72% smaller bank, and its FastScan scan is faster than both exact search and
the paper's 8-bit ``IndexPQ`` (whose scan is slower than BLAS exact search on a CPU, as the paper's own
130 ms vs 30 ms also shows). ``rerank="decoded"`` with the paper's M=8, nbits=8 reproduces the paper's
accuracy loss and its slower search, for a bank 36-53x smaller than float32.

Paper (second-hand figures, MobileNetV2, Intel i5-9600K): MVTec AD image/pixel AUROC 0.86/0.94 for
PatchCore-Lite vs 0.95/0.96 for PatchCore; total memory 1.49 MB vs 7.05 MB (-79%); latency 130 vs 30 ms.
The number of re-ranked candidates k is not given in the sources we could read.

Tiny banks: k-means needs at least 2^nbits training vectors per sub-space. A bank with fewer vectors is
quantised with the largest width it supports, ``floor(log2(n))`` bits, and a ``UserWarning`` says so and
how to keep the requested width (more training images or a larger ``coreset_ratio``); the width actually
used is :attr:`PatchCoreLite.pq_bits_used` and travels with the model file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError, VadkitError
from vadkit.models.patchcore import PatchCore, PatchCoreGraph
from vadkit.ops.knn import query_chunks

RERANK_MODES = ("sq8", "fp16", "decoded")
#: dimensions per PQ sub-vector when ``pq_subquantizers`` is left to its default (M = d / 4)
DEFAULT_SUBVECTOR_DIMS = 4
MAX_PQ_BITS = 16


def default_subquantizers(dim: int) -> int:
    """M for a d-dimensional bank: d / 4 when 4 divides d, else the largest divisor of d not above d / 4."""
    target = max(1, dim // DEFAULT_SUBVECTOR_DIMS)
    return next(m for m in range(target, 0, -1) if dim % m == 0)


class CompressedBank:
    """A memory bank held only as codes: a PQ index for the coarse scan and an optional finer re-rank code.

    ``search(queries, k, rerank_k)`` returns Euclidean distances and bank indices like
    :class:`vadkit.ops.knn.NearestNeighbours`; ``reconstruct(ids)`` returns the re-rank level's vectors.
    The whole bank round-trips through :meth:`to_bytes` / :meth:`from_bytes` (``faiss.serialize_index``).
    """

    def __init__(self, index) -> None:
        import faiss

        # not downcast: a new proxy would drop the Python references that keep an IndexRefine's parts alive
        self.index = index
        if isinstance(index, faiss.IndexRefine):
            self.coarse = faiss.downcast_index(self.index.base_index)
            self.refine = faiss.downcast_index(self.index.refine_index)
        else:
            self.coarse, self.refine = self.index, None

    @classmethod
    def build(cls, bank: np.ndarray, subquantizers: int, nbits: int, rerank: str, seed: int = 0) -> CompressedBank:
        """Train the codebooks on ``bank`` (n, d) float32 and encode it; the float array is not kept."""
        import faiss

        n, dim = bank.shape
        coarse = faiss.IndexPQFastScan(dim, subquantizers, 4) if nbits == 4 else faiss.IndexPQ(dim, subquantizers, nbits)
        # k-means per sub-space: small banks are the norm here (a coreset), so do not let faiss print a
        # C++ warning per sub-quantiser asking for 39 points per centroid; the minimum (2^nbits) is checked
        # by the caller.
        coarse.pq.cp.min_points_per_centroid = 1
        coarse.pq.cp.seed = seed
        coarse.train(bank)
        coarse.add(bank)
        if rerank == "decoded":
            return cls(coarse)
        kind = faiss.ScalarQuantizer.QT_8bit if rerank == "sq8" else faiss.ScalarQuantizer.QT_fp16
        finer = faiss.IndexScalarQuantizer(dim, kind)
        finer.train(bank)
        finer.add(bank)
        return cls(faiss.IndexRefine(coarse, finer))  # the faiss wrapper keeps coarse and finer alive

    # -- properties ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def subquantizers(self) -> int:
        return self.coarse.pq.M

    @property
    def nbits(self) -> int:
        return self.coarse.pq.nbits

    # -- persistence --------------------------------------------------------------------------------
    def to_bytes(self) -> np.ndarray:
        import faiss

        return faiss.serialize_index(self.index)

    @classmethod
    def from_bytes(cls, buffer: np.ndarray) -> CompressedBank:
        import faiss

        return cls(faiss.deserialize_index(np.ascontiguousarray(buffer, dtype=np.uint8)))

    # -- search -------------------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int = 1, rerank_k: int = 16) -> tuple[np.ndarray, np.ndarray]:
        """(Q, d) queries -> Euclidean distances (Q, k) float32 and indices (Q, k) int64, nearest first.

        Coarse stage: ADC scan of the PQ codes for ``candidates = min(max(k, rerank_k), n)`` candidates.
        Re-rank: their distances recomputed on the finer code (faiss ``IndexRefine``) or, in
        ``"decoded"`` mode, on the PQ-decoded candidates; the k nearest are returned.
        """
        import faiss

        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (Q, {self.dim}), got {queries.shape}")
        k = min(k, len(self))
        candidates = self.candidates(k, rerank_k)
        if self.refine is not None:
            # IndexRefine asks its base for int(k * k_factor) candidates; the 0.5 absorbs float rounding
            params = faiss.IndexRefineSearchParameters(k_factor=(candidates + 0.5) / k)
            squared, indices = self.index.search(queries, k, params=params)
        else:
            squared, indices = self._search_decoded(queries, k, candidates)
        return np.sqrt(np.maximum(squared, 0.0)), indices

    def candidates(self, k: int, rerank_k: int) -> int:
        """How many coarse candidates a k-nearest search re-ranks."""
        return min(max(k, rerank_k), len(self))

    def _search_decoded(self, queries: np.ndarray, k: int, candidates: int,
                        chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        _, found = self.coarse.search(queries, candidates)
        squared = np.empty((len(queries), k), np.float32)
        nearest = np.empty((len(queries), k), np.int64)
        for start in range(0, len(queries), chunk):  # chunks bound the decoded copy to chunk x candidates x d
            ids = found[start:start + chunk]
            vectors = torch.from_numpy(self.reconstruct(ids.ravel())).view(*ids.shape, self.dim)
            query = torch.from_numpy(queries[start:start + chunk])[:, None, :]
            distances, order = (vectors - query).pow_(2).sum(-1).topk(k, dim=1, largest=False)
            squared[start:start + chunk] = distances.numpy()
            nearest[start:start + chunk] = np.take_along_axis(ids, order.numpy(), axis=1)
        return squared, nearest

    def torch_tables(self) -> dict[str, torch.Tensor]:
        """The bank as plain tensors for a torch search: ``codebooks`` (M, 2^nbits, d/M), ``codes`` (n, M)
        int64 (recovered from the PQ-decoded vectors, which are exactly centroids) and ``rerank`` (n, d), the
        re-rank level's vectors (None in ``"decoded"`` mode, where the ADC distance is the re-rank)."""
        import faiss

        m, ksub = self.subquantizers, 2 ** self.nbits
        codebooks = torch.from_numpy(faiss.vector_to_array(self.coarse.pq.centroids).reshape(m, ksub, -1).copy())
        decoded = torch.from_numpy(self.coarse.reconstruct_batch(np.arange(len(self), dtype=np.int64)))
        parts = decoded.view(len(self), m, -1)                                       # (n, M, d/M)
        codes = torch.stack([torch.cdist(parts[:, j], codebooks[j]).argmin(1) for j in range(m)], dim=1)
        rerank = None if self.refine is None else torch.from_numpy(self.reconstruct(np.arange(len(self))))
        return {"codebooks": codebooks, "codes": codes, "rerank": rerank}

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """Bank vectors (len(ids), d) as the re-rank stage sees them (SQ/fp16-decoded, or PQ-decoded)."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
        source = self.refine if self.refine is not None else self.coarse
        return source.reconstruct_batch(ids)


class PatchCoreLite(PatchCore):
    """PatchCore with a product-quantised memory bank and a coarse-to-fine search (Stropeni et al., 2026).

    Takes every :class:`~vadkit.models.patchcore.PatchCore` parameter (``bank_dtype`` then only sets how the
    float bank is held between the coreset selection and its compression), plus:

    Args:
        pq_subquantizers: M, the number of sub-vectors each bank vector is cut into; must divide the
            feature dimension d. Default ``None``: d / 4 (32 for mobilenet_v2's d = 128).
        pq_bits: bits per sub-vector code (2^bits centroids per sub-space), 1..16. Default 4: faiss'
            SIMD FastScan kernel (the paper uses 8).
        rerank: how the coarse candidates are re-ranked: ``"sq8"`` (default, 8-bit scalar-quantised copy),
            ``"fp16"`` (float16 copy) or ``"decoded"`` (PQ-decoded candidates: the paper's wording; equal
            to ADC for 8-bit codes, see the module docstring).
        rerank_k: coarse candidates per query patch that the re-rank stage sees (default 16).
    """

    name = "patchcore_lite"
    #: the compressed bank; PatchCore's float ``memory_bank_`` is dropped once it is compressed (saved as None)
    learned: ClassVar[tuple[str, ...]] = ("bank_",)

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 coreset_ratio: float = 0.1, projection_dim: int = 128, num_neighbours: int = 9,
                 patch_size: int = 3, sigma: float = 4.0, coreset_search: str = "auto", coreset_start: str = "mean",
                 seed: int = 0, max_patches_in_memory: int = 2**21, bank_dtype: str = "float32",
                 pq_subquantizers: int | None = None, pq_bits: int = 4, rerank: str = "sq8",
                 rerank_k: int = 16) -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize, coreset_ratio=coreset_ratio, projection_dim=projection_dim,
                         num_neighbours=num_neighbours, patch_size=patch_size, sigma=sigma,
                         coreset_search=coreset_search, coreset_start=coreset_start, seed=seed,
                         max_patches_in_memory=max_patches_in_memory,
                         bank_dtype=bank_dtype)
        if pq_subquantizers is not None and not (isinstance(pq_subquantizers, int) and pq_subquantizers >= 1):
            raise ParameterError(f"pq_subquantizers must be an integer >= 1 or None (d / 4), got {pq_subquantizers!r}")
        if not (isinstance(pq_bits, int) and 1 <= pq_bits <= MAX_PQ_BITS):
            raise ParameterError(f"pq_bits must be an integer in 1..{MAX_PQ_BITS} (bits per PQ code; 8 in the "
                                 f"paper, 4 uses the FastScan kernel), got {pq_bits!r}")
        if rerank not in RERANK_MODES:
            raise ParameterError(f"rerank must be one of {', '.join(map(repr, RERANK_MODES))}, got {rerank!r}")
        if not (isinstance(rerank_k, int) and rerank_k >= 1):
            raise ParameterError(f"rerank_k must be an integer >= 1 (coarse candidates per patch), got {rerank_k!r}")
        self.pq_subquantizers = pq_subquantizers
        self.pq_bits = pq_bits
        self.rerank = rerank
        self.rerank_k = rerank_k
        self.bank_: CompressedBank | None = None
        dim = self._feature_dim()
        if dim is not None:
            self._subquantizers_for(dim)  # fail now, not after feature extraction, when M does not divide d

    # -- dimensions -----------------------------------------------------------------------------------
    def _feature_dim(self) -> int | None:
        """d of the concatenated features, from the backbone spec (None if the spec does not say)."""
        from vadkit.backbones import get_spec

        channels = getattr(get_spec(self.backbone), "channels", None) or {}
        layers = self.chosen_layers()
        if not all(layer in channels for layer in layers):
            return None
        return sum(channels[layer] for layer in layers)

    def _subquantizers_for(self, dim: int) -> int:
        if self.pq_subquantizers is None:
            return default_subquantizers(dim)
        if dim % self.pq_subquantizers:
            divisors = [m for m in range(1, dim + 1) if dim % m == 0]
            raise ParameterError(f"pq_subquantizers={self.pq_subquantizers} does not divide the feature dimension "
                                 f"d={dim} of {self.backbone} {self.chosen_layers()}: pick one of {divisors} "
                                 f"(or leave it unset for d/4)")
        return self.pq_subquantizers

    @property
    def pq_bits_used(self) -> int:
        """Code width actually used (below ``pq_bits`` only when the bank was too small; see the docs)."""
        self._check_fitted("pq_bits_used")
        return self.bank_.nbits

    @property
    def bank_bytes(self) -> int:
        """Bytes of the stored bank: codes, codebooks and re-rank codes (what ``state_dict`` holds)."""
        self._check_fitted("bank_bytes")
        return int(self.bank_.to_bytes().nbytes)

    # -- fit ------------------------------------------------------------------------------------------
    def _fit(self, batches: Iterator[torch.Tensor], n_images: int, progress: bool | None) -> None:
        self.bank_ = None
        super()._fit(batches, n_images, progress)
        self._compress(self.memory_bank_)

    @classmethod
    def from_patchcore(cls, model: PatchCore, **params) -> PatchCoreLite:
        """Compress a fitted PatchCore's memory bank (same backbone, coreset and image score).

        ``params`` are the PatchCore-Lite parameters (``pq_bits=8``...). Equivalent to fitting a
        PatchCoreLite with the same parameters and seed on the same images, without extracting features
        again (the benchmark compares configurations on one coreset this way).
        """
        model._check_fitted("PatchCoreLite.from_patchcore")
        shared = {key: value for key, value in model.get_params().items() if key in cls.param_names()}
        lite = cls(**{**shared, **params})
        lite._extractor = model._extractor  # same backbone and layers: reuse the loaded one
        for name in model.learned_attributes():  # fitted on the same images: the same layers, weights, size...
            setattr(lite, name, getattr(model, name))
        lite._compress(model.memory_bank_)
        lite.fitted = True
        return lite

    def _compress(self, memory_bank: torch.Tensor) -> None:
        """Quantise the float bank (PatchCore's, possibly float16) and drop it: only codes are kept."""
        bank = np.ascontiguousarray(memory_bank.float().numpy(), dtype=np.float32)
        self.memory_bank_, self._index = None, None  # the point of the method: no float bank is kept
        n, dim = bank.shape
        subquantizers = self._subquantizers_for(dim)
        nbits = self.pq_bits
        if n < 2:
            raise VadkitError(f"patchcore_lite needs at least 2 memory-bank vectors to train its quantiser, got {n}: "
                              "use more training images or a larger coreset_ratio")
        if n < 2 ** nbits:
            nbits = int(math.floor(math.log2(n)))
            warnings.warn(f"the memory bank has {n} vectors, fewer than the {2 ** self.pq_bits} centroids "
                          f"pq_bits={self.pq_bits} needs per sub-space: quantising with pq_bits={nbits} instead. "
                          "Use more training images or a larger coreset_ratio to keep the requested width.",
                          UserWarning, stacklevel=3)
        self.bank_ = CompressedBank.build(bank, subquantizers, nbits, self.rerank, seed=self.seed)

    # -- predict --------------------------------------------------------------------------------------
    @property
    def index(self) -> CompressedBank:
        """The compressed bank (replaces PatchCore's exact index; ``search(queries, k)`` works alike)."""
        return self.bank_

    # PatchCore scores through these three (eq. 7 included): here they answer from the compressed bank, so
    # m* and N_b(m*) are taken at the re-rank level (see the module docstring).
    def _bank_size(self) -> int:
        return len(self.bank_)

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.bank_.search(queries, k=k, rerank_k=self.rerank_k)

    def _bank_rows(self, ids: np.ndarray) -> np.ndarray:
        return self.bank_.reconstruct(ids).reshape(*np.shape(ids), -1)

    def inference_module(self) -> PatchCoreLiteGraph:
        self._check_fitted("inference_module")
        tables = {key: None if value is None else value.to(self.device)
                  for key, value in self.bank_.torch_tables().items()}
        return PatchCoreLiteGraph(self.extractor, self.chosen_layers(), self.patch_size, self.sigma,
                                  min(self.num_neighbours, len(self.bank_)), self.rerank_k, **tables)

    # -- cost -----------------------------------------------------------------------------------------
    def feature_grid(self) -> tuple[int, int]:
        """(h, w) patches per image: the input size divided by the shallowest tapped layer's stride."""
        from vadkit.backbones import get_spec

        stride = min(get_spec(self.backbone).layers[layer] for layer in self.chosen_layers())
        height, width = self.transform.output_size
        return -(-height // stride), -(-width // stride)

    def analytic_macs(self, n_images: int = 1) -> dict[str, int]:
        """Multiply-accumulates of the search stages, which torch's flop counter cannot see (faiss).

        Keys: ``adc_tables`` (patches x M x 2^nbits x d/M: each query's distance tables),
        ``code_scan`` (patches x n_bank x M table look-up-and-adds, counted as one MAC each; FastScan
        does them 32 at a time in SIMD registers, but the count is the same), ``rerank`` (patches x
        candidates x d on the re-rank vectors), ``image_score`` (eq. 7: the same three stages for one
        query m* per image with k = num_neighbours, plus b x d for the distances to N_b(m*)) and ``total``.
        """
        self._check_fitted("analytic_macs")
        h, w = self.feature_grid()
        patches = n_images * h * w
        n_bank, dim = len(self.bank_), self.bank_.dim
        m, centroids = self.bank_.subquantizers, 2 ** self.bank_.nbits
        tables = centroids * dim                       # M x 2^nbits x d/M
        scan = n_bank * m
        b = min(self.num_neighbours, n_bank)
        result = {
            "adc_tables": patches * tables,
            "code_scan": patches * scan,
            "rerank": patches * self.bank_.candidates(1, self.rerank_k) * dim,
            "image_score": n_images * (tables + scan + self.bank_.candidates(b, self.rerank_k) * dim + b * dim),
        }
        result["total"] = sum(result.values())
        return result

    # -- persistence ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The bank as its serialised faiss index (uint8: PQ codebooks + codes and the re-rank codes)."""
        return {**super().state_dict(), "bank_": torch.from_numpy(self.bank_.to_bytes())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict({**state, "bank_": CompressedBank.from_bytes(state["bank_"].numpy())})
        self._index = None


class PatchCoreLiteGraph(PatchCoreGraph):
    """PatchCore-Lite's inference in torch: PatchCore's graph whose search is the coarse-to-fine search of
    :class:`CompressedBank` (asymmetric distances to the PQ codes, the ``rerank_k`` best re-ranked on the
    re-rank vectors, which are also the rows m* and N_b(m*) are read from). faiss' FastScan rounds its look-up
    tables to 8 bits where this computes them in float, so a near tie among the coarse candidates can be
    ordered differently: the two agree but for such patches (tested)."""

    def __init__(self, extractor: torch.nn.Module, layers: Sequence[str], patch_size: int, sigma: float,
                 num_neighbours: int, rerank_k: int, codebooks: torch.Tensor, codes: torch.Tensor,
                 rerank: torch.Tensor | None, query_chunk: int = 1024) -> None:
        decoded = torch.stack([codebooks[j][codes[:, j]] for j in range(codes.shape[1])], dim=1).flatten(1)
        super().__init__(extractor, layers, patch_size, sigma, decoded if rerank is None else rerank,
                         num_neighbours)
        self.rerank_k, self.query_chunk = rerank_k, query_chunk
        self.register_buffer("codebooks", codebooks)          # (M, K, d/M)
        self.register_buffer("codes", codes)                  # (n, M)

    def search(self, queries: torch.Tensor, k: int) -> torch.Tensor:
        """Ids (Q, k) of the k nearest bank rows of each query: ADC candidates, re-ranked on ``bank``."""
        m, n = self.codes.shape[1], self.codes.shape[0]
        candidates = min(max(k, self.rerank_k), n)
        found = []
        for chunk in query_chunks(queries.shape[0], self.query_chunk):
            query = queries[chunk]
            parts = query.view(query.shape[0], m, -1)                                      # (Q, M, d/M)
            tables = ((parts[:, :, None, :] - self.codebooks[None]) ** 2).sum(-1)         # (Q, M, K)
            adc = sum(tables[:, j, self.codes[:, j]] for j in range(m))                    # (Q, n)
            coarse = torch.topk(adc, candidates, dim=1, largest=False).indices
            exact = ((self.bank[coarse] - query[:, None, :]) ** 2).sum(-1)                # (Q, candidates)
            order = torch.topk(exact, min(k, candidates), dim=1, largest=False).indices
            found.append(torch.gather(coarse, 1, order))
        return torch.cat(found)
