"""PatchCore and PaDiM over seeds, on the shared datasets: how much of a result is the random draw.

    python benchmarks/bench_seeds.py                       # the whole grid (skips runs already saved)
    python benchmarks/bench_seeds.py --datasets battery_weld --configs patchcore_0.01_random

Each run fits on the whole training split of vadkit's layout (no validation hold-out: the same images as
``benchmarks/anomalib_reference``, so both libraries can be compared image by image) and saves to
``benchmarks/results/vadkit_seeds/<dataset>_<config>_seed<k>.npz`` the test paths, labels, raw scores and
float16 maps, with a JSON of the metrics (``vadkit.metrics.compute_metrics``), fit seconds and peak RSS.
Every run is its own process, so the peak RSS is that run's. ``benchmarks/compare_anomalib.py`` turns these
and the anomalib reference runs into the tables of BENCHMARKS.md.

Configs: PatchCore (mobilenet_v2, 256 px, the paper's layers and b = 9) at coreset 1% and 10%, with the
coreset's first centre drawn at random (``coreset_start="random"``, seeded: vadkit before issue 11 and
anomalib) or the patch nearest the mean (``"mean"``); PaDiM (100 random channels of 152, seeded). mobilenet_v2's
taps make 128 channels, no wider than the coreset's projection, so its selection is not projected and the mean
start makes it seed-free; the ``lite0`` configs (EfficientNet-Lite0, 152 channels) measure what the seeded
projection alone still moves.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("VADKIT_SHARED_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
DATASETS = {
    "battery_weld": ("mvtec", SHARED / "battery_weld" / "welding"),
    "mvtec_bottle": ("mvtec", SHARED / "mvtec_bottle" / "bottle"),
    "magnetic_tile": ("mtd", SHARED / "magnetic_tile"),
}
CONFIGS = {
    "patchcore_0.01_random": ("patchcore", {"coreset_ratio": 0.01, "coreset_start": "random"}),
    "patchcore_0.01_mean": ("patchcore", {"coreset_ratio": 0.01, "coreset_start": "mean"}),
    "patchcore_0.1_random": ("patchcore", {"coreset_ratio": 0.1, "coreset_start": "random"}),
    "patchcore_0.1_mean": ("patchcore", {"coreset_ratio": 0.1, "coreset_start": "mean"}),
    "padim": ("padim", {}),
    # EfficientNet-Lite0's default taps are 40 + 112 = 152 channels, wider than the 128 of the projection:
    # the coreset is selected on a seeded random projection, so the seed moves the bank even from the mean
    "patchcore_lite0_0.01_random": ("patchcore", {"backbone": "efficientnet_lite0", "coreset_ratio": 0.01,
                                                  "coreset_start": "random"}),
    "patchcore_lite0_0.01_mean": ("patchcore", {"backbone": "efficientnet_lite0", "coreset_ratio": 0.01,
                                                "coreset_start": "mean"}),
}
OUT = Path(__file__).resolve().parent / "results" / "vadkit_seeds"


def run_one(dataset: str, config: str, seed: int) -> dict:
    """Fit and predict one configuration in this process; returns the JSON row (and writes both files)."""
    import torch

    from vadkit.data import ImageDataset, load_split
    from vadkit.metrics import compute_metrics
    from vadkit.models import create_model

    layout, root = DATASETS[dataset]
    name, params = CONFIGS[config]
    model = create_model(name, **{"backbone": "mobilenet_v2", "image_size": 256, "seed": seed, **params})
    split = load_split(layout, root)
    train, test = ImageDataset(split.train, model.transform), ImageDataset(split.test, model.transform)
    model.extractor  # weights loaded before the timed fit
    start = time.perf_counter()
    model.fit(train, progress=False)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    prediction = model.predict(test, progress=False)
    predict_ms = 1000 * (time.perf_counter() - start) / len(test)
    masks = test.masks_array() if test.has_masks else None
    metrics = compute_metrics(test.labels, prediction.scores, masks, prediction.maps).as_dict()
    name = f"{dataset}_{config}_seed{seed}"  # not Path.with_suffix: "0.01" in a name is not a suffix
    np.savez_compressed(OUT / f"{name}.npz", paths=np.array([str(s.image_path) for s in test.samples]),
                        labels=test.labels, scores=prediction.scores, maps=prediction.maps.astype(np.float16))
    row = {"name": name, "dataset": dataset, "config": config, "method": name, "params": params, "seed": seed,
           "n_train": len(train), "n_test": len(test), "fit_seconds": fit_seconds, "predict_ms_per_image": predict_ms,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0], **metrics}
    (OUT / f"{name}.json").write_text(json.dumps(row, indent=1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--one", nargs=3, metavar=("DATASET", "CONFIG", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if args.one:
        row = run_one(args.one[0], args.one[1], int(args.one[2]))
        print(json.dumps({k: row[k] for k in ("name", "image_auroc", "fit_seconds")}))
        return
    for dataset in args.datasets:
        if not DATASETS[dataset][1].exists():
            print(f"skipping {dataset}: {DATASETS[dataset][1]} not found")
            continue
        for config in args.configs:
            for seed in args.seeds:
                if (OUT / f"{dataset}_{config}_seed{seed}.json").exists():
                    continue
                subprocess.run([sys.executable, __file__, "--one", dataset, config, str(seed)], check=True)


if __name__ == "__main__":
    main()
