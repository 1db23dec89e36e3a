"""Collect every run's JSON sidecar into summary.jsonl and print the per-configuration table.

    /tmp/anomalib_venv/bin/python benchmarks/anomalib_reference/summarize.py [--markdown]

summary.jsonl has one row per run (tagged reruns, e.g. the determinism repeats, are left out): the identity of
the run, every metric vadkit's ``compute_metrics`` gave, fit seconds, predict ms/img and peak RSS. The table
gives each seed and mean ± sample sd (ddof=1) over the seeds of each dataset × method × ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import reference as ref

KEYS = ("name", "dataset", "method", "ratio", "seed", "n_train", "n_test", "memory_bank_rows", "fit_seconds",
        "fit_extract_seconds", "fit_cpu_seconds", "predict_ms_per_image", "peak_rss_mib_after_fit", "peak_rss_mib")
SHOWN = ("image_auroc", "pixel_auroc", "pixel_aupro")


def load_records(folder: Path = ref.RESULTS) -> list[dict]:
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*_seed*.json"))]
    return [r for r in records if not r.get("tag")]


def write_summary(folder: Path = ref.RESULTS) -> list[dict]:
    rows = [{**{k: r.get(k) for k in KEYS}, **r["metrics"], "anomalib": r["versions"]["anomalib"]}
            for r in load_records(folder)]
    rows.sort(key=lambda r: (r["dataset"], r["method"], r["ratio"] or 0, r["seed"]))
    (folder / "summary.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _mean_sd(values: list[float], digits: int = 4) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["method"], r["ratio"]), []).append(r)
    lines = ["| dataset | method | ratio | metric | seed 0 | seed 1 | seed 2 | mean ± sd |",
             "|---|---|---|---|---|---|---|---|"]
    for (dataset, method, ratio), group in groups.items():
        by_seed = {r["seed"]: r for r in group}
        for metric in SHOWN:
            values = [by_seed[s][metric] for s in sorted(by_seed) if metric in by_seed[s]]
            if not values:
                continue
            cells = [f"{by_seed[s][metric]:.4f}" if s in by_seed and metric in by_seed[s] else "-" for s in (0, 1, 2)]
            lines.append(f"| {dataset} | {method} | {ratio if ratio is not None else '-'} | {metric} | "
                         + " | ".join(cells) + f" | {_mean_sd(values)} |")
        for metric, digits in (("fit_seconds", 1), ("fit_cpu_seconds", 1), ("predict_ms_per_image", 1),
                               ("peak_rss_mib", 0)):
            values = [by_seed[s][metric] for s in sorted(by_seed) if by_seed[s].get(metric) is not None]
            cells = [f"{by_seed[s][metric]:.{digits}f}" if by_seed.get(s, {}).get(metric) is not None else "-"
                     for s in (0, 1, 2)]
            lines.append(f"| {dataset} | {method} | {ratio if ratio is not None else '-'} | {metric} | "
                         + " | ".join(cells) + f" | {_mean_sd(values, digits)} |")
    return "\n".join(lines)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    rows = write_summary()
    print(f"{len(rows)} runs -> {ref.RESULTS / 'summary.jsonl'}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
