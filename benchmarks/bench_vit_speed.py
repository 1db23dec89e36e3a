"""How fast the offline ViT-S/14 runs on this CPU, and which way of running it is fastest.

    .venv/bin/python benchmarks/bench_vit_speed.py [--sizes 224 336 448] [--batches 1 8] [--threads 2]

The forward pass of the ViT (up to ``blocks.6``, the offline ViT's default tap, and up to ``blocks.11``, what MuSc and
Dinomaly's deepest taps need) is the floor of every foundation-model method. Variants, each timed as the median of
``--repeats`` runs after warm-up, in one process:

* ``eager``: the extractor as vadkit builds it (timm's attention calls ``F.scaled_dot_product_attention``);
* ``math``: the same with timm's fused attention switched off (explicit softmax(q k^T) v): what SDPA saves;
* ``bf16``: the eager extractor under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (pays off only where
  oneDNN has bf16 kernels: CPUs with AVX-512 BF16 or AMX; the development machine has neither and runs it 7x slower);
* ``onnxruntime``: the extractor exported to ONNX by vadkit's exporter path (torch.export + dynamo) and run by
  onnxruntime (fp32, the threads given).

Also: the MACs per image (vadkit's counter) and the output's largest relative difference from ``eager``, so a
faster variant that changes the features shows it. MobileNetV2 up to stride 16 at 256 px (the PatchCore default's
floor) is timed beside it. Writes ``benchmarks/results/vit_speed.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "vit_speed.json"


def timed(run, repeats: int) -> float:
    run()
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def set_fused_attention(extractor, fused: bool) -> None:
    for module in extractor.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


def onnx_session(extractor, size: int, threads: int):
    import onnxruntime

    class Tap(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return list(self.inner(x).values())[-1]

    path = Path(tempfile.mkdtemp()) / "vit.onnx"
    with torch.no_grad():
        program = torch.onnx.export(Tap(extractor).eval(), (torch.randn(2, 3, size, size),), dynamo=True,
                                    opset_version=18, dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                    external_data=False)
    program.save(str(path))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[224, 336, 448])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--layers", nargs="+", default=["blocks.6", "blocks.11"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(HERE.parent / "src"))
    from vadkit.backbones import create_extractor
    from vadkit.profiling.flops import count_macs

    rows = []
    cnn = create_extractor("mobilenet_v2")
    for batch in args.batches:
        x = torch.randn(batch, 3, 256, 256)
        with torch.inference_mode():
            seconds = timed(lambda: cnn(x), args.repeats)
        rows.append({"backbone": "mobilenet_v2", "layer": "features.13", "size": 256, "batch": batch,
                     "variant": "eager", "ms_per_image": 1000 * seconds / batch,
                     "gmacs": count_macs(cnn, x[:1]) / 1e9, "max_rel_diff": 0.0})
        print(json.dumps(rows[-1]), flush=True)
    for layer in args.layers:
        extractor = create_extractor("dinov2_vits14_imgfocus", [layer])
        for size in args.sizes:
            session = onnx_session(extractor, size, args.threads)
            gmacs = count_macs(extractor, torch.randn(1, 3, size, size)) / 1e9
            for batch in args.batches:
                x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
                with torch.inference_mode():
                    reference = extractor(x)[layer]
                variants = {}

                def eager():
                    with torch.inference_mode():
                        return extractor(x)[layer]

                def bf16():
                    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                        return extractor(x)[layer].float()

                variants["eager"] = eager
                variants["bf16"] = bf16
                variants["onnxruntime"] = lambda: torch.from_numpy(session.run(None, {session.get_inputs()[0].name:
                                                                                      x.numpy()})[0])
                for name, run in variants.items():
                    seconds = timed(run, args.repeats)
                    out = run()
                    diff = float((out - reference).abs().max() / reference.abs().max())
                    rows.append({"backbone": "dinov2_vits14_imgfocus", "layer": layer, "size": size, "batch": batch,
                                 "variant": name, "ms_per_image": 1000 * seconds / batch, "gmacs": gmacs,
                                 "max_rel_diff": diff})
                    print(json.dumps(rows[-1]), flush=True)
                set_fused_attention(extractor, False)
                seconds = timed(eager, args.repeats)
                set_fused_attention(extractor, True)
                rows.append({"backbone": "dinov2_vits14_imgfocus", "layer": layer, "size": size, "batch": batch,
                             "variant": "math", "ms_per_image": 1000 * seconds / batch, "gmacs": gmacs,
                             "max_rel_diff": 0.0})
                print(json.dumps(rows[-1]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__, "rows": rows}, indent=1))
    print("\n| backbone | layer | size | batch | variant | ms/img | GMACs | max rel diff |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backbone']} | {r['layer']} | {r['size']} | {r['batch']} | {r['variant']} | "
              f"{r['ms_per_image']:.1f} | {r['gmacs']:.2f} | {r['max_rel_diff']:.1e} |")


if __name__ == "__main__":
    main()
