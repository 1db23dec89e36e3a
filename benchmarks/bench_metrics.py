"""Time and memory of a full evaluation (every metric, per defect, per image, bootstrap intervals).

For each test-set size (default 10, 100 and 1,000 images of 256x256) a child process builds a synthetic
prediction record (half normal images; defective ones hold one or two square defects of two types, maps =
noise + signal inside the defect) and runs ``evaluate_record`` with 1000 bootstrap resamples, as ``vadkit
test`` and ``vadkit eval`` do. Each size runs in its own process so that its peak RSS (``ru_maxrss``) is its
own; the record's own arrays are reported separately so the metric overhead can be read off.

    .venv/bin/python benchmarks/bench_metrics.py [--sizes 10 100 1000] [--resamples 1000]

Synthetic data is right here: the cost of the metrics depends on the number of pixels, images, regions and
distinct map values, not on what the images show. Quality numbers always come from real data.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def synthetic_record(n_images: int, size: int = 256, seed: int = 0):
    from vadkit.runs import PredictionRecord

    rng = np.random.default_rng(seed)
    labels = (np.arange(n_images) >= n_images // 2).astype(np.int8)
    masks = np.zeros((n_images, size, size), dtype=bool)
    defects = []
    for i in range(n_images):
        defects.append("good" if labels[i] == 0 else ("crack", "spot")[i % 2])
        for _ in range(int(labels[i]) * int(rng.integers(1, 3))):
            side = int(rng.integers(8, 48))
            top, left = rng.integers(0, size - side, 2)
            masks[i, top:top + side, left:left + side] = True
    maps = rng.normal(0.0, 1.0, masks.shape).astype(np.float32)
    maps += 2.5 * masks
    scores = maps.reshape(n_images, -1).max(axis=1)
    return PredictionRecord(scores=scores, labels=labels, maps=maps.astype(np.float16), masks=masks,
                            paths=[f"img_{i}.png" for i in range(n_images)], defect_types=defects,
                            mask_paths=[""] * n_images, meta={"threshold": float(np.median(scores))})


def child(n_images: int, resamples: int) -> dict:
    from vadkit.runs import evaluate_record

    record = synthetic_record(n_images)
    record_mb = (record.maps.nbytes + record.masks.nbytes) / 2**20
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    evaluation = evaluate_record(record, n_resamples=resamples)
    seconds = time.perf_counter() - start
    return {"images": n_images, "pixels": int(record.maps.size), "seconds": round(seconds, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_mb": round(rss_before), "record_mb": round(record_mb),
            "image_auroc": evaluation.metrics.get("image_auroc"), "pixel_aupro": evaluation.metrics.get("pixel_aupro"),
            "aupimo_mean": evaluation.metrics.get("aupimo_mean")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.resamples)))
        return
    print("| images | pixels | evaluate s | peak RSS MB | of which record (maps f16 + masks) MB |")
    print("|---|---|---|---|---|")
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--resamples", str(args.resamples)],
                             capture_output=True, text=True, check=True).stdout
        row = json.loads(out.strip().splitlines()[-1])
        print(f"| {row['images']} | {row['pixels']:,} | {row['seconds']} | {row['peak_rss_mb']} | "
              f"{row['record_mb']} |", flush=True)


if __name__ == "__main__":
    main()
