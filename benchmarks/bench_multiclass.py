"""One model for every shared dataset at once (the multi-class, or unified, setting of Dinomaly), scored per dataset.

    .venv/bin/python benchmarks/bench_multiclass.py [--methods dinomaly tiny_dinomaly] [--seeds 0] [--threads 2]
        [--param max_steps=300 ...]

Dinomaly (Guo et al., CVPR 2025) trains one model on the normal images of all classes together and reports the
mean of the per-class metrics. Here the classes are the shared datasets (battery_weld, mvtec_bottle,
magnetic_tile): each method is fitted once on the union of their training splits (as ``vadkit train`` splits
them, a tenth of each held out for validation), then each dataset's test split is scored and evaluated with
vadkit's metrics, as a per-dataset run of ``benchmarks/configs/foundation.yaml`` would be. Writes
``benchmarks/results/multiclass/<method>_s<seed>.json`` (fit seconds, peak RSS, per-dataset metrics) and prints
one row per dataset and the mean.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_seeds import DATASETS  # noqa: E402 - the shared datasets, located once

OUT = HERE / "results" / "multiclass"
KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_f1_max", "aupimo_mean")


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["dinomaly", "tiny_dinomaly"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--param", action="append", default=[], help="NAME=VALUE for every method")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from vadkit.data import ImageDataset, load_split, with_validation
    from vadkit.models import create_model
    from vadkit.runs.train_test import evaluate

    params = {key: parse_value(value) for key, value in (item.split("=", 1) for item in args.param)}
    splits = {name: with_validation(load_split(layout, root)) for name, (layout, root) in DATASETS.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    for method in args.methods:
        for seed in args.seeds:
            model = create_model(method, seed=seed, **params)
            train = ImageDataset([s for split in splits.values() for s in split.train], model.transform)
            val = ImageDataset([s for split in splits.values() for s in split.val], model.transform)
            start = time.perf_counter()
            model.fit(train, val=val, progress=True)
            fit_seconds = time.perf_counter() - start
            rows = {}
            for name, split in splits.items():
                test = ImageDataset(split.test, model.transform)
                metrics = evaluate(model, test, progress=False, intervals=False).metrics
                rows[name] = {key: metrics.get(key) for key in KEYS}
                print(method, seed, name, {k: None if v is None else round(v, 3) for k, v in rows[name].items()},
                      flush=True)
            mean = {key: float(np.mean([r[key] for r in rows.values() if r[key] is not None])) for key in KEYS}
            result = {"method": method, "seed": seed, "params": model.get_params(), "n_train": len(train),
                      "fit_seconds": fit_seconds, "steps": model.history_[-1]["step"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "datasets": rows, "mean": mean}
            (OUT / f"{method}_s{seed}.json").write_text(json.dumps(result, indent=1, default=str))
            print(method, seed, "mean", {k: round(v, 3) for k, v in mean.items()}, f"fit {fit_seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
