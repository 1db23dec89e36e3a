"""One benchmark cell: a method on a dataset, with its floor measured in the same process.

    python benchmarks/bench_model.py --dataset magnetic_tile --model patchcore --param coreset_ratio=0.1

Prints one JSON object: quality (image AUROC, pixel AUROC, AU-PRO), fit seconds, the bare feature
extraction time over the same training images (the floor of fit: data loading + backbone forward, same
batch size), predict ms per image and the bare extraction ms per image on the test images (the floor of
predict), their ratios, peak RSS of this process, and the model file size. Run one cell per process
(bench_grid.py does) so that peak RSS belongs to that cell alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from vadkit import runs
from vadkit.cli import parse_assignments
from vadkit.data import ImageDataset, load_split
from vadkit.models import create_model

SHARED = Path(os.environ.get("VADKIT_SHARED_DATASETS", Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
DATASETS = {
    "magnetic_tile": ("mtd", SHARED / "magnetic_tile"),
    "mvtec_bottle": ("mvtec", SHARED / "mvtec_bottle" / "bottle"),
    "battery_weld": ("mvtec", SHARED / "battery_weld" / "welding"),
}


def extraction_seconds(model, dataset, batch_size: int) -> float:
    """Data loading + backbone forward over the dataset, nothing else: the floor of fit and predict."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    start = time.perf_counter()
    for batch in loader:
        model.features(batch["image"])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--param", action="append", default=[])
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    layout, root = DATASETS[args.dataset]
    if not root.exists():
        sys.exit(f"dataset not found: {root}")
    params = parse_assignments(tuple(args.param), "--param")
    model = create_model(args.model, **params)
    split = load_split(layout, root)
    train, test = ImageDataset(split.train, model.transform), ImageDataset(split.test, model.transform)

    model.extractor  # load weights before any timing
    extraction_seconds(model, ImageDataset(split.train[:args.batch_size], model.transform), args.batch_size)  # warm-up
    floor_fit = extraction_seconds(model, train, args.batch_size)
    start = time.perf_counter()
    model.fit(train, batch_size=args.batch_size, progress=False)
    fit_seconds = time.perf_counter() - start
    floor_predict = extraction_seconds(model, test, args.batch_size)
    evaluation = runs.evaluate(model, test, batch_size=args.batch_size, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        size = model.save(Path(tmp) / "m.vad").stat().st_size
    metrics = evaluation.metrics
    result = {
        "dataset": args.dataset, "model": args.model, "params": params, "batch_size": args.batch_size,
        "n_train": len(train), "n_test": len(test), "torch_threads": torch.get_num_threads(),
        "image_auroc": metrics.get("image_auroc"), "pixel_auroc": metrics.get("pixel_auroc"),
        "pixel_aupro": metrics.get("pixel_aupro"),
        "fit_s": fit_seconds, "extract_train_s": floor_fit, "fit_over_floor": fit_seconds / floor_fit,
        "predict_ms": metrics["predict_ms_per_image"], "extract_ms": 1000 * floor_predict / len(test),
        "predict_over_floor": metrics["predict_ms_per_image"] / (1000 * floor_predict / len(test)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_mb": size / 2**20,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
