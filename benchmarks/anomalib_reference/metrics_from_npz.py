"""Image AUROC, pixel AUROC and AU-PRO of saved anomalib reference runs, recomputed in the vadkit venv.

    .venv/bin/python benchmarks/anomalib_reference/metrics_from_npz.py battery_weld_cfa_steps200_seed0 ...
    .venv/bin/python benchmarks/anomalib_reference/metrics_from_npz.py --glob 'battery_weld_*_steps*_seed*'

Each run's ``.npz`` (``results/anomalib/<name>.npz``: paths, labels, raw scores float32, raw maps float16) is scored
with vadkit's ``compute_metrics`` against vadkit's masks (``Transform(256).mask_array``), the way
``benchmarks/compare_anomalib.py`` scores both libraries (so the float16 maps, not the float32 ones the run scored
in-process: pixel metrics may differ from the run's JSON in the 4th decimal). Checks that the npz lists exactly
vadkit's test images in vadkit's order. Prints a Markdown table; ``--json`` also writes it to
``results/anomalib/metrics_from_npz.json``.
"""

from __future__ import annotations

import argparse
import json

import numpy as np

import reference as ref

KEYS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run names (npz stems) in results/anomalib/")
    parser.add_argument("--glob", help="or a glob of npz stems")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from vadkit.metrics import compute_metrics

    stems = list(args.names)
    if args.glob:
        stems += [p.stem for p in sorted(ref.RESULTS.glob(args.glob + ".npz"))]
    rows, masks_cache = [], {}
    for stem in stems:
        record = json.loads((ref.RESULTS / f"{stem}.json").read_text())
        dataset = record["dataset"]
        if dataset not in masks_cache:
            split = ref.load_split(dataset)
            masks_cache[dataset] = ([str(s.image_path) for s in split.test],
                                    ref.masks_for(split.test) if ref.USE_MASKS[dataset] else None)
        paths, masks = masks_cache[dataset]
        with np.load(ref.RESULTS / f"{stem}.npz", allow_pickle=False) as data:
            if data["paths"].tolist() != paths:
                raise SystemExit(f"{stem}: not vadkit's test images in vadkit's order")
            labels, scores, maps = data["labels"], data["scores"].astype(np.float64), data["maps"]
        values = compute_metrics(labels, scores, masks, maps if masks is not None else None).values
        rows.append({"name": stem, "method": record["method"], "steps": record["steps"], "seed": record["seed"],
                     "batch_size": record["params"]["batch_size"], "fit_seconds": record["fit_seconds"],
                     **{k: values.get(k, float("nan")) for k in KEYS}})
    print("| run | method | steps | batch | fit s | image AUROC | pixel AUROC | AU-PRO |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['method']} | {r['steps']} | {r['batch_size']} | {r['fit_seconds']:.0f} | "
              f"{r['image_auroc']:.4f} | {r['pixel_auroc']:.4f} | {r['pixel_aupro']:.4f} |")
    if args.json:
        (ref.RESULTS / "metrics_from_npz.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
