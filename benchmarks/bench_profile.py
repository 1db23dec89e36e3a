"""Efficiency profile of PatchCore, PatchCore-Lite, PaDiM and PaDiM-Lite (diagonal covariance) on MVTec AD bottle.

    PYTHONPATH=src python benchmarks/bench_profile.py [--data ../shared/datasets/mvtec_bottle/bottle]
        [--repeats 20] [--threads N] [--batch-size 8] [--jsonl results/profile.jsonl]

Each method runs in its own process through ``vadkit profile ... --json`` (so peak RSS and caches belong to
that method alone), fitted with its default parameters on the category's training images and timed on its
test images (``vadkit.profiling``: median and p95 after warm-up, threads pinned, the backbone forward timed
in alternation for the ratio). Prints a markdown table (plus the machine, date and command).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

SHARED = Path(os.environ.get("VADKIT_SHARED_DATASETS",
                            Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
DEFAULT_DATA = SHARED / "mvtec_bottle" / "bottle"
METHODS = {
    "patchcore": ("patchcore", []),
    "patchcore-lite": ("patchcore_lite", []),
    "padim (full)": ("padim", ["covariance=full"]),
    "padim-lite (diagonal)": ("padim", ["covariance=diagonal"]),
}
COLUMNS = ("method", "params M", "GMACs (torch)", "GMACs backbone", "bank MiB", "file MiB", "fit s",
           "peak RSS fit MiB (+Δ)", "peak RSS predict MiB (+Δ)", "b1 ms (p95)", "bN ms/img (p95)",
           "backbone b1 ms", "backbone bN ms/img", "ratio b1", "ratio bN")


def profile(model: str, params: list[str], args) -> dict:
    command = [sys.executable, "-m", "vadkit.cli", "profile", model, "--data", str(args.data), "--layout", "mvtec",
               "--repeats", str(args.repeats), "--batch-size", str(args.batch_size), "--json"]
    command += [item for param in params for item in ("--param", param)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout)


def row(label: str, f: dict) -> list[str]:
    mib = 2**20
    return [
        label, f"{f['params'] / 1e6:.2f}", f"{f['macs'] / 1e9:.3f}", f"{f['macs_backbone'] / 1e9:.3f}",
        f"{f['bank_bytes'] / mib:.2f}", f"{f['file_bytes'] / mib:.2f}", f"{f['fit_seconds']:.1f}",
        f"{f['peak_rss_fit_mb']:.0f} (+{f['peak_rss_fit_delta_mb']:.0f})",
        f"{f['peak_rss_predict_mb']:.0f} (+{f['peak_rss_predict_delta_mb']:.0f})",
        f"{f['latency_ms_b1']:.1f} ({f['latency_p95_ms_b1']:.1f})",
        f"{f['latency_ms_bN']:.1f} ({f['latency_p95_ms_bN']:.1f})",
        f"{f['backbone_ms_b1']:.1f}", f"{f['backbone_ms_bN']:.1f}",
        f"{f['latency_ratio_b1']:.2f}", f"{f['latency_ratio_bN']:.2f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--jsonl", type=Path, default=None, help="Also append every profile to this file.")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"dataset not found: {args.data} (set VADKIT_SHARED_DATASETS or pass --data)")
    results = {label: profile(model, params, args) for label, (model, params) in METHODS.items()}
    first = next(iter(results.values()))
    print(f"{datetime.date.today()}, {first['cpu']}, {first['threads']} thread(s), torch {first['torch_version']}, "
          f"{first['image_size']} px, {first['memory_format']}, {first['n_train']} training images, batch N = "
          f"{first['batch_n']}, median of {first['repeats']} after {first['warmup']} warm-up, RSS method "
          f"{first['rss_method']}")
    print(f"command: python benchmarks/bench_profile.py {' '.join(sys.argv[1:])}".rstrip())
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for label, figures in results.items():
        print("| " + " | ".join(row(label, figures)) + " |")
    print()
    for label, figures in results.items():
        print(f"- {label}: MACs {figures['macs_uncounted']}")
    if args.jsonl:
        args.jsonl.parent.mkdir(parents=True, exist_ok=True)
        with args.jsonl.open("a") as handle:
            for label, figures in results.items():
                handle.write(json.dumps({"method": label, **figures}) + "\n")


if __name__ == "__main__":
    main()
