"""Do two `vadkit bench run` folders hold the same results? Compares results.csv row by row.

    .venv/bin/python benchmarks/compare_bench_runs.py runs/edge runs/edge_ray

The key columns (dataset, method, backbone, seed, status) and every registered metric are compared as the CSV
strings (so "identical" means to the last printed digit); efficiency columns are timings and are left out.
Exits 1 when a row differs, printing the first differing columns of each such row.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from vadkit.bench.results import KEY_COLUMNS, metric_columns


def read(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    args = parser.parse_args()
    a, b = read(args.run_a), read(args.run_b)
    if len(a) != len(b):
        print(f"different grids: {len(a)} rows against {len(b)}")
        return 1
    columns = KEY_COLUMNS + metric_columns()
    differing = 0
    for row_a, row_b in zip(a, b):
        changed = [(c, row_a[c], row_b[c]) for c in columns if row_a[c] != row_b[c]]
        if changed:
            differing += 1
            print(row_a["dataset"], row_a["method"], row_a["backbone"], row_a["seed"], changed[:4])
    print(f"{len(a) - differing} of {len(a)} rows identical in {len(columns)} key and metric columns")
    return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
