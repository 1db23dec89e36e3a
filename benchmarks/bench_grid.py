"""The BENCHMARKS.md grid: PatchCore (10%, 1%), PaDiM and PaDiM-diagonal with mobilenet_v2 on the shared
datasets, one process per cell; prints a markdown table and writes benchmarks/results/grid.jsonl.

    python benchmarks/bench_grid.py [--datasets magnetic_tile mvtec_bottle battery_weld]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CELLS = [
    ("patchcore", ["coreset_ratio=0.1"]),
    ("patchcore", ["coreset_ratio=0.01"]),
    ("padim", ["covariance=full"]),
    ("padim", ["covariance=diagonal"]),
]


def fmt(value, digits=3):
    return "—" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", nargs="+", default=["magnetic_tile", "mvtec_bottle", "battery_weld"])
    args = parser.parse_args()
    out = HERE / "results" / "grid.jsonl"
    out.parent.mkdir(exist_ok=True)
    rows = []
    for dataset in args.datasets:
        for model, params in CELLS:
            command = [sys.executable, str(HERE / "bench_model.py"), "--dataset", dataset, "--model", model]
            command += [arg for p in params for arg in ("--param", p)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            with out.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| dataset | method | image AUROC | pixel AUROC | AU-PRO | fit s | extract s | fit/floor | "
          "predict ms/img | extract ms/img | predict/floor | peak RSS MB | model MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        method = f"{r['model']} " + " ".join(f"{k}={v}" for k, v in r["params"].items())
        print(f"| {r['dataset']} | {method} | {fmt(r['image_auroc'])} | {fmt(r['pixel_auroc'])} | "
              f"{fmt(r['pixel_aupro'])} | {r['fit_s']:.1f} | {r['extract_train_s']:.1f} | "
              f"{r['fit_over_floor']:.2f} | {r['predict_ms']:.1f} | {r['extract_ms']:.1f} | "
              f"{r['predict_over_floor']:.2f} | {r['peak_rss_mb']:.0f} | {r['model_mb']:.1f} |")


if __name__ == "__main__":
    main()
