"""What a continual-learning strategy is: how a model learns task t, and how it predicts afterwards.

A strategy owns its model(s) and whatever else it keeps between tasks (a replay memory, per-task banks). It is
built from ``make_model``, a function returning a fresh model of the chosen method with its parameters (the
strategy decides when a fresh one is needed), and its own keyword parameters, which are its whole configuration
(checked by the config reader against the constructor's signature, as model parameters are). The runner
(:func:`vadkit.continual.run_stream`) calls ``learn`` once per task, then ``predict`` on the test images of every
task seen so far, and reads ``memory`` after each task.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

__all__ = ["StepPrediction", "Strategy", "fit_continuing", "state_bytes"]


@dataclass
class StepPrediction:
    """Scores (N,) and maps (N, H, W) of a strategy on N images; ``task_ids``: rule -> (N,) predicted task
    index, for strategies that pick a task per image (empty otherwise)."""

    scores: np.ndarray
    maps: np.ndarray
    task_ids: dict[str, np.ndarray] = field(default_factory=dict)


def state_bytes(model) -> int:
    """Bytes of a fitted model's learned state (networks, memory bank: what its model file stores). The frozen
    pretrained backbone is not counted: every strategy has exactly one, shared, and it is not learned."""
    import torch

    def size(value) -> int:
        if isinstance(value, torch.Tensor):
            return value.numel() * value.element_size()
        if isinstance(value, np.ndarray):
            return int(value.nbytes)
        if isinstance(value, dict):
            return sum(size(item) for item in value.values())
        if isinstance(value, (list, tuple)):
            return sum(size(item) for item in value)
        return 0

    return size(model.state_dict()) if model.fitted else 0


def fit_continuing(model, data, progress: bool | None) -> None:
    """Fit ``model`` on ``data``, continuing from its current weights when it is a trained method that is
    already fitted (``warm_start``); a one-pass method has no weights to continue from and is refitted."""
    from vadkit.models.trained import TrainedModel

    if isinstance(model, TrainedModel):
        model.fit(data, progress=progress, warm_start=True)
    else:
        model.fit(data, progress=progress)


class Strategy(ABC):
    """The base of every strategy (module docstring). Subclasses set ``name`` and write ``learn``."""

    name: ClassVar[str]
    #: True when the strategy picks a task per test image (it reports task-identification accuracy)
    predicts_task: ClassVar[bool] = False
    #: the one method the strategy works with (None: any), and why, for the config's error message
    requires_method: ClassVar[str | None] = None
    requirement: ClassVar[str] = ""

    def __init__(self, make_model: Callable[[], Any]) -> None:
        self.make_model = make_model
        self.model = make_model()

    def check_method(self) -> None:
        """Refuse a model of another method than ``requires_method``."""
        if self.requires_method is not None and self.model.name != self.requires_method:
            from vadkit.errors import ParameterError

            raise ParameterError(f"the {self.name} strategy {self.requirement}: use method {self.requires_method} "
                                 f"(got {self.model.name})")

    @classmethod
    def param_names(cls) -> list[str]:
        """The strategy's own parameters (the config's ``params:``)."""
        return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.param_names()}

    @property
    def transform(self):
        """The transform test images are read with (the model's)."""
        return self.model.transform

    @abstractmethod
    def learn(self, index: int, task, progress: bool | None = None) -> None:
        """Learn task number ``index`` (a :class:`~vadkit.continual.stream.Task`), the tasks before it learned."""

    def image_batches(self, samples, batch_size: int):
        """Normalised image tensors (B, 3, H, W) of ``samples`` on the model's device, input size checked: for
        strategies that run the model's parts themselves (task banks, adapters)."""
        import torch

        loader = torch.utils.data.DataLoader(self.model.as_dataset(samples), batch_size=batch_size)
        for batch in loader:
            images = batch["image"].to(self.model.device)
            self.model._check_input_size(images)
            yield images

    def predict(self, samples, progress: bool | None = None) -> StepPrediction:
        """Scores and maps of ``samples`` (default: the strategy's one model)."""
        prediction = self.model.predict(samples, progress=progress)
        return StepPrediction(prediction.scores, prediction.maps)

    def memory(self) -> dict[str, int]:
        """Bytes held now: ``model`` (learned state) and ``buffer`` (replay memory, banks of other tasks)."""
        return {"model": state_bytes(self.model), "buffer": 0}
