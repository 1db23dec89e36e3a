"""Task banks: one PatchCore memory bank per task under one total budget of bank rows, a task chosen per image.

A memory-bank method need not forget: each task's bank can be kept apart, as PatchCoreCL does (Barusco,
Borsatti, Beda, Dalle Pezze, Susto, "Towards Continual Visual Anomaly Detection in the Medical Domain", 2025,
arXiv:2508.18013: one coreset bank per task under a fixed memory budget, with less than 1% forgetting on BMAD).
What limits it is memory,
so here all banks share ``budget_patches`` rows: when task t arrives each bank is re-subsampled to
``budget_patches // t`` rows by the same greedy k-center coreset PatchCore uses
(:func:`vadkit.ops.coreset.greedy_kcenter`, a coreset of the coreset), and the total never exceeds the budget.

At inference the task of an image is unknown. Two rules pick it, and both are measured on every prediction
(task-identification accuracy, ``task_id_accuracy`` in the results); ``selection`` says which one gives the
scores and maps:

* ``prototype``: the nearest task prototype, the mean locally aware patch feature of the task's training images
  (pooled over positions and images): cheap, one vector per task;
* ``min_score``: the image is scored against every bank and the task is the one whose PatchCore score is lowest
  (the image looks most normal there); the score is that minimum.

The backbone runs once per image; only the bank search is repeated per task.
"""

from __future__ import annotations

import torch

from vadkit.continual.strategies.base import StepPrediction, Strategy, state_bytes
from vadkit.errors import ParameterError

#: the task-selection rules at inference
SELECTIONS = ("prototype", "min_score")


class TaskBanks(Strategy):
    """Per-task PatchCore banks, ``budget_patches`` rows in all; ``selection`` in :data:`SELECTIONS`."""

    name = "task_banks"
    predicts_task = True
    requires_method = "patchcore"
    requirement = "keeps one PatchCore memory bank per task"

    def __init__(self, make_model, *, budget_patches: int = 20000, selection: str = "prototype",
                 batch_size: int = 8) -> None:
        super().__init__(make_model)
        self.check_method()
        if isinstance(budget_patches, bool) or not isinstance(budget_patches, int) or budget_patches < 1:
            raise ParameterError(f"budget_patches must be an integer >= 1, got {budget_patches!r}")
        if selection not in SELECTIONS:
            raise ParameterError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
        self.budget_patches, self.selection, self.batch_size = budget_patches, selection, batch_size
        self.banks: list[torch.Tensor] = []
        self.prototypes: list[torch.Tensor] = []
        self._scorers: list = []

    def learn(self, index: int, task, progress: bool | None = None) -> None:
        from vadkit.ops.coreset import greedy_kcenter, start_index

        self.model.fit(list(task.train), progress=progress)
        self.banks.append(self.model.memory_bank_.clone())
        self.prototypes.append(self._pooled(list(task.train)).mean(0))
        share = self.budget_patches // len(self.banks)
        if share < 1:
            raise ParameterError(f"budget_patches={self.budget_patches} leaves no row for each of {len(self.banks)} "
                                 "tasks: raise it")
        for i, bank in enumerate(self.banks):
            if len(bank) > share:
                points = bank.float()
                keep = greedy_kcenter(points, share, start=start_index(points), progress=progress)
                self.banks[i] = bank[keep].contiguous()
        self._scorers = [self.model.with_memory_bank(bank) for bank in self.banks]

    @torch.inference_mode()
    def _pooled(self, samples) -> torch.Tensor:
        """(N, C) mean locally aware patch feature of each image."""
        return torch.cat([self.model.embed(images).mean(dim=(2, 3)).float().cpu()
                          for images in self.image_batches(samples, self.batch_size)])

    @torch.inference_mode()
    def predict(self, samples, progress: bool | None = None) -> StepPrediction:
        from vadkit.progress import track

        prototypes = torch.stack(self.prototypes)
        scores, maps, by_prototype, by_score = [], [], [], []
        total = self.model.n_batches(len(samples), self.batch_size)
        batches = self.image_batches(samples, self.batch_size)
        for images in track(batches, "task banks: predicting", total=total, enabled=progress):
            embedding = self.model.embed(images)
            size = tuple(images.shape[-2:])
            per_task = [scorer.score_embedding(embedding, size)[:2] for scorer in self._scorers]
            task_scores = torch.stack([s for s, _ in per_task]).float()           # (T, B)
            task_maps = torch.stack([m for _, m in per_task]).float()             # (T, B, H, W)
            nearest = torch.cdist(embedding.mean(dim=(2, 3)).float().cpu(), prototypes).argmin(dim=1)
            lowest = task_scores.argmin(dim=0)
            chosen = nearest if self.selection == "prototype" else lowest
            rows = torch.arange(len(chosen))
            scores.append(task_scores[chosen, rows])
            maps.append(task_maps[chosen, rows])
            by_prototype.append(nearest)
            by_score.append(lowest)
        return StepPrediction(torch.cat(scores).numpy(), torch.cat(maps).numpy(),
                              {"prototype": torch.cat(by_prototype).numpy(), "min_score": torch.cat(by_score).numpy()})

    def memory(self) -> dict[str, int]:
        banks = sum(bank.numel() * bank.element_size() for bank in self.banks)
        prototypes = sum(p.numel() * p.element_size() for p in self.prototypes)
        # the fitted model's own bank is the last task's before re-subsampling: a working copy, not kept state
        return {"model": state_bytes(self.model) - self.model.memory_bank_.numel() * self.model.memory_bank_.element_size(),
                "buffer": banks + prototypes}
