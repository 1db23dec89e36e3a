"""vadkit against anomalib 2.7.0: PatchCore and PaDiM over seeds, on the same images, as Markdown tables.

    .venv/bin/python benchmarks/compare_anomalib.py [--metric image_auroc]

Reads the runs of ``benchmarks/bench_seeds.py`` (``results/vadkit_seeds/``) and of
``benchmarks/anomalib_reference/`` (``results/anomalib/``): for every dataset and configuration, each
library's image AUROC, pixel AUROC and AU-PRO as mean ± sd over its seeds, and the difference of the means
with a Welch interval over seeds (the training randomness: a paired test on one fitted model per library
ignores it, and a one-seed comparison can show a "significant" gap either way), plus the range of DeLong's
paired test over seed-matched pairs of runs. Metrics are recomputed here with vadkit's metrics from the saved
scores and maps, so both libraries are scored by the same code.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")
#: vadkit config -> (anomalib method, ratio tag) it is compared with
PAIRS = {
    "patchcore_0.01_random": ("patchcore", "0.01"), "patchcore_0.01_mean": ("patchcore", "0.01"),
    "patchcore_0.1_random": ("patchcore", "0.1"), "patchcore_0.1_mean": ("patchcore", "0.1"),
    "padim": ("padim", "none"),
}


def load_runs(folder: Path, pattern: str) -> list[dict]:
    runs = []
    for npz in sorted(folder.glob(pattern)):
        if "_repeat" in npz.stem:
            continue
        with np.load(npz, allow_pickle=False) as data:
            runs.append({"seed": int(npz.stem.rsplit("seed", 1)[1]), "paths": data["paths"].tolist(),
                         "labels": data["labels"], "scores": data["scores"].astype(np.float64),
                         "maps": data["maps"]})
    return runs


def metrics_of(run: dict, masks) -> dict[str, float]:
    from vadkit.metrics import compute_metrics

    values = compute_metrics(run["labels"], run["scores"], masks, run["maps"] if masks is not None else None).values
    return {key: values.get(key, float("nan")) for key in METRICS}


def welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Difference of means b - a and its 95% Welch interval (t quantile from scipy)."""
    from scipy import stats

    a, b = np.asarray(a), np.asarray(b)
    difference = float(b.mean() - a.mean())
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return difference, difference, difference
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return difference, difference - half, difference + half


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_anomalib.json")
    args = parser.parse_args()
    from bench_seeds import DATASETS  # the same datasets as the vadkit runs (benchmarks/ is the script's folder)
    from vadkit.data import Transform, load_mask, load_split
    from vadkit.metrics import delong_test

    rows = []
    for dataset, (layout, root) in DATASETS.items():
        if not root.exists():
            continue
        split = load_split(layout, root)
        transform = Transform(image_size=256)
        has_masks = any(s.mask_path is not None for s in split.test)
        masks = None
        if has_masks:
            masks = np.stack([transform.mask_array(load_mask(s.mask_path)) if s.mask_path is not None
                              else np.zeros((256, 256), bool) for s in split.test])
        for config, (method, ratio) in PAIRS.items():
            ours = load_runs(RESULTS / "vadkit_seeds", f"{dataset}_{config}_seed*.npz")
            theirs = load_runs(RESULTS / "anomalib", f"{dataset}_{method}_{ratio}_seed*.npz")
            if not ours or not theirs:
                continue
            assert ours[0]["paths"] == theirs[0]["paths"], f"{dataset}: the two libraries scored other images"
            row = {"dataset": dataset, "config": config, "seeds_vadkit": [r["seed"] for r in ours],
                   "seeds_anomalib": [r["seed"] for r in theirs]}
            per = {"vadkit": [metrics_of(r, masks) for r in ours], "anomalib": [metrics_of(r, masks) for r in theirs]}
            for key in METRICS:
                a = [m[key] for m in per["anomalib"]]
                b = [m[key] for m in per["vadkit"]]
                if np.isnan(a).any() or np.isnan(b).any():
                    continue
                row[key] = {"vadkit": b, "anomalib": a, "vadkit_mean": float(np.mean(b)),
                            "vadkit_sd": float(np.std(b, ddof=1)) if len(b) > 1 else 0.0,
                            "anomalib_mean": float(np.mean(a)),
                            "anomalib_sd": float(np.std(a, ddof=1)) if len(a) > 1 else 0.0,
                            "welch": welch(a, b) if len(a) > 1 and len(b) > 1 else None}
            tests = []
            for r in ours:
                match = [t for t in theirs if t["seed"] == r["seed"]]
                if match:
                    test = delong_test(r["labels"], match[0]["scores"], r["scores"])
                    tests.append({"seed": r["seed"], "difference": test.difference, "p_value": test.p_value})
            row["delong_by_seed"] = tests
            rows.append(row)
    args.out.write_text(json.dumps(rows, indent=1))

    def cell(entry, library):
        return f"{entry[library + '_mean']:.4f} ± {entry[library + '_sd']:.4f}"

    print("| dataset | vadkit config | metric | vadkit (mean ± sd) | anomalib 2.7.0 (mean ± sd) | vadkit − anomalib "
          "[95% Welch] | DeLong by seed (diff, p) |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for key in METRICS:
            if key not in row:
                continue
            entry = row[key]
            difference = entry["welch"]
            interval = "—" if difference is None else f"{difference[0]:+.4f} [{difference[1]:+.4f}, {difference[2]:+.4f}]"
            delong = "; ".join(f"{t['difference']:+.3f}, {t['p_value']:.2f}" for t in row["delong_by_seed"]) \
                if key == "image_auroc" else ""
            print(f"| {row['dataset']} | {row['config']} | {key} | {cell(entry, 'vadkit')} | {cell(entry, 'anomalib')} "
                  f"| {interval} | {delong} |")

    print_spread()


def print_spread() -> None:
    """vadkit's PatchCore over seeds with either coreset start: the spread before and after issue 11."""
    print("\n| dataset | backbone | coreset | start | seeds | image AUROC mean ± sd | min – max | pixel AUROC mean ± sd |")
    print("|---|---|---|---|---|---|---|---|")
    datasets = ("battery_weld", "magnetic_tile", "mvtec_bottle")
    backbones = (("mobilenet_v2", ""), ("efficientnet_lite0", "lite0_"))  # (name, tag in bench_seeds' configs)
    for dataset, (backbone, tag), ratio, start in itertools.product(datasets, backbones, ("0.01", "0.1"),
                                                                    ("random", "mean")):
        files = sorted((RESULTS / "vadkit_seeds").glob(f"{dataset}_patchcore_{tag}{ratio}_{start}_seed*.json"))
        if len(files) < 2:  # a spread needs seeds
            continue
        runs = [json.loads(f.read_text()) for f in files]
        image = np.array([r["image_auroc"] for r in runs])
        pixel = np.array([r.get("pixel_auroc", float("nan")) for r in runs])
        pixel_cell = "—" if np.isnan(pixel).all() else f"{pixel.mean():.4f} ± {pixel.std(ddof=1):.4f}"
        print(f"| {dataset} | {backbone} | {float(ratio):.0%} | {start} | {len(runs)} | "
              f"{image.mean():.4f} ± {image.std(ddof=1):.4f} | {image.min():.4f} – {image.max():.4f} | {pixel_cell} |")


if __name__ == "__main__":
    main()
