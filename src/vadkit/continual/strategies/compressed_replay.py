"""Compressed replay: a replay memory of JPEG (or WebP) images under a budget of bytes.

Storing replay images compressed lets the same memory hold many more of them (Dalle Pezze et al., "Continual
Learning Approaches for Anomaly Detection", arXiv:2212.11192, compress with super-resolution, SCALE; Barusco et al.,
"Memory Efficient Continual Learning for Edge-Based Visual Anomaly Detection", arXiv:2503.02691, cut replay memory
by up to 91.5% with compressed replay). This is the plain-codec form of the idea. Here the budget is ``budget_bytes`` of
encoded images, counted in the actual bytes stored, split equally among the tasks; each task's share is the
longest prefix of its reservoir order whose encodings fit (:mod:`vadkit.continual.memory`). Training decodes them.
"""

from __future__ import annotations

from vadkit.continual.images import CODECS, StoredImage, store_image
from vadkit.continual.memory import TaskBalancedMemory
from vadkit.continual.strategies.replay import Replay, _count
from vadkit.continual.strategies.base import Strategy
from vadkit.errors import ParameterError


class CompressedReplay(Replay):
    """Replay whose memory holds images encoded with ``codec`` at ``quality`` (1-100), ``budget_bytes`` in all."""

    name = "compressed_replay"

    def __init__(self, make_model, *, budget_bytes: int = 2_000_000, codec: str = "jpeg", quality: int = 75,
                 seed: int = 0) -> None:
        Strategy.__init__(self, make_model)  # not Replay.__init__: this budget is in bytes, not images
        self.budget_bytes = _count("budget_bytes", budget_bytes)
        if codec not in CODECS:
            raise ParameterError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ParameterError(f"quality must be an integer in 1..100, got {quality!r}")
        self.codec, self.quality, self.seed = codec, quality, seed
        self.buffer: TaskBalancedMemory[StoredImage] = TaskBalancedMemory(self.budget_bytes, cost=lambda item: item.nbytes,
                                                                          seed=seed)

    def _store(self, path) -> StoredImage:
        return store_image(path, self.transform, codec=self.codec, quality=self.quality)
