"""anomalib 2.7.0 PatchCore / PaDiM on vadkit's own splits: the pieces that run.py and the checks share.

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

What is anomalib's and what is ours:
* Files: vadkit's layouts (``vadkit.data.load_split``) list the train and test images, so both libraries see
  exactly the same files in the same order.
* Image decoding and preprocessing: anomalib's. ``anomalib.data.utils.read_image`` (PIL ``convert("RGB")``,
  float32 in [0, 1]) and then the model's own default pre-processor transform (``model.pre_processor.transform``:
  torchvision v2 ``Resize((256, 256), antialias=True)`` on the float tensor, ImageNet ``Normalize``), which is
  what anomalib's ``PreProcessor.on_{train,validation,test}_batch_start`` hooks apply inside its Lightning loops.
* The model: anomalib's Lightning module (``Patchcore`` / ``Padim``) built with ``pre_trained=False`` and the
  offline ImageNet MobileNetV2 weights loaded by ``/work/shared/anomalib-reference/peer_weights.py``.
  Training calls what anomalib's loop calls: ``model.model`` in train mode forward on every training batch
  (``training_step``), then ``model.fit()`` (``MemoryBankMixin.on_train_epoch_end`` calls it once).
  Prediction: ``model.model`` in eval mode returns ``InferenceBatch(pred_score, anomaly_map)``: the raw values,
  before anomalib's post-processor (min-max normalisation, thresholds), which is never run.
* Masks and metrics: vadkit's (``load_mask`` + ``Transform(256).mask_array``; ``compute_metrics``).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SHARED = Path(os.environ.get("VADKIT_SHARED", REPO.parent / "shared"))
RESULTS = REPO / "benchmarks" / "results" / "anomalib"
IMAGE_SIZE = 256
BATCH_SIZE = 32  # anomalib's default train/eval batch size for its datamodules

DATASETS = {  # name -> (vadkit layout, root); masks are read only where the layout pairs them
    "battery_weld": ("mvtec", SHARED / "datasets" / "battery_weld" / "welding"),
    "magnetic_tile": ("mtd", SHARED / "datasets" / "magnetic_tile"),
    "mvtec_bottle": ("mvtec", SHARED / "datasets" / "mvtec_bottle" / "bottle"),
}
USE_MASKS = {"battery_weld": True, "magnetic_tile": True, "mvtec_bottle": False}  # bottle copy has no masks

METHODS = {
    # PatchCore: vadkit's default pair (stride 8 / 16) = timm blocks.2 / blocks.4
    "patchcore": {"backbone": "mobilenetv2_100", "layers": ["blocks.2", "blocks.4"], "num_neighbors": 9},
    # PaDiM: stride 4 / 8 / 16, 100 of the 24 + 32 + 96 = 152 channels
    "padim": {"backbone": "mobilenetv2_100", "layers": ["blocks.1", "blocks.2", "blocks.4"], "n_features": 100},
}


def peer_weights():
    """The shared loader of the offline ImageNet MobileNetV2 weights into timm's ``mobilenetv2_100``."""
    sys.path.insert(0, str(SHARED / "anomalib-reference"))
    import peer_weights as pw

    return pw


def load_split(dataset: str):
    """vadkit's split of ``dataset`` (train and test ``Sample`` lists, in vadkit's order)."""
    from vadkit.data import load_split as vadkit_load_split

    layout, root = DATASETS[dataset]
    if not root.exists():
        raise SystemExit(f"dataset not found: {root}")
    return vadkit_load_split(layout, root)


def masks_for(samples) -> np.ndarray:
    """(N, 256, 256) bool ground truth exactly as vadkit evaluates it (all-False for normal images)."""
    from vadkit.data import Transform, load_mask

    transform = Transform(image_size=IMAGE_SIZE)
    out = np.zeros((len(samples), IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    for i, sample in enumerate(samples):
        if sample.mask_path is not None:
            out[i] = transform.mask_array(load_mask(sample.mask_path))
    return out


def build_model(method: str, seed: int, coreset_ratio: float | None = None):
    """anomalib's Lightning module with the offline weights; the global RNGs are seeded first.

    ``lightning.pytorch.seed_everything(seed)`` seeds ``random``, ``numpy`` and ``torch`` once, before the model
    is built, as anomalib's CLI / ``Engine`` runs do; every later draw (PaDiM's channel ``randperm`` in the
    constructor, PatchCore's sparse random projection and coreset start in ``fit``) then follows from ``seed``
    and the fixed sequence of calls in this module.
    """
    from lightning.pytorch import seed_everything

    seed_everything(seed, verbose=False)
    params = dict(METHODS[method])
    common = {"pre_trained": False, "post_processor": False, "evaluator": False, "visualizer": False}
    if method == "patchcore":
        from anomalib.models import Patchcore

        model = Patchcore(coreset_sampling_ratio=coreset_ratio, **params, **common)
    elif method == "padim":
        from anomalib.models import Padim

        model = Padim(**params, **common)
    else:
        raise ValueError(method)
    report = peer_weights().load_into_extractor(model.model.feature_extractor.feature_extractor)
    return model, report


def load_batches(samples, transform, batch_size: int = BATCH_SIZE):
    """Yield ``(B, 3, 256, 256)`` float tensors: anomalib's image reader, then the model's pre-processor transform.

    Each image is resized on its own (the images of a dataset may differ in size); Resize and Normalize act per
    image, so this equals transforming a stacked batch.
    """
    from anomalib.data.utils import read_image
    from torchvision import tv_tensors

    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        images = [transform(tv_tensors.Image(read_image(s.image_path, as_tensor=True))) for s in chunk]
        yield torch.stack([torch.as_tensor(im) for im in images])


@dataclass
class FitResult:
    seconds: float
    extract_seconds: float  # data loading + forward over the training images (part of seconds)
    cpu_seconds: float  # process CPU time (all threads) of the fit: less sensitive to a busy machine than wall time
    bank_rows: int | None  # PatchCore memory bank size after the coreset


def fit(model, train_samples) -> FitResult:
    """What anomalib's training epoch does: forward every training batch in train mode, then ``model.fit()``."""
    transform = model.pre_processor.transform
    start, cpu_start = time.perf_counter(), time.process_time()
    model.model.train()
    for batch in load_batches(train_samples, transform):
        model.model(batch)  # PatchCore: appends to embedding_store; PaDiM: appends to memory_bank
    extracted = time.perf_counter()
    model.fit()  # PatchCore: subsample_embedding(coreset_sampling_ratio); PaDiM: Gaussian fit
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.model.eval()
    bank = getattr(model.model, "memory_bank", None)
    rows = int(bank.shape[0]) if isinstance(bank, torch.Tensor) else None
    return FitResult(seconds=seconds, extract_seconds=extracted - start, cpu_seconds=cpu_seconds, bank_rows=rows)


def predict(model, test_samples, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray, float]:
    """Raw ``pred_score`` (N,) float32 and ``anomaly_map`` (N, 256, 256) float32 from the eval-mode torch model.

    ``batch_size`` only bounds memory: every model here predicts each image independently in eval mode."""
    transform = model.pre_processor.transform
    model.model.eval()
    scores, maps = [], []
    start = time.perf_counter()
    with torch.no_grad():
        for batch in load_batches(test_samples, transform, batch_size):
            out = model.model(batch)
            scores.append(out.pred_score.reshape(-1).float().numpy())
            maps.append(out.anomaly_map.reshape(len(batch), IMAGE_SIZE, IMAGE_SIZE).float().numpy())
    seconds = time.perf_counter() - start
    return np.concatenate(scores), np.concatenate(maps), seconds


def write_record(out: Path, name: str, record: dict, pixel_keys: tuple[str, ...], tail: str) -> None:
    """Write a run's JSON to ``out/<name>.json`` and print its one-line summary: image AUROC, the pixel
    metrics in ``pixel_keys`` (when the run has masks), then ``tail``."""
    import json

    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    metrics = record["metrics"]
    labels = {"pixel_auroc": "pixel AUROC", "pixel_aupro": "AU-PRO", "pixel_f1_max": "F1-max"}
    pixel = "".join(f", {labels[key]} {metrics[key]:.4f}" for key in pixel_keys) if "pixel_auroc" in metrics else ""
    print(f"{name}: image AUROC {metrics['image_auroc']:.4f}{pixel}; {tail}")


# --- Shared by the trained-method runs (run_cfa.py, run_draem.py, run_fastflow.py) ------------------------------
# The same loop as run_stfpm.py (which keeps its own copy): vadkit's train list after the 10% hold-out, anomalib's
# shuffled DataLoader replayed with a seeded generator, Lightning's automatic optimisation without a Trainer.

VAL_RATIO = 0.1


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_samples(dataset: str):
    """vadkit's split and its train list after the 10% hold-out (``with_validation(..., val_ratio=0.1)``)."""
    from vadkit.data import with_validation

    split = load_split(dataset)
    held = with_validation(split, val_ratio=VAL_RATIO)
    return split, held.train, held.val


def versions() -> dict:
    import platform

    import anomalib
    import lightning
    import timm
    import torchvision

    return {"anomalib": anomalib.__version__, "lightning": lightning.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def epoch_orders(n: int, seed: int):
    """anomalib's ``DataLoader(shuffle=True)`` epochs: an endless stream of ``torch.randperm(n)`` from one generator
    seeded with ``seed`` (what ``RandomSampler`` draws), shared by everything that iterates the train loader."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randperm(n, generator=generator).tolist()


def split_optimizers(configured):
    """``configure_optimizers()``'s return value -> (optimizer, epoch-interval schedulers)."""
    if isinstance(configured, torch.optim.Optimizer):
        return configured, []
    optimizers, schedulers = configured
    if len(optimizers) != 1:
        raise ValueError(f"expected one optimizer, got {len(optimizers)}")
    return optimizers[0], list(schedulers)


def lightning_step(model, optimizer, images: torch.Tensor) -> float:
    """One step of Lightning's automatic optimisation: ``training_step``, ``zero_grad``, ``model.backward(loss)``
    (the module's own hook: CFA's passes ``retain_graph=True``), ``optimizer.step()``; no gradient clipping
    (``gradient_clip_val`` is 0 in the trainer arguments of CFA, DRAEM and FastFlow)."""
    from anomalib.data import ImageBatch

    out = model.training_step(ImageBatch(image=images))
    loss = out["loss"]
    optimizer.zero_grad()
    model.backward(loss)
    optimizer.step()
    return float(loss.detach())


def fit_steps(model, samples, steps: int, orders, batch_size: int, checkpoint=None, checkpoint_at=(),
              drop_last: bool = False) -> dict:
    """Exactly ``steps`` optimiser steps over anomalib's shuffled batches (last batch of an epoch smaller: no
    ``drop_last``; ``drop_last=True`` drops it, as vadkit's loop does); epoch-interval LR schedulers are stepped at the end of every complete epoch, as Lightning does.

    After each step count in ``checkpoint_at`` (below ``steps``), ``checkpoint(count, summary)`` runs (an
    evaluation of the model as it is then, i.e. exactly the model a ``--steps count`` run ends with); its time is
    left out of the fit time and the model is put back in train mode."""
    transform = model.pre_processor.transform
    optimizer, schedulers = split_optimizers(model.configure_optimizers())
    n = len(samples)
    state = {"losses": [], "sizes": [], "step_seconds": [], "epochs": 0, "epochs_seen": 0, "decode_seconds": 0.0,
             "paused": 0.0, "paused_cpu": 0.0}
    losses, sizes, step_seconds = state["losses"], state["sizes"], state["step_seconds"]
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()

    def summary() -> dict:
        seconds = time.perf_counter() - start - state["paused"]
        cpu_seconds = time.process_time() - cpu_start - state["paused_cpu"]
        image_steps = int(sum(sizes))
        return {
            "seconds": seconds, "cpu_seconds": cpu_seconds, "decode_seconds": state["decode_seconds"],
            "steps": len(losses), "epochs_completed": state["epochs_seen"], "image_steps": image_steps,
            "partial_batches": int(sum(s < batch_size for s in sizes)), "batch_sizes_seen": sorted(set(sizes)),
            "seconds_per_step": seconds / len(losses), "seconds_per_image_step": seconds / image_steps,
            "final_lr": [group["lr"] for group in optimizer.param_groups],
            "losses": [round(v, 6) for v in losses], "batch_sizes": list(sizes),
            "step_seconds": [round(v, 4) for v in step_seconds],
        }

    while len(losses) < steps:
        order = next(orders)
        for first in range(0, n, batch_size):
            index = order[first:first + batch_size]
            if drop_last and len(index) < batch_size and n >= batch_size:
                state["epochs_seen"] += 1
                break
            decode_start = time.perf_counter()
            images = next(load_batches([samples[i] for i in index], transform, batch_size=len(index)))
            step_start = time.perf_counter()
            state["decode_seconds"] += step_start - decode_start
            losses.append(lightning_step(model, optimizer, images))
            step_seconds.append(time.perf_counter() - step_start)
            sizes.append(len(index))
            if first + batch_size >= n:
                state["epochs_seen"] += 1  # this step ended an epoch (the for-else below may be skipped at the end)
            if checkpoint is not None and len(losses) in checkpoint_at and len(losses) < steps:
                pause, pause_cpu = time.perf_counter(), time.process_time()
                checkpoint(len(losses), summary())
                model.train()
                state["paused"] += time.perf_counter() - pause
                state["paused_cpu"] += time.process_time() - pause_cpu
            if len(losses) >= steps:
                break
        else:
            state["epochs"] += 1
            for scheduler in schedulers:
                scheduler.step()
            continue
        if drop_last and len(losses) < steps:  # the epoch ended at its dropped partial batch
            state["epochs"] += 1
            for scheduler in schedulers:
                scheduler.step()
    result = summary()
    model.eval()
    return result


def run_trained(method: str, build, batch_size: int, describe: dict, prepare=None) -> None:
    """The command line and the whole run of one trained method, one process, one seed.

    ``build(seed) -> (model, weights_report)`` builds anomalib's Lightning module (seeded first);
    ``prepare(model, train, orders)`` runs what the module's ``on_train_start`` does (CFA's centroid) and returns a
    dict for the record. ``--time-one-step`` builds, runs ``prepare`` and times a single optimiser step (a full
    batch), writes nothing. Otherwise: fit ``--steps`` steps, predict the test split (raw ``pred_score`` and
    ``anomaly_map``, eval batch ``eval_batch``), vadkit's ``compute_metrics``, then ``<dataset>_<method>_steps<N>
    _seed<k>[_<tag>].npz`` (paths, labels, scores float32, maps float16) and ``.json`` in ``--out``; the same after
    each of ``--eval-at`` step counts on the way (the model a shorter run would end with: no RNG draw, optimiser
    or scheduler state depends on the evaluation).
    """
    import argparse
    import json
    import statistics
    import warnings

    parser = argparse.ArgumentParser(description=f"anomalib 2.7.0 {method} reference run on vadkit's split")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="battery_weld")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-batch", type=int, default=BATCH_SIZE, help="test batch (anomalib's default 32)")
    parser.add_argument("--time-one-step", action="store_true", help="time one training step only, write nothing")
    parser.add_argument("--eval-at", type=int, nargs="*", default=[],
                        help="also evaluate and write the run as it is after these step counts (below --steps)")
    parser.add_argument("--drop-last", action="store_true",
                        help="drop each epoch's incomplete batch (vadkit's loop); anomalib's DataLoader keeps it")
    parser.add_argument("--tag", default="", help="suffix of the output name")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.tag = "_".join(t for t in (("droplast" if args.drop_last else ""), args.tag) if t)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step logs; there is no Trainer here

    started, load_start = time.time(), os.getloadavg()
    split, train, val = train_samples(args.dataset)
    model, weights_report = build(args.seed)
    orders = epoch_orders(len(train), args.seed)
    prepared = prepare(model, train, orders) if prepare is not None else {}

    if args.time_one_step:
        index = next(orders)[:batch_size]
        images = next(load_batches([train[i] for i in index], model.pre_processor.transform, batch_size=len(index)))
        optimizer, _ = split_optimizers(model.configure_optimizers())
        model.train()
        t0 = time.perf_counter()
        loss = lightning_step(model, optimizer, images)
        t1 = time.perf_counter()
        loss2 = lightning_step(model, optimizer, images)
        t2 = time.perf_counter()
        print(f"{method}: batch {len(images)}: step 1 {t1 - t0:.2f} s (loss {loss:.4f}), step 2 {t2 - t1:.2f} s "
              f"(loss {loss2:.4f}); prepare {prepared}; peak RSS {peak_rss_mib():.0f} MiB; "
              f"n_train {len(train)}, {-(-len(train) // batch_size)} steps/epoch")
        return

    from vadkit.metrics import compute_metrics

    labels = np.array([s.label for s in split.test], dtype=np.int64)
    paths = np.array([str(s.image_path) for s in split.test])
    masks = masks_for(split.test) if USE_MASKS[args.dataset] else None
    args.out.mkdir(parents=True, exist_ok=True)

    def evaluate_and_write(steps: int, fitted: dict) -> None:
        rss_after_fit = peak_rss_mib()
        scores, maps, predict_seconds = predict(model, split.test, batch_size=args.eval_batch)
        rss_after_predict = peak_rss_mib()
        report = compute_metrics(labels, scores, masks, maps if masks is not None else None)
        name = f"{args.dataset}_{method}_steps{steps}_seed{args.seed}" + (f"_{args.tag}" if args.tag else "")
        np.savez_compressed(args.out / f"{name}.npz", paths=paths, labels=labels,
                            scores=scores.astype(np.float32), maps=maps.astype(np.float16))
        fitted = dict(fitted)
        losses, sizes, step_seconds = fitted.pop("losses"), fitted.pop("batch_sizes"), fitted.pop("step_seconds")
        full = [t for t, b in zip(step_seconds, sizes) if b == batch_size]
        record = {
            "name": name, "dataset": args.dataset, "method": method, "seed": args.seed, "steps": steps,
            "tag": args.tag, "ratio": None, "drop_last": args.drop_last,
            "evaluated_during_run_of_steps": args.steps if steps != args.steps else None,
            "params": {**describe, "image_size": IMAGE_SIZE, "batch_size": batch_size,
                       "eval_batch_size": args.eval_batch,
                       "optimizer": repr(model.configure_optimizers()).replace("\n", " "),
                       "preprocess": str(model.pre_processor.transform).replace("\n", " ")},
            "n_train": len(train), "n_val_held_out": len(val), "n_train_before_hold_out": len(split.train),
            "n_test": len(split.test), "n_test_anomalous": int(labels.sum()),
            "weights_load": weights_report, "prepare": prepared, "versions": versions(),
            "torch_threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "fit": {k: (round(v, 5) if isinstance(v, float) else v) for k, v in fitted.items()},
            "fit_seconds": round(fitted["seconds"], 3), "fit_cpu_seconds": round(fitted["cpu_seconds"], 3),
            "median_full_batch_step_seconds": round(statistics.median(full), 4) if full else None,
            "predict_ms_per_image": round(1000 * predict_seconds / len(split.test), 2),
            "peak_rss_mib_after_fit": round(rss_after_fit, 1), "peak_rss_mib": round(rss_after_predict, 1),
            "metrics": report.as_dict(), "metrics_skipped": report.skipped,
            "masks": "vadkit load_mask + Transform(256).mask_array" if masks is not None else None,
            "loss_first_last": [losses[0], losses[-1]], "loss_per_step": losses, "batch_size_per_step": sizes,
            "step_seconds": step_seconds,
            "loadavg_1_5_15_start": [round(v, 2) for v in load_start],
            "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
            "wall_seconds": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_record(args.out, name, record, ("pixel_auroc", "pixel_aupro", "pixel_f1_max"),
                     f"fit {record['fit_seconds']:.1f} s ({steps} steps, median full step "
                     f"{record['median_full_batch_step_seconds']} s), predict {record['predict_ms_per_image']:.1f} "
                     f"ms/img, peak RSS {record['peak_rss_mib']:.0f} MiB")
        print(json.dumps({"fit_seconds": record["fit_seconds"], "wall_seconds": record["wall_seconds"]}), flush=True)

    fitted = fit_steps(model, train, args.steps, orders, batch_size, checkpoint=evaluate_and_write,
                       checkpoint_at=set(args.eval_at), drop_last=args.drop_last)
    evaluate_and_write(args.steps, fitted)
