"""How far AUPIMO's reference numbers (threshold grid) are from the exact curve, by number of normal images.

    .venv/bin/python benchmarks/bench_aupimo_methods.py [--normals 4 10 20 40 100] [--seeds 8]

Generated maps (metric behaviour, not a quality claim): normal images of 256 x 256 Gaussian noise, 10 anomalous
images whose masked square scores higher by a random shift, default FPR bounds (1e-5, 1e-4). For each number of
normal images and seed: ``aupimo(method="reference")`` against ``aupimo(method="exact")``, the largest
per-image difference and the difference of the means; the table keeps the largest over seeds. Also the time of
each method on 400 maps. Why they differ: ``vadkit/metrics/pimo.py``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vadkit.metrics import aupimo


def maps_and_masks(n_normal: int, seed: int, n_anomalous: int = 10, size: int = 256):
    rng = np.random.default_rng(seed)
    n = n_normal + n_anomalous
    maps = rng.normal(size=(n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), bool)
    for i in range(n_normal, n):
        side = int(rng.integers(8, 48))
        y, x = rng.integers(0, size - side, 2)
        masks[i, y:y + side, x:x + side] = True
        maps[i][masks[i]] += rng.uniform(2.0, 5.0)
    return masks, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--normals", nargs="+", type=int, default=[4, 10, 20, 40, 100])
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    print("| normal images | largest per-image |reference − exact| | largest |difference of means| |")
    print("|---|---|---|")
    for n_normal in args.normals:
        per_image, means = 0.0, 0.0
        for seed in range(args.seeds):
            masks, maps = maps_and_masks(n_normal, seed)
            reference = aupimo(masks, maps, method="reference", force=True)
            exact = aupimo(masks, maps, method="exact", force=True)
            scored = ~np.isnan(exact.per_image)
            per_image = max(per_image, float(np.abs(reference.per_image[scored] - exact.per_image[scored]).max()))
            means = max(means, abs(reference.mean - exact.mean))
        print(f"| {n_normal} | {per_image:.1e} | {means:.1e} |")
    masks, maps = maps_and_masks(390, 0)
    for method in ("reference", "exact"):
        start = time.perf_counter()
        aupimo(masks, maps, method=method)
        print(f"{method}: {time.perf_counter() - start:.2f} s for 400 maps of 256 x 256")


if __name__ == "__main__":
    main()
