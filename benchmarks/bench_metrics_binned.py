"""Time and memory of the bootstrap intervals and of the streaming (binned) pixel metrics.

Three measurements, each in its own child process so that its peak RSS (``ru_maxrss``) is its own:

- ``image_ci``: ``bootstrap_image_ci`` (AUROC, AUPR, F1-max) on N images (default 1000), R resamples;
- ``pixel_ci``: ``bootstrap_pixel_ci`` (AUROC, AUPR, F1-max, AU-PRO 0.3 / 0.05) on 100 images of 256x256,
  R resamples: time, tracemalloc peak (the function's own allocations) and process peak RSS;
- ``stream``: ``PixelHistogram`` fed 100M pixels in chunks of 1M (16 images of 256x256), then AUROC and its
  error bound; the time of ``add`` alone (chunk generation excluded) and the process peak RSS. With
  ``--exact`` also the exact sort-based ``pixel_auroc`` of the same pixels held in memory, for comparison.

    .venv/bin/python benchmarks/bench_metrics_binned.py [--images 1000] [--resamples 1000]
        [--pixels 100_000_000] [--exact]

Synthetic data (normal noise, square defects): the cost depends on the numbers of images, pixels, bins and
replicates, not on what the maps show.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np

CHUNK_IMAGES, SIZE = 16, 256


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_maps(rng, n_images: int, defective_fraction: float = 0.5):
    masks = np.zeros((n_images, SIZE, SIZE), dtype=bool)
    for i in range(int(n_images * defective_fraction)):
        side = int(rng.integers(8, 48))
        top, left = rng.integers(0, SIZE - side, 2)
        masks[i, top:top + side, left:left + side] = True
    maps = rng.standard_normal(masks.shape, dtype=np.float32)
    maps += 2.5 * masks
    return masks, maps


def image_ci(n_images: int, resamples: int) -> dict:
    from vadkit.metrics import bootstrap_image_ci

    rng = np.random.default_rng(0)
    labels = rng.random(n_images) < 0.3
    scores = rng.normal(size=n_images) + 1.5 * labels
    bootstrap_image_ci(labels[:50], scores[:50], n_resamples=10)  # warm-up (imports, first calls)
    start = time.perf_counter()
    intervals = bootstrap_image_ci(labels, scores, n_resamples=resamples)
    seconds = time.perf_counter() - start
    auroc = intervals["image_auroc"]
    return {"what": "bootstrap_image_ci", "images": n_images, "resamples": resamples, "seconds": round(seconds, 3),
            "peak_rss_mb": round(peak_rss_mb()), "image_auroc": [auroc.low, auroc.estimate, auroc.high]}


def pixel_ci(n_images: int, resamples: int) -> dict:
    from vadkit.metrics import bootstrap_pixel_ci

    masks, maps = synthetic_maps(np.random.default_rng(0), n_images)
    data_mb = (masks.nbytes + maps.nbytes) / 2**20
    rss_before = peak_rss_mb()
    tracemalloc.start()
    start = time.perf_counter()
    intervals = bootstrap_pixel_ci(masks, maps, n_resamples=resamples)
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    auroc = intervals["pixel_auroc"]
    return {"what": "bootstrap_pixel_ci", "images": n_images, "pixels": int(masks.size), "resamples": resamples,
            "seconds": round(seconds, 2), "traced_peak_mb": round(traced_peak, 1),
            "peak_rss_mb": round(peak_rss_mb()), "rss_before_mb": round(rss_before), "data_mb": round(data_mb),
            "pixel_auroc": [auroc.low, auroc.estimate, auroc.high], "auroc_error_bound": auroc.error_bound,
            "note": "seconds include tracemalloc overhead"}


def stream(n_pixels: int, exact: bool) -> dict:
    from vadkit.metrics import PixelHistogram, pixel_auroc

    rss_imports = peak_rss_mb()
    rng = np.random.default_rng(0)
    n_chunks = max(1, -(-n_pixels // (CHUNK_IMAGES * SIZE * SIZE)))  # at least n_pixels
    hist = PixelHistogram(range=(-6.0, 9.0))
    add_seconds = 0.0
    kept = []
    for _ in range(n_chunks):
        masks, maps = synthetic_maps(rng, CHUNK_IMAGES)
        if exact:
            kept.append((masks, maps))
        start = time.perf_counter()
        hist.add(masks, maps)
        add_seconds += time.perf_counter() - start
    start = time.perf_counter()
    value, bound = hist.auroc(), hist.auroc_error_bound()
    read_seconds = time.perf_counter() - start
    row = {"what": "PixelHistogram stream", "pixels": n_chunks * CHUNK_IMAGES * SIZE * SIZE,
           "chunk_pixels": CHUNK_IMAGES * SIZE * SIZE, "bins": len(hist.edges) - 1,
           "add_seconds": round(add_seconds, 2), "read_seconds": round(read_seconds, 4),
           "ns_per_pixel": round(add_seconds / (n_chunks * CHUNK_IMAGES * SIZE * SIZE) * 1e9, 1),
           "peak_rss_mb": round(peak_rss_mb()), "rss_after_imports_mb": round(rss_imports), "auroc": value,
           "auroc_error_bound": bound}
    if exact:
        masks = np.concatenate([m for m, _ in kept])
        maps = np.concatenate([m for _, m in kept])
        kept.clear()
        rss_data = peak_rss_mb()
        start = time.perf_counter()
        exact_value = pixel_auroc(masks, maps)
        row.update(exact_seconds=round(time.perf_counter() - start, 2), exact_auroc=exact_value,
                   exact_error=abs(exact_value - value), rss_with_data_mb=round(rss_data),
                   exact_peak_rss_mb=round(peak_rss_mb()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images of the image-level bootstrap")
    parser.add_argument("--pixel-images", type=int, default=100, help="256x256 images of the pixel bootstrap")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--pixels", type=int, default=100_000_000, help="pixels streamed into the histogram")
    parser.add_argument("--exact", action="store_true", help="also time the exact sort on the streamed pixels")
    parser.add_argument("--child", choices=["image_ci", "pixel_ci", "stream"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "image_ci":
        print(json.dumps(image_ci(args.images, args.resamples)))
    elif args.child == "pixel_ci":
        print(json.dumps(pixel_ci(args.pixel_images, args.resamples)))
    elif args.child == "stream":
        print(json.dumps(stream(args.pixels, args.exact)))
    else:
        for child in ("image_ci", "pixel_ci", "stream"):
            command = [sys.executable, __file__, "--child", child, "--images", str(args.images), "--pixel-images",
                       str(args.pixel_images), "--resamples", str(args.resamples), "--pixels", str(args.pixels)]
            out = subprocess.run(command + (["--exact"] if args.exact else []), capture_output=True, text=True,
                                 check=True).stdout
            print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
