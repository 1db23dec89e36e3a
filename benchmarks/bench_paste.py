"""PaSTe's efficiency claims against STFPM, measured on this machine: training step time, training memory,
inference latency, MACs and parameters.

    .venv/bin/python benchmarks/bench_paste.py [--threads 2] [--batch 32] [--steps 8]

Barusco et al. (2024) claim, against STFPM: -25% inference time, -33% training time, -76% peak training
memory. Three configurations, all MobileNetV2 at 256 x 256, each in its own process (so that its peak memory
is its own):

* ``stfpm``: STFPM with vadkit's default taps (features.3 / .6 / .13, the stage ends);
* ``stfpm_paste_layers``: STFPM tapping PaSTe's layers (features.7 / .10 / .14), the student from the image;
* ``paste``: PaSTe, the same taps, the student re-training features.7 .. .14 only, fed by the shared
  features.0 .. .6.

Per configuration: training step time per image (teacher forward, student forward, loss, backward, SGD step;
median of ``--steps`` after 2 warm-ups, on one preloaded batch), the peak resident memory those steps add
(:class:`vadkit.profiling.memory.PeakRSS`, reset before them), inference latency per image at batch 1 and 8
(median of 20 after 3 warm-ups), MACs per image of the inference module (torch's counter) and the trainable
parameters. Accuracy at equal budget comes from ``bench_trained.py``. Results: ``results/paste_claims.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CONFIGS = {
    "stfpm": ("stfpm", {}),
    "stfpm_paste_layers": ("stfpm", {"layers": ["features.7", "features.10", "features.14"]}),
    "paste": ("paste", {}),
}


def measure(config: str, threads: int, batch: int, steps: int) -> dict:
    import torch

    import vadkit
    from vadkit.profiling.flops import count_macs
    from vadkit.profiling.memory import PeakRSS
    from vadkit.threads import set_threads

    set_threads(threads)
    name, params = CONFIGS[config]
    model = vadkit.create_model(name, image_size=256, **params)
    model.extractor
    torch.manual_seed(0)
    model.build_networks()
    model.input_size_, model.fitted = [256, 256], True
    images = torch.randn(batch, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    optimizer, _ = model.configure_optimizer(None)
    times = []
    with PeakRSS() as peak:
        for i in range(steps + 2):
            model.train_mode(True)
            start = time.perf_counter()
            loss = model.training_step(images)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i >= 2:
                times.append(time.perf_counter() - start)
    model.train_mode(False)
    module = model.inference_module()
    latency = {}
    with torch.inference_mode():
        for size in (1, 8):
            x = images[:size]
            for _ in range(3):
                module(x)
            samples = []
            for _ in range(20):
                start = time.perf_counter()
                module(x)
                samples.append(time.perf_counter() - start)
            latency[size] = 1000 * float(np.median(samples)) / size
    return {"config": config, "model": name, "layers": model.chosen_layers(),
            "shared_layer": model.shared_layer_() if name == "paste" else None,
            "train_ms_per_image": 1000 * float(np.median(times)) / batch, "train_peak_rss_mb": peak.peak_mb,
            "train_delta_rss_mb": peak.delta_mb, "rss_method": peak.method, "latency_ms_b1": latency[1],
            "latency_ms_b8": latency[8], "macs": count_macs(module, images[:1]),
            "trainable_params": sum(p.numel() for p in model.trainable_parameters()),
            "threads": threads, "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "paste_claims.json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.threads, args.batch, args.steps)))
        return
    rows = []
    for config in CONFIGS:
        out = subprocess.run([sys.executable, __file__, "--one", config, "--threads", str(args.threads), "--batch",
                              str(args.batch), "--steps", str(args.steps)], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]
    for row in rows[1:]:
        for key in ("train_ms_per_image", "train_delta_rss_mb", "latency_ms_b1", "latency_ms_b8", "macs"):
            row[f"{key}_vs_stfpm"] = row[key] / base[key] - 1 if base[key] else None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
