"""Every method on the shared datasets: accuracy (the trained ones against their training budget) and every efficiency figure.

    .venv/bin/python benchmarks/bench_trained.py [--datasets battery_weld magnetic_tile] [--methods stfpm paste rd4ad]
        [--budgets 50 200 400] [--threads 2]

One process per (dataset, method), so that its peak RSS is its own. In it the model is trained to the first
budget (``max_steps``), evaluated, then trained on to the next budget by resuming its checkpoint (the loop
resumes bit-exactly, so each stage equals a training run with that budget from scratch) and evaluated again.
A method whose learning-rate schedule depends on the total step count (DRAEM, EfficientAD) cannot be resumed
into a longer budget that way: each of its budgets trains from scratch, and its fit seconds are that run's.
A one-pass method (PatchCore, PaDiM) has no budget: it is fitted once and gives one row (steps "-"), so
that every method of the library lands in one table.
The split is what ``vadkit train`` uses: a tenth of the training normals held out for validation.

Per stage: image AUROC, pixel AUROC, AU-PRO, pixel F1-max (vadkit's metrics), the training seconds of the
whole budget, the training seconds per image and step, predict ms per image (batch 8, after a warm-up),
trainable and total parameters, MACs per image of the inference module (torch's counter), peak RSS.

The floor of a distillation step (the issue's speed target): one teacher forward plus one student forward,
backward and optimiser step on a preloaded batch, timed in the same process right after training, with the
method's own networks (its loss included: a sum of squared differences, negligible). ``fit / floor`` is the
measured training time per image over that floor.

Writes ``benchmarks/results/trained/<dataset>_<method>.json`` and prints one row per stage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_seeds import DATASETS  # noqa: E402 - the shared datasets, located once

OUT = HERE / "results" / "trained"


def step_floor(model, images, repeats: int = 6) -> float:
    """Seconds per image of the bare distillation step on a preloaded batch (see the module docstring)."""
    import torch

    optimizer, _ = model.configure_optimizer(None)
    model.train_mode(True)
    times = []
    for i in range(repeats + 2):
        start = time.perf_counter()
        loss = model.training_step(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 2:  # warm-up: allocator, oneDNN primitives
            times.append(time.perf_counter() - start)
    model.train_mode(False)
    del torch
    return float(np.median(times)) / len(images)


def run(dataset: str, method: str, budgets: list[int], threads: int, params: dict | None = None) -> list[dict]:
    import torch

    import vadkit
    from vadkit.data import ImageDataset, load_split, with_validation
    from vadkit.metrics import compute_metrics
    from vadkit.profiling.flops import count_macs
    from vadkit.threads import set_threads

    set_threads(threads)
    layout, root = DATASETS[dataset]
    split = with_validation(load_split(layout, root), val_ratio=0.1)
    from vadkit.models import model_class
    from vadkit.models.trained import TrainedModel

    trained = issubclass(model_class(method), TrainedModel)
    if not trained:
        budgets = [None]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        seconds = 0.0
        for budget in budgets:
            model = vadkit.create_model(method, **{**(params or {}), **({"max_steps": budget} if trained else {})})
            train, val = ImageDataset(split.train, model.transform), ImageDataset(split.val, model.transform)
            if hasattr(model, "extractor"):
                model.extractor  # weights loaded outside the timed fit
            start = time.perf_counter()
            if trained:
                if _scheduled(model, budget):  # see the module docstring: this budget trains from scratch
                    seconds = 0.0
                    checkpoint = Path(folder) / f"training-{budget}.ckpt"
                else:
                    checkpoint = Path(folder) / "training.ckpt"
                model.fit(train, val=val, checkpoint=checkpoint, resume=True, progress=False)
            else:
                model.fit(train, progress=False)
            seconds += time.perf_counter() - start
            test = ImageDataset(split.test, model.transform)
            batch = torch.stack([test[i]["image"] for i in range(min(8, len(test)))])
            model.predict(batch)  # warm-up
            start = time.perf_counter()
            prediction = model.predict(test, batch_size=8, progress=False)
            predict_ms = 1000 * (time.perf_counter() - start) / len(test)
            masks = test.masks_array() if test.has_masks else None
            values = compute_metrics(test.labels, prediction.scores, masks, prediction.maps).values
            steps = model.history_[-1]["step"] if trained else None
            per_image = seconds / (steps * model.batch_size) if trained else seconds / len(train)
            floor = step_floor(model, torch.stack([train[i]["image"] for i in range(model.batch_size)])) \
                if trained else None
            module = model.inference_module()
            rows.append({
                "dataset": dataset, "method": method, "settings": params or {}, "budget_steps": budget, "steps": steps,
                "epochs": model.history_[-1]["epoch"] if trained else None,
                "batch_size": getattr(model, "batch_size", None), "n_train": len(train),
                "n_val": len(val), "n_test": len(test),
                **{key: values.get(key) for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_f1_max")},
                "fit_seconds": seconds, "fit_ms_per_image": 1000 * per_image,
                "floor_ms_per_image": 1000 * floor if trained else None,
                "fit_over_floor": per_image / floor if trained else None, "predict_ms_per_image": predict_ms,
                "trainable_params": sum(p.numel() for p in model.trainable_parameters()) if trained else 0,
                "params": sum(p.numel() for p in module.parameters()),
                "macs": count_macs(module, batch[:1]),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "threads": threads, "load_average": os.getloadavg()[0], "torch": torch.__version__,
            })
            print(json.dumps({k: rows[-1][k] for k in ("dataset", "method", "steps", "image_auroc", "pixel_aupro",
                                                        "fit_seconds", "fit_over_floor")}), flush=True)
    return rows


def _scheduled(model, budget: int) -> bool:
    """Whether the method's learning-rate schedule depends on the budget (a scheduler for ``budget`` steps)."""
    probe = type(model)(**model.get_params())
    probe.build_networks()
    return probe.configure_optimizer(budget)[1] is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["battery_weld", "magnetic_tile"], choices=list(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["stfpm", "paste", "rd4ad"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[50, 200, 400])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="a model parameter for every method (a number or a word); the results file is "
                             "named after it, e.g. <dataset>_<method>_lr=6.4.json")
    parser.add_argument("--tag", default="", help="a suffix for the results files (runs of other budgets)")
    parser.add_argument("--table", action="store_true", help="print the Markdown table of every saved result")
    parser.add_argument("--one", nargs=2, metavar=("DATASET", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print_table()
        return
    params = dict(_parse(item) for item in args.param)
    # a parameter's value may be a path (teacher=/tmp/t.pt): its file name stands for it in the results' name
    suffix = "".join(f"_{key}={Path(str(value)).name}" for key, value in params.items()) + \
        (f"_{args.tag}" if args.tag else "")
    OUT.mkdir(parents=True, exist_ok=True)
    if args.one:
        rows = run(args.one[0], args.one[1], sorted(args.budgets), args.threads, params)
        (OUT / f"{args.one[0]}_{args.one[1]}{suffix}.json").write_text(json.dumps(rows, indent=1))
        return
    for dataset in args.datasets:
        for method in args.methods:
            if (OUT / f"{dataset}_{method}{suffix}.json").exists():
                continue
            subprocess.run([sys.executable, __file__, "--one", dataset, method, "--threads", str(args.threads),
                            "--budgets", *map(str, args.budgets), *[f"--param={item}" for item in args.param],
                            *(["--tag", args.tag] if args.tag else [])],
                           check=True)


def print_table() -> None:
    """Every saved row as BENCHMARKS.md's table, by dataset, method, settings and budget."""
    rows = [row for path in sorted(OUT.glob("*.json")) for row in json.loads(path.read_text())]
    rows.sort(key=lambda r: (r["dataset"], r["method"], json.dumps(r.get("settings") or {}), r["steps"] or 0))
    print("| dataset | method | settings | steps (epochs) | image AUROC | pixel AUROC | AU-PRO | pixel F1-max | "
          "fit s | fit / floor | peak RSS MB | predict ms/img | MACs | trainable / total params |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        settings = ", ".join(f"{k}={v}" for k, v in (r.get("settings") or {}).items()) or "defaults"
        steps = "-" if r["steps"] is None else f"{r['steps']} ({r['epochs']})"
        over_floor = "-" if r["fit_over_floor"] is None else f"{r['fit_over_floor']:.2f}"
        print(f"| {r['dataset']} | {r['method']} | {settings} | {steps} | {r['image_auroc']:.3f} "
              f"| {r['pixel_auroc']:.3f} | {r['pixel_aupro']:.3f} | {r['pixel_f1_max']:.3f} | {r['fit_seconds']:.1f} "
              f"| {over_floor} | {r['peak_rss_mb']:,.0f} | {r['predict_ms_per_image']:.1f} "
              f"| {r['macs'] / 1e6:.0f} M | {r['trainable_params'] / 1e3:.0f} k / {r['params'] / 1e3:.0f} k |")


def _parse(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


if __name__ == "__main__":
    main()
