"""Adapters: one frozen backbone for every task, a set of AdapTS adapters and a prototype per task.

AdapTS (Barusco, Dalle Pezze, Borsatti, Susto, "AdapTS: Lightweight Teacher-Student Approach for Multi-Class and
Continual Visual Anomaly Detection", 2026, arXiv:2603.17530; the method: :mod:`vadkit.models.adapts`) learns a
product as a few small adapters inserted into a frozen pretrained backbone. Continual learning then needs no
replay and forgets nothing: task t trains fresh adapters on task t's images alone and stores them with the task's
prototype (the mean pooled teacher feature of its training images); earlier tasks' adapters are never touched.
At inference the task of an image is unknown: the teacher runs once, the image goes to the task of the nearest
prototype (the paper reports 99% task identification on MVTec AD and VisA), and the student runs with that
task's adapters. The memory is the adapters and prototypes of every task (the frozen backbone, shared, is not
counted, as for every strategy; the segmentation head only trains, and is not kept).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from vadkit.continual.strategies.base import StepPrediction, Strategy
from vadkit.errors import ParameterError


def _bytes(module_or_tensor) -> int:
    tensors = [module_or_tensor] if isinstance(module_or_tensor, torch.Tensor) else module_or_tensor.state_dict().values()
    return sum(t.numel() * t.element_size() for t in tensors)


class Adapters(Strategy):
    """Per-task AdapTS adapters on one frozen backbone, a task picked per image by the nearest prototype."""

    name = "adapters"
    predicts_task = True
    requires_method = "adapts"
    requirement = "trains AdapTS adapters per task on one frozen backbone"

    def __init__(self, make_model, *, batch_size: int = 8) -> None:
        super().__init__(make_model)
        self.check_method()
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ParameterError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.task_adapters: list[torch.nn.ModuleDict] = []
        self.prototypes: list[torch.Tensor] = []
        self._graphs: list = []

    def learn(self, index: int, task, progress: bool | None = None) -> None:
        # a fresh fit: new adapters from the seed, trained on this task alone; the backbone is the same
        self.model.fit(list(task.train), progress=progress)
        adapters = copy.deepcopy(self.model.adapters_).eval()
        self.task_adapters.append(adapters)
        self.prototypes.append(self.model.prototype_.clone())
        self._graphs.append(self.model.inference_module(adapters))

    @torch.inference_mode()
    def predict(self, samples, progress: bool | None = None) -> StepPrediction:
        from vadkit.models.adapts import pooled
        from vadkit.models.stfpm import product_map
        from vadkit.progress import track

        model = self.model
        prototypes = torch.stack(self.prototypes)
        scores, maps, chosen = [], [], []
        batches = self.image_batches(samples, self.batch_size)
        total = model.n_batches(len(samples), self.batch_size)
        for images in track(batches, "adapters: predicting", total=total, enabled=progress):
            teacher = model.extractor(images)
            nearest = torch.cdist(pooled(teacher).cpu(), prototypes).argmin(dim=1)
            batch_maps = torch.empty(len(images), *images.shape[-2:])
            for t in nearest.unique().tolist():
                rows = (nearest == t).nonzero().flatten()
                student = self._graphs[t].student(images[rows])
                subset = {layer: feature[rows] for layer, feature in teacher.items()}
                batch_maps[rows] = product_map(subset, student, tuple(images.shape[-2:])).float().cpu()
            maps.append(batch_maps)
            scores.append(batch_maps.flatten(1).amax(1))
            chosen.append(nearest)
        return StepPrediction(torch.cat(scores).numpy(), torch.cat(maps).numpy(),
                              {"prototype": torch.cat(chosen).numpy().astype(np.int64)})

    def memory(self) -> dict[str, int]:
        return {"model": sum(_bytes(a) for a in self.task_adapters) + sum(_bytes(p) for p in self.prototypes),
                "buffer": 0}
