"""The one training loop every trained method runs (:class:`~vadkit.models.trained.TrainedModel`).

What it owns, so that no method writes it again:

* seeding: ``torch.manual_seed(seed)`` before the networks are built (the same seed, the same initial
  weights) and one shuffling generator per epoch, seeded by ``(seed, epoch)``: the order of any epoch is
  known without replaying the ones before it, which is what lets a resumed run see the very batches the
  uninterrupted one would;
* epochs and steps: an epoch is one pass over *every* training image, in batches of ``batch_size`` shuffled
  images; the last batch of an epoch holds what is left (43 images at batch 32: a batch of 32, then one of
  11), except that a lone last image joins the batch before it (a batch of one gives BatchNorm no batch
  statistics). Small normal sets are the common case in this field: dropping the partial batch would leave a
  quarter of 43 images unseen in every epoch and make ``epochs=20`` mean 20 steps;
* budgets: ``epochs``, ``max_steps``, ``max_time`` (seconds of training, validation included, summed over
  resumed runs); the first reached ends training;
* validation: every ``validate_every`` steps (default: at each epoch end) the mean validation loss over the
  held-out normal images, networks in eval mode; the best weights are kept and restored at the end, and with
  ``patience`` training stops after that many validations without improvement;
* ``history_``: one entry per validation (or per epoch end without validation images): step, epoch, seconds,
  the mean training loss since the previous entry and the validation loss;
* checkpoints: the whole state (networks, optimiser, scheduler, position, best weights, history, RNG) saved
  atomically after each validation / epoch end and at the end, and resumed from (with the same parameters;
  the budgets may be raised, to train longer);
* frozen features (``caches_frozen_features``): a method whose step starts with a frozen, deterministic function
  of each image (a frozen encoder's features, with no augmentation before it: Dinomaly) has it computed once
  per training image before the first step, kept on the CPU, and handed to ``training_step(images, frozen=...)``
  for the images of each batch: the same loss, without the encoder's forward pass at every step;
* gradients: ``clip_gradients()`` between the backward pass and the optimiser's step (a no-op by default);
* the method's hooks: ``before_training(dataset)`` once the networks are built (again on resume, so it must
  depend on the data and seed alone) and ``after_training(dataset, val)`` once the best weights are restored,
  both without gradients and with the networks in eval mode;
* progress: a bar over the steps (when the budget fixes their number) showing the loss;
* device: batches go to ``model.device``;
* warm start (``warm_start=True``): the networks already built and fitted are kept (no re-seeding, no
  ``build_networks``), everything else is as above: what continual fine-tuning needs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vadkit.errors import ModelFileError, VadkitError

CHECKPOINT_FORMAT = "vadkit-checkpoint"


@dataclass
class LoopState:
    """Where training is: everything a checkpoint holds besides the networks, optimiser and scheduler."""

    step: int = 0
    epoch: int = 0
    position: int = 0            # batches of the current epoch already done
    seconds: float = 0.0         # training time so far (all runs of a resumed training)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_loss: float = math.inf
    best_networks: dict[str, dict[str, torch.Tensor]] | None = None
    bad_validations: int = 0
    loss_sum: float = 0.0        # training loss since the last history entry
    loss_count: int = 0
    stop_reason: str | None = None


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) alone."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def epoch_batches(n: int, batch_size: int) -> list[range]:
    """The positions (in the epoch's shuffled order) of each batch of an epoch over ``n`` images: every image
    once, batches of ``batch_size`` and a last one with the rest; a lone last image joins the batch before it."""
    batch_size = min(batch_size, n)
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [range(start, end) for start, end in zip(starts, starts[1:] + [n])]


def _loader(dataset, order: torch.Tensor, batches: list[range], num_workers: int, seed: int):
    subset = torch.utils.data.Subset(dataset, order.tolist())
    # A generator of its own: a DataLoader iterator otherwise draws its base seed from the global torch RNG,
    # which the methods' random anomalies and augmentations also draw from, so a run resumed mid-epoch (a new
    # iterator after the RNG state is restored) would draw different anomalies than the uninterrupted run.
    return torch.utils.data.DataLoader(subset, batch_sampler=[list(batch) for batch in batches],
                                       num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def _images(batch) -> torch.Tensor:
    return batch["image"] if isinstance(batch, dict) else batch


def _copy_state(networks: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    return {name: {key: value.detach().clone() for key, value in network.state_dict().items()}
            for name, network in networks.items()}


def total_steps(model, n_images: int) -> int | None:
    """The number of steps the budget allows, when the step or epoch budget fixes it (None: time only)."""
    limits = []
    if model.epochs is not None:
        limits.append(model.epochs * len(epoch_batches(n_images, model.batch_size)))
    if model.max_steps is not None:
        limits.append(model.max_steps)
    return min(limits) if limits else None


def validation_loss(model, val, batch_size: int | None) -> float:
    """Mean validation loss over the held-out images, networks in eval mode, no gradients."""
    model.train_mode(False)
    total, count = 0.0, 0
    with torch.no_grad():
        for images in model._batches(val, batch_size):
            images = images.to(model.device)
            total += float(model.validation_loss(images)) * len(images)
            count += len(images)
    return total / count


def train(model, dataset, val, *, progress: bool | None = None, checkpoint: str | Path | None = None,
          resume: bool = False, eval_batch_size: int | None = None, warm_start: bool = False) -> None:
    """Train ``model`` on ``dataset`` (validating on ``val``, may be None); see the module docstring.
    ``warm_start``: keep the model's current networks (already built) instead of building fresh ones."""
    from vadkit.progress import task

    n = len(dataset)
    if not warm_start:
        torch.manual_seed(model.seed)
        model.build_networks()
    model._move_to(model.device)
    model.train_mode(False)
    with torch.no_grad():
        model.before_training(dataset)
    frozen = _frozen_features(model, dataset, eval_batch_size, progress) if model.caches_frozen_features else None
    steps_total = total_steps(model, n)
    optimizer, scheduler = model.configure_optimizer(steps_total)
    state = LoopState()
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    if resume and checkpoint is not None and checkpoint.is_file():
        state = _load_checkpoint(checkpoint, model, optimizer, scheduler)
    batches_of_epoch = epoch_batches(n, model.batch_size)
    per_epoch = len(batches_of_epoch)
    validate_every = model.validate_every or per_epoch
    started = time.perf_counter() - state.seconds

    def elapsed() -> float:
        return time.perf_counter() - started

    with task(f"{model.name}: training", total=steps_total, enabled=progress) as bar:
        bar.advance(state.step)
        while state.stop_reason is None:
            if model.epochs is not None and state.epoch >= model.epochs:
                state.stop_reason = f"epochs={model.epochs}"
                break
            order = _epoch_order(n, model.seed, state.epoch)
            loader = _loader(dataset, order, batches_of_epoch[state.position:], model.num_workers,
                             seed=model.seed * 1_000_003 + state.epoch)
            # _sized: the input size recorded from the first batch and held, each batch on the model's device
            batches = model._sized(_images(batch) for batch in loader)
            for positions, images in zip(batches_of_epoch[state.position:], batches):
                model.train_mode(True)
                if frozen is None:
                    loss = model.training_step(images)
                else:
                    indices = order[list(positions)]
                    loss = model.training_step(images, frozen=_select(frozen, indices, model.device))
                if not torch.isfinite(loss):
                    raise VadkitError(f"{model.name}: the training loss became {float(loss)} at step {state.step}: "
                                      "lower the learning rate, or check the images")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                model.clip_gradients()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                state.step += 1
                state.position += 1
                state.loss_sum += float(loss.detach())
                state.loss_count += 1
                bar.advance()
                bar.describe(f"{model.name}: training, loss {state.loss_sum / state.loss_count:.4g}")
                end_of_epoch = state.position == per_epoch
                if end_of_epoch:
                    state.epoch, state.position = state.epoch + 1, 0
                if state.step % validate_every == 0 or (end_of_epoch and model.validate_every is None):
                    _record(model, state, val, eval_batch_size, elapsed())
                    if checkpoint is not None:
                        _save_checkpoint(checkpoint, model, optimizer, scheduler, state, elapsed())
                if model.max_steps is not None and state.step >= model.max_steps:
                    state.stop_reason = f"max_steps={model.max_steps}"
                elif model.max_time is not None and elapsed() >= model.max_time:
                    state.stop_reason = f"max_time={model.max_time} s"
                elif state.stop_reason is None and model.patience is not None \
                        and state.bad_validations >= model.patience:
                    state.stop_reason = f"early stop: {state.bad_validations} validations without improvement"
                if state.stop_reason is not None:
                    break
    if checkpoint is not None:  # the loop's state as it is: a resumed training continues exactly from here
        _save_checkpoint(checkpoint, model, optimizer, scheduler, state, elapsed())
    if state.loss_count:  # a last validation of the steps since the previous one (not in the checkpoint)
        _record(model, state, val, eval_batch_size, elapsed())
    if state.best_networks is not None:
        for name, network in model.networks().items():
            network.load_state_dict(state.best_networks[name])
    model.train_mode(False)
    with torch.no_grad():
        model.after_training(dataset, val)
    model.history_ = state.history + [{"stop": state.stop_reason, "step": state.step, "epoch": state.epoch}]


def _frozen_features(model, dataset, batch_size: int | None, progress: bool | None):
    """``model.frozen_features`` of every training image, in dataset order, on the CPU: a tensor or a tuple of
    tensors with the images along their first dimension."""
    from vadkit.progress import track

    model.train_mode(False)
    parts = []
    batches = model._sized(model._batches(dataset, batch_size))
    with torch.no_grad():
        for images in track(batches, f"{model.name}: frozen features", total=model.n_batches(len(dataset), batch_size),
                            enabled=progress):
            out = model.frozen_features(images)
            parts.append(tuple(t.cpu() for t in out) if isinstance(out, tuple) else out.cpu())
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(group) for group in zip(*parts))
    return torch.cat(parts)


def _select(frozen, indices: torch.Tensor, device):
    if isinstance(frozen, tuple):
        return tuple(t[indices].to(device) for t in frozen)
    return frozen[indices].to(device)


def _record(model, state: LoopState, val, eval_batch_size: int | None, seconds: float) -> None:
    """A history entry; with validation images, the validation loss and the best weights."""
    entry = {"step": state.step, "epoch": state.epoch, "seconds": round(seconds, 3),
             "loss": state.loss_sum / max(state.loss_count, 1), "val_loss": None}
    state.loss_sum, state.loss_count = 0.0, 0
    if val is not None:
        loss = validation_loss(model, val, eval_batch_size)
        entry["val_loss"] = loss
        if loss < state.best_loss:
            state.best_loss, state.bad_validations = loss, 0
            state.best_networks = _copy_state(model.networks())
            entry["best"] = True
        else:
            state.bad_validations += 1
    state.history.append(entry)


def _save_checkpoint(path: Path, model, optimizer, scheduler, state: LoopState, seconds: float) -> None:
    payload = {
        "format": CHECKPOINT_FORMAT, "model": model.name, "params": model.get_params(),
        "networks": _copy_state(model.networks()), "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "loop": {"step": state.step, "epoch": state.epoch, "position": state.position, "seconds": seconds,
                 "history": state.history, "best_loss": state.best_loss, "bad_validations": state.bad_validations,
                 "loss_sum": state.loss_sum, "loss_count": state.loss_count, "input_size": model.input_size_},
        "best_networks": state.best_networks, "torch_rng": torch.get_rng_state(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)  # atomic: a crash while saving leaves the previous checkpoint


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> LoopState:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # damaged file
        raise ModelFileError(f"checkpoint {path} cannot be read ({type(error).__name__}); "
                             "delete it to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not a vadkit training checkpoint")
    budgets = ("epochs", "max_steps", "max_time")  # a resumed training may be given more of them
    params = {key: value for key, value in model.get_params().items() if key not in budgets}
    saved = {key: value for key, value in payload["params"].items() if key not in budgets}
    if payload["model"] != model.name or saved != params:
        raise ModelFileError(f"checkpoint {path} is of another training ({payload['model']} with other parameters); "
                             "resume with the same parameters, or give another checkpoint path")
    for name, network in model.networks().items():
        network.load_state_dict(payload["networks"][name])
    optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["torch_rng"])
    loop = payload["loop"]
    model.input_size_ = loop["input_size"]
    return LoopState(step=loop["step"], epoch=loop["epoch"], position=loop["position"], seconds=loop["seconds"],
                     history=loop["history"], best_loss=loop["best_loss"], best_networks=payload["best_networks"],
                     bad_validations=loop["bad_validations"], loss_sum=loop["loss_sum"], loss_count=loop["loss_count"])
