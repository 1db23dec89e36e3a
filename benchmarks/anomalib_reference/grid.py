"""Run the whole reference grid, one process per run, skipping runs whose results already exist.

    nice -n 10 /tmp/anomalib_venv/bin/python benchmarks/anomalib_reference/grid.py [--dry-run] [--only DATASET]

Order: quick runs first (battery_weld, every PaDiM, PatchCore 1%), then the slow greedy coresets. Each run is
``run.py`` in a fresh process (so ``ru_maxrss`` is that run's own peak), its log in results/anomalib/logs/.
The battery_weld seed-0 runs are repeated (tag ``repeat``) right after the battery_weld grid, for
check_determinism.py. summary.jsonl is rewritten after every run.

magnetic_tile PatchCore 10% is not in the grid: measured 0.65-1 s per greedy iteration for 77,925 iterations
(779,264 patches), i.e. 14-22 hours per seed on this 2-core machine (see README.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import reference as ref
from run import run_name
from summarize import write_summary

SEEDS = (0, 1, 2)
GRID = [  # (dataset, method, ratio), in the order they run
    ("battery_weld", "patchcore", 0.01), ("battery_weld", "patchcore", 0.1), ("battery_weld", "padim", None),
    ("mvtec_bottle", "padim", None), ("mvtec_bottle", "patchcore", 0.01),
    ("magnetic_tile", "padim", None), ("magnetic_tile", "patchcore", 0.01),
    ("mvtec_bottle", "patchcore", 0.1),
]
REPEATS = [("battery_weld", "patchcore", 0.01), ("battery_weld", "patchcore", 0.1), ("battery_weld", "padim", None)]


def runs():
    """Every (dataset, method, ratio, seed, tag); the determinism repeats right after the battery_weld runs."""
    for i, (dataset, method, ratio) in enumerate(GRID):
        for seed in SEEDS:
            yield dataset, method, ratio, seed, ""
        if i == len(REPEATS) - 1:
            for repeat in REPEATS:
                yield *repeat, 0, "repeat"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--only", choices=sorted(ref.DATASETS))
    args = parser.parse_args()
    logs = ref.RESULTS / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TQDM_MININTERVAL": "30"}  # anomalib's coreset tqdm bar: one line per 30 s in the log
    for dataset, method, ratio, seed, tag in runs():
        if args.only and dataset != args.only:
            continue
        name = run_name(dataset, method, ratio, seed, tag)
        if (ref.RESULTS / f"{name}.json").exists():
            print(f"skip {name} (done)", flush=True)
            continue
        cmd = [sys.executable, str(ref.HERE / "run.py"), "--dataset", dataset, "--method", method,
               "--seed", str(seed)] + (["--ratio", str(ratio)] if ratio is not None else []) + (
               ["--tag", tag] if tag else [])
        print(f"{time.strftime('%H:%M:%S')} run {name}", flush=True)
        if args.dry_run:
            continue
        with open(logs / f"{name}.log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ref.HERE)
        print(f"{time.strftime('%H:%M:%S')} {'done' if code == 0 else f'FAILED ({code})'} {name}", flush=True)
        write_summary()
    write_summary()


if __name__ == "__main__":
    main()
