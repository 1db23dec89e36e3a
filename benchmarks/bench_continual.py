"""Continual strategies side by side on one real task stream: final accuracy, forgetting, memory, time.

    .venv/bin/python benchmarks/bench_continual.py [--runs stfpm-finetune stfpm-replay ...] [--threads 2]
    .venv/bin/python benchmarks/bench_continual.py --summary      # the table from the results already written

The stream is ``benchmarks/configs/continual.yaml``'s (mvtec_bottle -> battery_weld -> magnetic_tile); each run
replaces its method, method parameters, strategy and strategy parameters (:data:`RUNS`) and goes through
:func:`vadkit.continual.run_stream`, exactly what ``vadkit continual run`` does with that config. One process per run
(a fresh interpreter: no allocator state carried between runs). Each run writes
``benchmarks/results/continual/<run>/`` (results.json, results.md, r_matrix.png); the summary reads every
results.json there and prints one Markdown row per run: final average image and pixel AUROC (over the three tasks
after the last), mean forgetting and BWT of image AUROC, task-identification accuracy (prototype / min-score rule,
averaged over the tasks after the last), memory held after the last task (learned state + replay memory or other
banks; the frozen backbone is not counted), and training seconds summed over the tasks.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "configs" / "continual.yaml"
OUT = HERE / "results" / "continual"

#: STFPM (and AdapTS) budget per task: 100 steps (batch 32) reaches 0.94-0.95 image AUROC alone on battery_weld (BENCHMARKS.md,
#: issue 12), and keeps six three-task runs within an hour on 2 cores
STFPM = {"max_steps": 100}
#: raw replay: 40 images of 256 x 256 x 3 bytes = 7.5 MiB; compressed replay gets 1 MB (13% of it)
RUNS: dict[str, tuple[str, dict, str, dict]] = {
    "stfpm-finetune": ("stfpm", STFPM, "finetune", {}),
    "stfpm-replay": ("stfpm", STFPM, "replay", {"budget_images": 40}),
    "stfpm-compressed-q90": ("stfpm", STFPM, "compressed_replay", {"budget_bytes": 1_000_000, "quality": 90}),
    "stfpm-compressed-q50": ("stfpm", STFPM, "compressed_replay", {"budget_bytes": 1_000_000, "quality": 50}),
    "stfpm-joint": ("stfpm", STFPM, "joint", {}),
    "adapts-adapters": ("adapts", STFPM, "adapters", {}),
    "patchcore-banks-prototype": ("patchcore", {}, "task_banks", {"budget_patches": 20000, "selection": "prototype"}),
    "patchcore-banks-min-score": ("patchcore", {}, "task_banks", {"budget_patches": 20000, "selection": "min_score"}),
    "patchcore-joint": ("patchcore", {}, "joint", {}),
}


def run_one(name: str, threads: int) -> Path:
    from vadkit.continual import TaskStream, make_strategy, run_stream, write_results
    from vadkit.continual.config import load_config
    from vadkit.threads import set_threads

    set_threads(threads)
    config = load_config(CONFIG)
    method, method_params, strategy, params = RUNS[name]
    results = run_stream(TaskStream.from_specs(config.tasks), make_strategy(strategy, method, method_params, params),
                         metrics=config.metrics, progress=True, info={"name": name, "config": str(CONFIG)})
    write_results(results, OUT / name)
    return OUT / name


def summary() -> str:
    def number(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    lines = ["| run | strategy | final image AUROC | final pixel AUROC | forgetting (image) | BWT (image) | "
             "task id (prototype / min-score) | memory after task 3 (MiB) | training (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in RUNS:
        path = OUT / name / "results.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        ids = data["task_id_accuracy"]
        task_id = " / ".join(number(ids[rule]["average"][-1], 2) if rule in ids else "-"
                             for rule in ("prototype", "min_score")) if ids else "-"
        params = ", ".join(f"{k}={v}" for k, v in data["strategy_params"].items())
        lines.append(f"| {name} | {data['strategy']}{f' ({params})' if params else ''} | "
                     f"{number(data['final_average']['image_auroc'])} | {number(data['final_average']['pixel_auroc'])} | "
                     f"{number(data['forgetting']['image_auroc']['mean'])} | {number(data['bwt']['image_auroc'])} | "
                     f"{task_id} | {data['memory_bytes'][-1] / 2**20:.2f} | {sum(data['train_seconds']):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--summary", action="store_true", help="print the table of the results already written")
    parser.add_argument("--one", choices=list(RUNS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(run_one(args.one, args.threads))
        return
    if not args.summary:
        for name in args.runs:
            subprocess.run([sys.executable, __file__, "--one", name, "--threads", str(args.threads)], check=True)
    print(summary())


if __name__ == "__main__":
    main()
