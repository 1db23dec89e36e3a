"""The whole ``vadkit train`` command against its floor: a bare MobileNetV2 forward over the same images.

    .venv/bin/python benchmarks/bench_train_command.py [--datasets mvtec_bottle magnetic_tile] [--rounds 3]

The floor: torchvision's MobileNetV2 as published (no BatchNorm folding), cut after ``features.13`` (PatchCore's
deepest layer), channels-last (its fastest layout, BENCHMARKS.md "Backbone floor"), batch 8, over every image
of the dataset (training + test), the images already decoded and resized (tensors in memory): only the
forward passes are timed. The command: ``vadkit train`` with its defaults (PatchCore, 10% coreset, validation
hold-out, every metric with bootstrap intervals, per-defect repeats, overlays, model file), run as a user runs
it, in a fresh process: start-up and imports included. The two are timed in turn, ``--rounds`` times, and the
ratio of their medians is reported (a burst of load from other processes then hits both).

Also written: where the command's time goes, from its own ``fit_seconds`` / ``predict_ms_per_image`` in
metrics.json. Results: ``benchmarks/results/train_command.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_seeds import DATASETS  # noqa: E402

VADKIT = Path(sys.executable).with_name("vadkit")


def floor_seconds(dataset: str, batch_size: int = 8) -> tuple[float, int]:
    """Seconds of the bare forward passes over the dataset's images, and the image count."""
    import torch

    from vadkit.backbones import create_extractor
    from vadkit.data import ImageDataset, load_split

    layout, root = DATASETS[dataset]
    split = load_split(layout, root)
    extractor = create_extractor("mobilenet_v2", ["features.13"], fuse_batchnorm=False, channels_last=True)
    images = ImageDataset(split.train + split.test)
    tensors = torch.stack([images[i]["image"] for i in range(len(images))])
    with torch.inference_mode():
        extractor(tensors[:batch_size])  # warm-up
        start = time.perf_counter()
        for batch in tensors.split(batch_size):
            extractor(batch)
    return time.perf_counter() - start, len(images)


def command_seconds(dataset: str, threads: int, params: list[str]) -> tuple[float, dict]:
    layout, root = DATASETS[dataset]
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([str(VADKIT), "train", "--data", str(root), "--layout", layout, "--out", out, "--quiet",
                        "--threads", str(threads), *[f"--param={item}" for item in params]],
                       check=True, capture_output=True)
        seconds = time.perf_counter() - start
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    return seconds, {key: metrics[key] for key in ("fit_seconds", "predict_ms_per_image", "n_train", "n_val",
                                                   "n_test", "image_auroc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mvtec_bottle", "magnetic_tile"], choices=list(DATASETS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to vadkit train (e.g. coreset_ratio=0.01)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "train_command.json")
    args = parser.parse_args()
    import os

    import torch

    torch.set_num_threads(args.threads)
    results = []
    for dataset in args.datasets:
        floors, commands, facts = [], [], None
        for _ in range(args.rounds):
            seconds, n_images = floor_seconds(dataset)
            floors.append(seconds)
            seconds, facts = command_seconds(dataset, args.threads, args.param)
            commands.append(seconds)
        row = {"dataset": dataset, "images": n_images, "floor_s": floors, "command_s": commands,
               "floor_median_s": statistics.median(floors), "command_median_s": statistics.median(commands),
               "ratio": statistics.median(commands) / statistics.median(floors), "threads": args.threads,
               "params": args.param,
               "load_average": os.getloadavg()[0], **facts}
        results.append(row)
        print(json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
