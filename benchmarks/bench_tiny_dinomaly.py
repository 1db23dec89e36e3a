"""Tiny-Dinomaly's efficiency claims (13x less memory, 20x less compute) measured on the architectures.

    .venv/bin/python benchmarks/bench_tiny_dinomaly.py [--threads 2] [--repeats 5]

Three inference graphs, each Dinomaly's (:class:`vadkit.models.dinomaly.DinomalyGraph`: frozen encoder taps,
bottleneck, linear-attention decoder, 1 - cos maps, image score):

* ``dinomaly_paper``: Dinomaly as its paper configures it: ViT-B/14 with 4 registers (timm
  ``vit_base_patch14_reg4_dinov2``), 392-px crop, 8 decoder blocks, taps blocks 2-9. No such checkpoint exists
  offline, so it is built with random weights: parameters, MACs, memory and latency do not depend on them;
* ``dinomaly``: vadkit's Dinomaly default on the offline ViT-S/14 (224 px, 8 decoder blocks);
* ``tiny_dinomaly``: vadkit's Tiny-Dinomaly default (ViT-S/14, 224 px, 4 decoder blocks).

For each: parameters (encoder / decoder, millions), the fp32 model size (MB), MACs per image (vadkit's counter),
the median batch-1 latency, and the memory of a fresh process that builds the graph and scores one image
over the same process with only the code imported (torch, timm, onnx, vadkit): the RSS the weights add, and the peak RSS while
scoring (weights + activations; measured in a subprocess so the three do not share an allocator). Pixel F1 comes
from the foundation grid (``benchmarks/configs/foundation.yaml``). Writes
``benchmarks/results/tiny_dinomaly.json`` and prints a table with the ratios to ``dinomaly_paper``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "tiny_dinomaly.json"

CONFIGS = {
    "dinomaly_paper": {"backbone": "timm:vit_base_patch14_reg4_dinov2", "image_size": 392, "decoder_depth": 8,
                       "pretrained": False},
    "dinomaly": {"backbone": "dinov2_vits14_imgfocus", "image_size": 224, "decoder_depth": 8, "pretrained": True},
    "tiny_dinomaly": {"backbone": "dinov2_vits14_imgfocus", "image_size": 224, "decoder_depth": 4,
                      "pretrained": True},
}


def build(config: dict):
    """The inference graph of ``config`` (eval mode) and its input size."""
    from vadkit.backbones import create_extractor, get_spec
    from vadkit.models.dinomaly import DinomalyDecoder, DinomalyGraph, default_taps

    depth = sum(1 for layer in get_spec(config["backbone"]).layers if layer.startswith("blocks."))
    extractor = create_extractor(config["backbone"], layers=default_taps(depth), pretrained=config["pretrained"])
    dim = next(iter(extractor.channels.values()))
    decoder = DinomalyDecoder(dim, max(1, dim // 64), config["decoder_depth"], 2, 0.2)  # heads as Dinomaly builds them
    return DinomalyGraph(extractor, decoder, 2, 0.01, 4.0).eval(), config["image_size"]


def measure_rss(name: str) -> tuple[float, float]:
    """In a fresh process that builds ``name``'s graph: the RSS (MB) its weights add over torch and vadkit
    imported, and the peak RSS over the same baseline while it scores one image (weights + activations). The
    kernel's peak counter is reset after the build (``clear_refs``), so reading the offline ViT out of its ONNX
    file does not count."""
    code = f"""
import sys, torch
sys.path.insert(0, {str(HERE)!r})
import bench_tiny_dinomaly as bench
import timm, onnx, vadkit.models.dinomaly, vadkit.backbones, vadkit.backbones.onnx_dinov2  # code, not weights
def status(key):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key)) / 1024
base = status("VmRSS:")
graph, side = bench.build(bench.CONFIGS[{name!r}])
image = torch.randn(1, 3, side, side)
import gc; gc.collect()
built = status("VmRSS:")
open("/proc/self/clear_refs", "w").write("5")
with torch.inference_mode():
    graph(image)
print(built - base, status("VmHWM:") - base)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    weights, peak = result.stdout.strip().splitlines()[-1].split()
    return float(weights), float(peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from vadkit.profiling.flops import count_macs

    torch.set_num_threads(args.threads)
    rows = {}
    for name, config in CONFIGS.items():
        graph, side = build(config)
        image = torch.randn(1, 3, side, side)
        encoder = sum(p.numel() for p in graph.extractor.parameters())
        decoder = sum(p.numel() for p in graph.decoder.parameters())
        macs = count_macs(graph, image)
        with torch.inference_mode():
            graph(image)
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                graph(image)
                times.append(time.perf_counter() - started)
        rows[name] = {**config, "encoder_params_m": encoder / 1e6, "decoder_params_m": decoder / 1e6,
                      "size_mb": (encoder + decoder) * 4 / 2**20, "gmacs": macs / 1e9,
                      "latency_ms_b1": 1000 * statistics.median(times)}
        rows[name]["weights_rss_mb"], rows[name]["peak_rss_mb"] = measure_rss(name)
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rows[name].items()}),
              flush=True)
    base = rows["dinomaly_paper"]
    print(f"\n{'graph':16} {'enc M':>7} {'dec M':>7} {'MB':>7} {'GMACs':>7} {'ms b1':>7} {'RSS MB':>7}  "
          "ratios to dinomaly_paper (size, MACs, RSS)")
    for name, row in rows.items():
        print(f"{name:16} {row['encoder_params_m']:7.1f} {row['decoder_params_m']:7.1f} {row['size_mb']:7.0f} "
              f"{row['gmacs']:7.1f} {row['latency_ms_b1']:7.0f} {row['peak_rss_mb']:7.0f}  "
              f"{base['size_mb'] / row['size_mb']:.1f}x {base['gmacs'] / row['gmacs']:.1f}x "
              f"{base['peak_rss_mb'] / row['peak_rss_mb']:.1f}x")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
