"""Coreset selection on real PatchCore features: speed and coverage of the three greedy k-center variants.

    python benchmarks/bench_coreset.py [--subsample 100000] [--full]

Features: PatchCore's locally aware patch features (mobilenet_v2, 256 px) of the 761 magnetic-tile training
images (779,264 patches x 128 dims). On a subsample where the textbook O(N k d) greedy is feasible, compares
it with the lazy exact variant and the IVF variant (time, coverage radius = the k-center objective, and the
fraction of indices both select: float rounding breaks near-ties differently); with --full, also times
lazy-exact vs IVF on all patches (k = 10%).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench_model import DATASETS
from vadkit.data import ImageDataset, load_split
from vadkit.models.patchcore import PatchCore
from vadkit.ops.coreset import coverage_radius, greedy_kcenter, greedy_kcenter_plain
from vadkit.ops.knn import NearestNeighbours
from vadkit.ops.patch_features import flatten_patches


def patch_features() -> torch.Tensor:
    layout, root = DATASETS["magnetic_tile"]
    model = PatchCore()
    train = ImageDataset(load_split(layout, root).train, model.transform)
    loader = torch.utils.data.DataLoader(train, batch_size=16)
    return torch.cat([flatten_patches(model.embed(batch["image"])) for batch in loader]).float()


def fast_coverage(points: torch.Tensor, centres: torch.Tensor) -> float:
    """The coverage radius via faiss exact search (same value as coreset.coverage_radius, faster)."""
    distances, _ = NearestNeighbours(centres.numpy()).search(points.numpy(), k=1)
    return float(distances.max())


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subsample", type=int, default=100_000)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    features, extract_s = timed(patch_features)
    print(json.dumps({"patches": features.shape[0], "dim": features.shape[1], "extract_s": extract_s}), flush=True)

    generator = torch.Generator().manual_seed(0)
    sub = features[torch.randperm(features.shape[0], generator=generator)[:args.subsample]].contiguous()
    k = int(args.ratio * len(sub))
    plain, plain_s = timed(greedy_kcenter_plain, sub, k)
    exact, exact_s = timed(greedy_kcenter, sub, k, search="exact", progress=False)
    ivf, ivf_s = timed(greedy_kcenter, sub, k, search="ivf", progress=False)
    print(json.dumps({
        "case": f"subsample {len(sub)} -> {k}",
        "plain_s": plain_s, "lazy_exact_s": exact_s, "ivf_s": ivf_s,
        "plain_radius": coverage_radius(sub, sub[plain]), "lazy_exact_radius": coverage_radius(sub, sub[exact]),
        "ivf_radius": coverage_radius(sub, sub[ivf]),
        "lazy_exact_same_indices_as_plain": len(set(plain.tolist()) & set(exact.tolist())) / k,
    }), flush=True)
    if args.full:
        k = int(args.ratio * len(features))
        exact, exact_s = timed(greedy_kcenter, features, k, search="exact", progress=False)
        ivf, ivf_s = timed(greedy_kcenter, features, k, search="ivf", progress=False)
        print(json.dumps({
            "case": f"full {len(features)} -> {k}", "lazy_exact_s": exact_s, "ivf_s": ivf_s,
            "lazy_exact_radius": fast_coverage(features, features[exact]),
            "ivf_radius": fast_coverage(features, features[ivf]),
        }), flush=True)


if __name__ == "__main__":
    main()
