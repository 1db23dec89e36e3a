"""Replay: train on the new task's images plus a fixed-size memory of earlier tasks' images.

The strategy the continual anomaly-detection studies build on (Dalle Pezze, Anello,
Masiero, Susto, "Continual Learning Approaches for Anomaly Detection", arXiv:2212.11192; on the edge, STFPM with
replay: Barusco et al., "Memory Efficient Continual Learning for Edge-Based Visual Anomaly Detection", 2025,
arXiv:2503.02691). The memory holds at most ``budget_images`` images, shared equally among the tasks seen, each task's
share a reservoir sample of its training images (:mod:`vadkit.continual.memory`), stored as raw pixels at the
model's input size. Learning task t fits on task t's images plus the memory (trained methods continue from their
weights; one-pass methods are refitted on that union), then adds task t's sample to the memory, shrinking the
earlier tasks' shares.
"""

from __future__ import annotations

from vadkit.continual.images import StoredImage, TrainingImages, store_image
from vadkit.continual.memory import TaskBalancedMemory
from vadkit.continual.strategies.base import Strategy, fit_continuing, state_bytes
from vadkit.errors import ParameterError


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{name} must be an integer >= 1, got {value!r}")
    return value


class Replay(Strategy):
    """Fine-tuning with a replay memory of ``budget_images`` raw images (``seed``: the reservoirs' draws)."""

    name = "replay"

    def __init__(self, make_model, *, budget_images: int = 100, seed: int = 0) -> None:
        super().__init__(make_model)
        self.budget_images = _count("budget_images", budget_images)
        self.seed = seed
        self.buffer: TaskBalancedMemory[StoredImage] = TaskBalancedMemory(self.budget_images, seed=seed)

    def _store(self, path) -> StoredImage:
        """How one image is kept (raw pixels here; compressed replay encodes it)."""
        return store_image(path, self.transform)

    def learn(self, index: int, task, progress: bool | None = None) -> None:
        entries = [sample.image_path for sample in task.train] + self.buffer.items()
        fit_continuing(self.model, TrainingImages(entries, self.transform), progress)
        # a thunk per image: only the images the reservoir keeps are read and stored
        self.buffer.add_task(lambda path=sample.image_path: self._store(path) for sample in task.train)

    def memory(self) -> dict[str, int]:
        return {"model": state_bytes(self.model), "buffer": sum(item.nbytes for item in self.buffer.items())}
