"""The base of the methods that train networks (STFPM, PaSTe, RD4AD, ...): what a method writes, and no more.

A trained method subclasses :class:`TrainedModel` and writes only what differs between methods, in the spirit
of PyOD's deep-model base and anomalib's split of torch model and orchestration (without Lightning):

* :meth:`TrainedModel.build_networks`: create its networks (seeded, so a seed gives the same initial weights);
  the ones it learns are attributes named in ``learned`` whose values are ``torch.nn.Module``;
* :meth:`TrainedModel.training_step`: the loss of one batch of normalised training images;
* :meth:`TrainedModel.configure_optimizer`: its optimiser (and scheduler) over :meth:`trainable_parameters`;
* optionally :meth:`TrainedModel.before_training` / :meth:`TrainedModel.after_training`: a pass over the images
  before the first step (statistics the loss needs) and after the last (statistics prediction needs);
* optionally ``caches_frozen_features = True`` and :meth:`TrainedModel.frozen_features`: what a step computes
  first from each image with frozen networks and no randomness (a frozen encoder's features), computed once
  per training image by the loop and passed to ``training_step(images, frozen=...)``;
* optionally :meth:`TrainedModel.clip_gradients`, called between the backward pass and the optimiser's step;
* ``_predict_batch`` and ``inference_module``, as every method.

The shared loop (:func:`vadkit.models.training.train`) owns the rest: epochs and steps, seeded shuffling,
the budgets, validation on held-out normal images with early stopping and the best weights kept,
``history_``, progress with the loss, checkpoints and resuming.

Warm start. ``fit(data, warm_start=True)`` continues from the current weights of a fitted model instead of
building fresh networks: the same loop and budgets (a new optimiser, ``before_training`` on the new data),
only the initial weights differ. Continual learning needs it (:mod:`vadkit.continual`: fine-tuning and
replay keep training one model as new products arrive); on a model that is not fitted yet it is a normal fit.

Budgets. Every trained method takes ``epochs``, ``max_steps`` and ``max_time`` (seconds of training), so
a user caps any of them the same way (``--param max_time=300``); training stops at the first one reached.
Defaults are chosen to train in minutes on a 2-core CPU; each method's docstring gives the paper's
settings, one parameter away. Other loop parameters: ``batch_size`` (the training batch), ``seed``,
``validate_every`` (steps between validations; None: at each epoch end), ``patience`` (validations without
improvement before stopping early; None: never) and ``num_workers`` (image-decoding processes).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from vadkit.errors import ParameterError
from vadkit.models.base import AnomalyModel


def check_budgets(epochs, max_steps, max_time) -> None:
    """At least one budget, each a positive number (epochs and steps integers)."""
    for name, value, kinds in (("epochs", epochs, (int,)), ("max_steps", max_steps, (int,)),
                               ("max_time", max_time, (int, float))):
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds) or value <= 0):
            raise ParameterError(f"{name} must be a positive {'integer' if kinds == (int,) else 'number'} or None, "
                                 f"got {value!r}")
    if epochs is None and max_steps is None and max_time is None:
        raise ParameterError("give at least one training budget: epochs, max_steps or max_time (seconds)")


def check_number(name: str, value, *, positive: bool = True) -> None:
    """A real number (not a bool), > 0 (``positive``) or >= 0; NaN is refused either way. The hyperparameter
    check every trained method makes (learning rates, weight decays, margins)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and (value > 0 if positive else value >= 0)
    if not ok:
        raise ParameterError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}")


class TrainedModel(AnomalyModel):
    """An :class:`AnomalyModel` that trains networks in the shared loop (see the module docstring)."""

    #: the training curve: one entry per validation / epoch end (step, epoch, seconds, loss, val_loss)
    learned: ClassVar[tuple[str, ...]] = ("history_",)
    #: True: the loop computes :meth:`frozen_features` once per training image and passes it to training_step
    caches_frozen_features: ClassVar[bool] = False

    def __init__(self, *, epochs: int | None, max_steps: int | None, max_time: float | None, batch_size: int,
                 seed: int, validate_every: int | None, patience: int | None, num_workers: int,
                 **base) -> None:
        super().__init__(**base)
        check_budgets(epochs, max_steps, max_time)
        for name, value, low in (("batch_size", batch_size, 1), ("num_workers", num_workers, 0),
                                 ("validate_every", validate_every, 1), ("patience", patience, 1)):
            optional = name in ("validate_every", "patience")
            is_count = isinstance(value, int) and not isinstance(value, bool) and value >= low
            if is_count or (value is None and optional):
                continue
            raise ParameterError(f"{name} must be an integer >= {low}{' or None' if optional else ''}, got {value!r}")
        self.epochs, self.max_steps, self.max_time = epochs, max_steps, max_time
        self.batch_size, self.seed = batch_size, seed
        self.validate_every, self.patience, self.num_workers = validate_every, patience, num_workers
        self.history_: list[dict[str, Any]] = []

    # -- what a method writes -----------------------------------------------------------------------
    def build_networks(self) -> None:
        """Create the networks (called by the loop under ``torch.manual_seed(seed)``, and before loading)."""
        raise NotImplementedError

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        """The scalar loss of one batch of normalised training images (B, 3, H, W). A method with
        ``caches_frozen_features`` takes ``frozen=None`` too: the batch's :meth:`frozen_features`, computed by
        the loop once per image (None: compute them, as validation does)."""
        raise NotImplementedError

    def frozen_features(self, images: torch.Tensor):
        """What :meth:`training_step` first computes from the images with frozen networks and no randomness (a
        tensor or a tuple of tensors, images along the first dimension), for ``caches_frozen_features``."""
        raise NotImplementedError

    def clip_gradients(self) -> None:
        """Called after the backward pass, before the optimiser's step (gradient clipping; default: nothing)."""

    def configure_optimizer(self, total_steps: int | None):
        """``(optimizer, scheduler or None)`` over :meth:`trainable_parameters`; ``total_steps`` is the step
        count when the budget fixes it (for schedules), else None. The scheduler steps once per step."""
        raise NotImplementedError

    def validation_loss(self, images: torch.Tensor) -> torch.Tensor:
        """The loss on held-out normal images (default: the training loss, networks in eval mode)."""
        return self.training_step(images)

    def before_training(self, dataset) -> None:
        """Called once the networks are built, before the optimiser and the first step: a pass over the
        training images for what the loss needs (CFA's memory of centres, EfficientAD's teacher statistics).
        It must be a function of the data and the seed: a resumed training calls it again (default: nothing)."""

    def after_training(self, dataset, val) -> None:
        """Called once the best weights are restored: what prediction needs from the trained networks
        (EfficientAD's map quantiles on ``val``, or on ``dataset`` without it; default: nothing)."""

    # -- what the loop reads --------------------------------------------------------------------------
    def networks(self) -> dict[str, torch.nn.Module]:
        """The learned networks: the learned attributes that are modules."""
        return {name: value for name in self.learned_attributes()
                if isinstance(value := getattr(self, name, None), torch.nn.Module)}

    def trainable_parameters(self) -> Iterator[torch.nn.Parameter]:
        for network in self.networks().values():
            yield from (parameter for parameter in network.parameters() if parameter.requires_grad)

    def train_mode(self, training: bool) -> None:
        """Switch the learned networks between training and evaluation (frozen parts stay in eval)."""
        for network in self.networks().values():
            network.train(training)

    # -- the contract -------------------------------------------------------------------------------
    def fit(self, data, *, val=None, batch_size: int | None = None, progress: bool | None = None,
            checkpoint: str | Path | None = None, resume: bool = False, warm_start: bool = False) -> TrainedModel:
        """Train on ``data`` (normal images), validating on ``val`` (normal images) when given.

        ``checkpoint``: a file the loop saves its whole state to (every ``validate_every`` steps or epoch,
        and at the end); with ``resume=True`` an existing checkpoint is continued, giving the same weights
        as an uninterrupted run. ``batch_size`` is that of the validation passes (training uses the
        ``batch_size`` parameter). ``warm_start``: continue from the current weights when the model is
        already fitted (module docstring), instead of re-initialising the networks from ``seed``.
        """
        from vadkit.models.training import train

        continuing = bool(warm_start) and self.fitted and bool(self.networks())
        dataset, val = self._begin_fit(data, val)
        train(self, dataset, val, progress=progress, checkpoint=checkpoint, resume=resume, eval_batch_size=batch_size,
              warm_start=continuing)
        self.fitted = True
        return self

    def _move_to(self, device: torch.device) -> None:
        super()._move_to(device)
        for network in self.networks().values():
            network.to(device)

    # -- persistence: networks are stored as their state dicts -----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        for name, network in self.networks().items():
            state[name] = {key: value.cpu() for key, value in network.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # Every learned attribute first, the networks' entries included (replaced by modules right below): the
        # networks' shapes may follow the fitted layers or input size, and the backbone's weights must be
        # checked against the recorded ones however early build_networks touches the extractor.
        for name in self.learned_attributes():
            setattr(self, name, state[name])
        self.build_networks()
        for name, network in self.networks().items():
            network.load_state_dict(state[name])
            network.to(self.device)
        self.train_mode(False)
