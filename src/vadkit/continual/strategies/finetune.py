"""Fine-tuning: keep training one model on each new task only, the naive lower bound of continual learning.

A trained method (STFPM, ...) continues from its current weights (``fit(..., warm_start=True)``) on the new
task's images and nothing else, so whatever the new task pulls the weights towards overwrites the earlier tasks:
the catastrophic forgetting the continual anomaly-detection studies measure as their baseline (Dalle Pezze et al.,
"Continual Learning Approaches for Anomaly Detection", arXiv:2212.11192; Barusco et al., "Memory Efficient
Continual Learning for Edge-Based Visual Anomaly Detection", arXiv:2503.02691, with STFPM). A one-pass method (PatchCore, PaDiM) has no
weights to continue from: each task refits it, which forgets the earlier tasks completely.
"""

from __future__ import annotations

from vadkit.continual.strategies.base import Strategy, fit_continuing


class Finetune(Strategy):
    """Learn each task on its own images, continuing from the previous task's model."""

    name = "finetune"

    def learn(self, index: int, task, progress: bool | None = None) -> None:
        fit_continuing(self.model, list(task.train), progress)
