"""Backbone floor: ms per image of the truncated extractor, by batch size, memory format and BatchNorm folding.

The backbone forward pass is the physical floor of most VAD methods (docs/architecture.md, "Performance").
This measures it for the default PatchCore layers (stride 8 + stride 16, network cut after the stride-16
stage) at 256x256 on CPU, for batch 1 / 8 / 32, NCHW vs channels-last, with the BatchNorms as published or
folded into the convolutions (``fuse_batchnorm``), and prints a table; the fastest setting is the
extractor's default (``DEFAULT_CHANNELS_LAST``, ``fuse_batchnorm=True``).

Usage:
    PYTHONPATH=src python benchmarks/backbone_floor.py [--backbones mobilenet_v2 wide_resnet50_2]
        [--batches 1 8 32] [--size 256] [--seconds 4] [--threads N]

Each setting: one warm-up call per format, then NCHW and channels-last calls alternate until ``--seconds``
have passed (at least 3 each); best and median call time divided by the batch size are reported. Weights are random (``pretrained=False``): speed
does not depend on their values.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from vadkit.backbones import create_extractor


VARIANTS = {  # column -> extractor options
    "NCHW": {"channels_last": False, "fuse_batchnorm": False},
    "channels-last": {"channels_last": True, "fuse_batchnorm": False},
    "NCHW folded": {"channels_last": False, "fuse_batchnorm": True},
    "c-last folded": {"channels_last": True, "fuse_batchnorm": True},
}


def time_variants(name: str, batch: int, size: int, seconds: float) -> dict[str, tuple[float, float]]:
    """(best, median) ms per image of every variant, calls interleaved.

    Interleaving the variants call by call means a burst of load from other processes hits all of them
    alike; the best (minimum) time is the least disturbed estimate of the floor on a shared machine.
    """
    extractors = {key: create_extractor(name, pretrained=False, **options) for key, options in VARIANTS.items()}
    x = torch.randn(batch, 3, size, size)
    times: dict[str, list[float]] = {key: [] for key in extractors}
    with torch.inference_mode():
        for extractor in extractors.values():
            extractor(x)  # warm-up (allocator, oneDNN primitive cache)
        start = time.perf_counter()
        while len(times["NCHW"]) < 3 or time.perf_counter() - start < seconds:
            for key, extractor in extractors.items():
                t0 = time.perf_counter()
                extractor(x)
                times[key].append(time.perf_counter() - t0)
    return {key: (1000 * min(t) / batch, 1000 * statistics.median(t) / batch) for key, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=["mobilenet_v2", "wide_resnet50_2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other processes share these cores)")
    print("ms/img, best / median of interleaved calls")
    print(f"{'backbone':<18}{'batch':>6}" + "".join(f"{key:>18}" for key in VARIANTS))
    for name in args.backbones:
        for batch in args.batches:
            res = time_variants(name, batch, args.size, args.seconds)
            cells = "".join(f"{f'{b:.1f} / {m:.1f}':>18}" for b, m in res.values())
            print(f"{name:<18}{batch:>6}{cells}", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
