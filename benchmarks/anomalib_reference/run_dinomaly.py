"""One anomalib 2.7.0 Dinomaly reference run on vadkit's split with vadkit's offline ViT-S/14 (fixed steps, one seed).

    cd benchmarks/anomalib_reference
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_dinomaly.py --dataset battery_weld --steps 300 --seed 0
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_dinomaly.py --dataset battery_weld --steps 300 --seed 0 \
        --schedule vadkit --batching vadkit      # anomalib's networks and loss, vadkit's schedule and batches

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

The model: ``anomalib.models.Dinomaly(encoder_name="vit_small_patch14_dinov2", bottleneck_dropout=0.2,
decoder_depth=8)`` (anomalib's ViT-S config: taps blocks 2-9 raw, two groups of four, 6 heads, width 384; noisy
bottleneck and decoder MLPs without biases, linear attention with qkv bias, LayerNorm eps 1e-8, Linear weights
truncated normal std 0.01 in +-0.03), built after ``seed_everything(seed)`` with the offline weights
(``vit_reference.build_dinomaly``). Pre-processor: anomalib's ``Dinomaly.configure_pre_processor(image_size=(S, S),
crop_size=S)`` (torchvision ``Resize`` bilinear + antialias on the float image, a centre crop of the same size =
none, ImageNet ``Normalize``); ``--image-size`` 224 by default, vadkit's Dinomaly default (paper: 448 / crop 392).

Training, as anomalib's Lightning loop runs it (``Engine.fit`` with ``max_steps=--steps``), without a Trainer:
* data: vadkit's train list after ``with_validation(split, val_ratio=--val-ratio)`` (default: vadkit's default,
  = what ``vadkit train`` / ``vadkit bench`` train on; ``--val-ratio 0``: the whole training split);
* ``--batching anomalib`` (default): ``DataLoader(shuffle=True, batch_size=B)`` without drop_last, replayed as
  ``torch.randperm`` epochs from one generator seeded with ``seed`` (a last partial batch is a step);
  ``--batching vadkit``: vadkit's loop's batches (``vadkit.models.training._epoch_order(n, seed, epoch)`` and
  ``epoch_batches``: the same images in the same batches as ``vadkit train``, a lone last image joining the batch
  before it); ``--batch-size`` 16 (vadkit's default and anomalib's Dinomaly benchmark; anomalib's datamodule
  default is 32);
* each step is Lightning's automatic optimisation of ``Dinomaly.training_step``:
  ``loss = model.model(images, global_step=step)`` (``training_step`` minus its ``self.log``; ``global_step`` = the
  optimiser steps done so far, which drives the hard-mining share ``p = 0.9 * min(1, step / 1000)``),
  ``zero_grad``, ``backward``, gradient norm clipped at 0.1 over the optimiser's parameters
  (``trainer_arguments["gradient_clip_val"]``, algorithm "norm"), ``optimizer.step()``;
* optimiser and schedule: ``model.configure_optimizers()`` itself (StableAdamW lr 2e-3, betas 0.9/0.999, weight
  decay 1e-4, AMSGrad, eps 1e-8; ``WarmCosineScheduler`` 0 -> 2e-3 over 100 iterations, cosine to 2e-4 at
  ``total_iters = max_steps``), called with a stand-in trainer that only carries ``max_steps=--steps``,
  ``max_epochs=None``. It returns ``[optimizer], [scheduler]``, which Lightning steps once per EPOCH (its
  default ``interval="epoch"``), so with ``--schedule anomalib`` (default) the learning rate is 0 for the whole
  first epoch and follows the 100-"iteration" warm-up one epoch at a time, exactly as ``anomalib train`` does.
  ``--schedule vadkit`` instead steps the scheduler every optimiser step with vadkit's proportions: warm-up
  ``steps // 100``, hard-mining warm-up ``steps // 10`` (vadkit's ``warmup_steps=None`` /
  ``hard_mining_warmup=None``); ``--warmup-steps`` / ``--mining-steps`` override either;
* exactly ``--steps`` optimiser steps; no validation, no checkpoint selection: the final weights (vadkit keeps the
  weights of the best validation loss when it has held-out images; ``vadkit train --val-ratio 0`` does not).

Prediction: eval-mode forward (dropout off), raw ``pred_score`` (the mean of the top 1% of the map resized to
256 x 256 bilinearly and blurred by anomalib's 5 x 5 Gaussian, sigma 4) and the raw ``anomaly_map`` anomalib
returns: 1 - cosine per group, bilinear ``align_corners=True`` to S x S, averaged over the 2 groups, NOT blurred.
Metrics: vadkit's ``compute_metrics`` with vadkit's masks at S x S.

Writes ``benchmarks/results/anomalib/<dataset>_dinomaly_steps<N>_seed<k>[_<tag>].npz`` (paths, labels, scores
float32, maps float16, S x S) and ``.json``; ``--eval-at N ...`` also writes the run as it is after N steps (the
model a ``--steps N`` run with the same schedule would end with only when the schedule does not depend on
``--steps``: the cosine's length does, so these are anytime points of this run, named ``..._at<N>of<steps>``).
``--max-train`` / ``--max-test`` (smoke tests only) cut the lists and add ``smoke`` to the name;
``--time-one-step`` times two full-batch steps and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import reference as ref
import vit_reference as vr
from run_anomalydino import spread

GRAD_CLIP = 0.1  # Dinomaly.trainer_arguments["gradient_clip_val"]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def configure(model, steps: int, schedule: str, warmup: int | None, mining: int | None) -> tuple:
    """anomalib's ``configure_optimizers()`` under a stand-in trainer (it reads ``trainer.max_steps`` /
    ``max_epochs`` only); ``schedule="vadkit"`` rebuilds the scheduler with vadkit's warm-up proportions."""
    from anomalib.models.image.dinomaly.components import WarmCosineScheduler
    from anomalib.models.image.dinomaly.lightning_model import TRAINING_CONFIG

    model._trainer = SimpleNamespace(max_steps=steps, max_epochs=None)
    try:
        (optimizer,), (scheduler,) = model.configure_optimizers()
    finally:
        model._trainer = None
    warmup_iters = TRAINING_CONFIG["scheduler"]["warmup_iters"]
    mining_steps = model.model.loss_fn.p_schedule_steps
    if schedule == "vadkit":
        warmup_iters, mining_steps = steps // 100, steps // 10
    warmup_iters = warmup_iters if warmup is None else warmup
    mining_steps = mining_steps if mining is None else mining
    if warmup_iters != TRAINING_CONFIG["scheduler"]["warmup_iters"]:
        for group in optimizer.param_groups:  # a fresh scheduler on the same optimiser (lr back to its base)
            group["lr"] = group.get("initial_lr", group["lr"])
        cfg = {**TRAINING_CONFIG["scheduler"], "total_iters": steps, "warmup_iters": warmup_iters}
        scheduler = WarmCosineScheduler(optimizer, **cfg)
    model.model.loss_fn.p_schedule_steps = max(1, mining_steps)
    return optimizer, scheduler, {"interval": "step" if schedule == "vadkit" else "epoch",
                                  "warmup_iters": warmup_iters, "total_iters": steps,
                                  "hard_mining_steps": model.model.loss_fn.p_schedule_steps,
                                  "optimizer": repr(optimizer).replace("\n", " ")}


def epoch_batches(n: int, batch_size: int, seed: int, batching: str):
    """An endless stream of epochs, each a list of index lists (one per step)."""
    if batching == "vadkit":
        from vadkit.models.training import _epoch_order, epoch_batches as vadkit_batches

        epoch = 0
        while True:
            order = _epoch_order(n, seed, epoch).tolist()
            yield [[order[i] for i in positions] for positions in vadkit_batches(n, batch_size)]
            epoch += 1
    for order in ref.epoch_orders(n, seed):
        yield [order[i:i + batch_size] for i in range(0, n, batch_size)]


def step(model, optimizer, images: torch.Tensor, global_step: int) -> float:
    model.model.train()
    loss = model.model(images, global_step=global_step)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], GRAD_CLIP)
    optimizer.step()
    return float(loss.detach())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(ref.DATASETS), required=True)
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps (vadkit's default max_steps: 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--decoder-depth", type=int, default=8)
    parser.add_argument("--val-ratio", type=float, default=None,
                        help="vadkit's hold-out (default: vadkit train's default; 0: the whole training split)")
    parser.add_argument("--batching", choices=["anomalib", "vadkit"], default="anomalib")
    parser.add_argument("--schedule", choices=["anomalib", "vadkit"], default="anomalib")
    parser.add_argument("--warmup-steps", type=int, default=None, help="override the LR warm-up length")
    parser.add_argument("--mining-steps", type=int, default=None, help="override the hard-mining warm-up length")
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--eval-at", type=int, nargs="*", default=[])
    parser.add_argument("--time-one-step", action="store_true")
    parser.add_argument("--max-train", type=int, default=None, help="smoke test: first N training images")
    parser.add_argument("--max-test", type=int, default=None, help="smoke test: N test images, spread")
    parser.add_argument("--tag", default="")
    parser.add_argument("--out", type=Path, default=ref.RESULTS)
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    vr.check_patch_multiple(args.image_size)
    vr.set_image_size(args.image_size)
    warnings.filterwarnings("ignore", message=".*self.log.*")

    from vadkit.metrics import compute_metrics

    started, load_start = time.time(), os.getloadavg()
    split, train, val = vr.train_list(args.dataset, args.val_ratio)
    train = train[: args.max_train]
    test = spread(split.test, args.max_test)
    smoke = args.max_train is not None or args.max_test is not None
    model, weights_report = vr.build_dinomaly(args.seed, args.image_size, args.decoder_depth)
    optimizer, scheduler, schedule = configure(model, args.steps, args.schedule, args.warmup_steps, args.mining_steps)
    transform = model.pre_processor.transform
    epochs = epoch_batches(len(train), args.batch_size, args.seed, args.batching)

    if args.time_one_step:
        index = next(epochs)[0]
        images = next(ref.load_batches([train[i] for i in index], transform, batch_size=len(index)))
        times = []
        for k in range(2):
            t0 = time.perf_counter()
            loss = step(model, optimizer, images, k)
            times.append(time.perf_counter() - t0)
        print(f"dinomaly: batch {len(images)}: steps {times[0]:.2f} s, {times[1]:.2f} s (loss {loss:.4f}); "
              f"peak RSS {peak_rss_mib():.0f} MiB; n_train {len(train)}")
        return

    labels = np.array([s.label for s in test], dtype=np.int64)
    paths = np.array([str(s.image_path) for s in test])
    masks = ref.masks_for(test) if ref.USE_MASKS[args.dataset] else None
    args.out.mkdir(parents=True, exist_ok=True)
    base = f"{args.dataset}_dinomaly_steps{args.steps}_seed{args.seed}"
    tags = [t for t in ("smoke" if smoke else "", f"{args.batching}batches" if args.batching != "anomalib" else "",
                        f"{args.schedule}schedule" if args.schedule != "anomalib" else "",
                        f"warm{args.warmup_steps}" if args.warmup_steps is not None else "",
                        f"mine{args.mining_steps}" if args.mining_steps is not None else "",
                        f"s{args.image_size}" if args.image_size != 224 else "", args.tag) if t]
    losses, sizes, lrs, step_seconds = [], [], [], []
    state = {"epochs": 0, "decode": 0.0, "paused": 0.0, "paused_cpu": 0.0}
    fit_start, cpu_start = time.perf_counter(), time.process_time()

    def evaluate_and_write(done: int) -> None:
        pause, pause_cpu = time.perf_counter(), time.process_time()
        seconds = pause - fit_start - state["paused"]
        cpu_seconds = pause_cpu - cpu_start - state["paused_cpu"]
        rss_after_fit = peak_rss_mib()
        scores, maps, predict_seconds = ref.predict(model, test, batch_size=args.eval_batch)
        report = compute_metrics(labels, scores, masks, maps if masks is not None else None)
        name = base + (f"_at{done}of{args.steps}" if done != args.steps else "") + "".join(f"_{t}" for t in tags)
        np.savez_compressed(args.out / f"{name}.npz", paths=paths, labels=labels,
                            scores=scores.astype(np.float32), maps=maps.astype(np.float16))
        full = [t for t, b in zip(step_seconds, sizes) if b == args.batch_size]
        record = {
            "name": name, "dataset": args.dataset, "method": "dinomaly", "seed": args.seed, "steps": done,
            "steps_budget": args.steps, "ratio": None, "tag": "_".join(tags), "smoke": smoke,
            "params": {"encoder_name": vr.TIMM_NAME, "target_layers": list(model.model.target_layers),
                       "fuse_layers": model.model.fuse_layer_encoder, "decoder_depth": args.decoder_depth,
                       "bottleneck_dropout": 0.2, "image_size": args.image_size, "batch_size": args.batch_size,
                       "eval_batch_size": args.eval_batch, "batching": args.batching, "schedule": args.schedule,
                       **schedule, "grad_clip_norm": GRAD_CLIP,
                       "preprocess": str(transform).replace("\n", " ")},
            **vr.record_common(args, split, train, val), "n_train": len(train), "n_test": len(test),
            "n_test_anomalous": int(labels.sum()), "weights_load": weights_report,
            "fit_seconds": round(seconds, 3), "fit_cpu_seconds": round(cpu_seconds, 3),
            "decode_seconds": round(state["decode"], 3), "epochs_completed": state["epochs"],
            "image_steps": int(sum(sizes)), "batch_sizes_seen": sorted(set(sizes)),
            "median_full_batch_step_seconds": round(statistics.median(full), 4) if full else None,
            "predict_ms_per_image": round(1000 * predict_seconds / len(test), 2),
            "peak_rss_mib_after_fit": round(rss_after_fit, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
            "metrics": report.as_dict(), "metrics_skipped": report.skipped,
            "masks": f"vadkit load_mask + Transform({args.image_size}).mask_array" if masks is not None else None,
            "loss_first_last": [losses[0], losses[-1]], "loss_per_step": losses, "lr_per_step": lrs,
            "batch_size_per_step": list(sizes), "step_seconds": list(step_seconds),
            "loadavg_1_5_15_start": [round(v, 2) for v in load_start],
            "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
            "wall_seconds": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        ref.write_record(args.out, name, record, ("pixel_auroc", "pixel_aupro", "pixel_f1_max"),
                         f"fit {seconds:.1f} s ({done} steps, median full step "
                         f"{record['median_full_batch_step_seconds']} s), predict {record['predict_ms_per_image']:.1f} "
                         f"ms/img, peak RSS {record['peak_rss_mib']:.0f} MiB")
        model.model.train()
        state["paused"] += time.perf_counter() - pause
        state["paused_cpu"] += time.process_time() - pause_cpu

    while len(losses) < args.steps:
        for index in next(epochs):
            decode_start = time.perf_counter()
            images = next(ref.load_batches([train[i] for i in index], transform, batch_size=len(index)))
            step_start = time.perf_counter()
            state["decode"] += step_start - decode_start
            lrs.append(optimizer.param_groups[0]["lr"])
            losses.append(round(step(model, optimizer, images, len(losses)), 6))
            if schedule["interval"] == "step":
                scheduler.step()
            step_seconds.append(round(time.perf_counter() - step_start, 4))
            sizes.append(len(index))
            if len(losses) in args.eval_at and len(losses) < args.steps:
                evaluate_and_write(len(losses))
            if len(losses) >= args.steps:
                break
        else:
            state["epochs"] += 1
            if schedule["interval"] == "epoch":
                scheduler.step()  # Lightning's default scheduler interval
    model.model.eval()
    evaluate_and_write(args.steps)
    print(json.dumps({"lr_first_last": [lrs[0], lrs[-1]], "epochs_completed": state["epochs"]}))


if __name__ == "__main__":
    main()
