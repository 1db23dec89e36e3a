"""Exact nearest-neighbour search over a memory bank: faiss for predict, torch for inference modules.

faiss' flat L2 index computes all distances with BLAS matrix products and keeps the k best with a heap
per query, which is what an exact search over a few hundred thousand vectors needs on a CPU; it is
several times faster than ``torch.cdist`` + ``topk`` and does not materialise the full distance matrix.
:func:`nearest_rows` is the same search in torch (chunked matrix products and a running top-k), so that a
method's whole inference can be one torch module (export, serving).
"""

from __future__ import annotations

import numpy as np
import torch


def query_chunks(n_queries: int, chunk: int) -> list[slice]:
    """Slices that cut ``n_queries`` rows into chunks of ``chunk`` (bounded memory in eager torch), or one
    slice of everything while ``torch.export`` traces the graph: a Python loop over a size that grows with the
    batch would freeze the batch size into an exported model (ONNX Runtime then holds one batch's whole
    distance matrix, which a batch of one image keeps small)."""
    if torch.compiler.is_exporting():
        return [slice(None)]
    return [slice(start, start + chunk) for start in range(0, n_queries, chunk)]


class NearestNeighbours:
    """Exact L2 search: ``search(queries, k)`` returns Euclidean (not squared) distances and indices."""

    def __init__(self, bank: np.ndarray) -> None:
        import faiss

        bank = np.ascontiguousarray(bank, dtype=np.float32)
        if bank.ndim != 2 or bank.shape[0] == 0:
            raise ValueError(f"memory bank must be a non-empty (N, D) array, got shape {bank.shape}")
        self.bank = bank
        self._index = faiss.IndexFlatL2(bank.shape[1])
        self._index.add(bank)

    @property
    def dim(self) -> int:
        return self.bank.shape[1]

    def __len__(self) -> int:
        return self.bank.shape[0]

    def search(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(Q, D) queries -> distances (Q, k) float32 and indices (Q, k) int64, nearest first."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must have shape (Q, {self.dim}), got {queries.shape}")
        k = min(k, len(self))
        squared, indices = self._index.search(queries, k)
        # faiss computes ||q||^2 + ||b||^2 - 2 q.b, which can dip slightly below zero by rounding
        return np.sqrt(np.maximum(squared, 0.0)), indices


def nearest_rows(queries: torch.Tensor, bank: torch.Tensor, k: int = 1, chunk: int = 4096) -> torch.Tensor:
    """Indices (n, k) of the ``k`` nearest ``bank`` rows (m, d) of each query (n, d), nearest first: the same
    exact search as :class:`NearestNeighbours`, in torch, for the inference modules that export and serving
    run (faiss is faster in Python; this is one graph). The bank is scanned in chunks of ``chunk`` rows,
    keeping a running top-k, so memory stays (n, chunk + k) whatever the bank size.
    """
    k = min(k, bank.shape[0])
    best_values = best_indices = None
    query_norms = (queries * queries).sum(1, keepdim=True)
    for start in range(0, bank.shape[0], chunk):
        rows = bank[start:start + chunk]
        # squared distances ||q||^2 - 2 q.b + ||b||^2 (only their order matters here)
        squared = query_norms - 2.0 * queries @ rows.T + (rows * rows).sum(1)[None, :]
        indices = torch.arange(start, start + rows.shape[0], device=bank.device).expand(queries.shape[0], -1)
        if best_values is not None:
            squared = torch.cat([best_values, squared], dim=1)
            indices = torch.cat([best_indices, indices], dim=1)
        best_values, position = torch.topk(squared, min(k, squared.shape[1]), dim=1, largest=False)
        best_indices = torch.gather(indices, 1, position)
    return best_indices
