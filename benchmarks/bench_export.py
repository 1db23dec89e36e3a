"""Exported models against PyTorch: parity, size, latency and accuracy of fp32 and int8 ONNX bundles.

    .venv/bin/python benchmarks/bench_export.py [--dataset battery_weld] [--methods patchcore padim stfpm]
        [--threads 2] [--calibration-images 32]

Per method: fitted on the dataset's training normals (trained methods at their default budget), exported
(:func:`vadkit.edge.export_model`), quantised to int8 on up to ``--calibration-images`` training normals
(:func:`vadkit.edge.quantize_bundle`), then the PyTorch model, the fp32 bundle and the int8 bundle are run on
the whole test split: image AUROC, pixel AUROC, the largest score / map differences from PyTorch (relative to
the output's scale), the model size (the .vad file; the ONNX files) and latency per image at batch 1 and 8
(median of ``--repeats`` timed calls on preprocessed images, after a warm-up; onnxruntime and torch with the
same thread count). Writes ``benchmarks/results/export/<dataset>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_model import DATASETS


def median_ms(call, batch: np.ndarray, repeats: int) -> float:
    call(batch)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3 / len(batch)


def run(dataset: str, methods: list[str], threads: int, calibration_images: int, calibrations: list[str],
        repeats: int, out: Path) -> list:
    import torch

    import vadkit
    from vadkit.data import ImageDataset, load_split
    from vadkit.edge import Runtime, export_model, quantize_bundle
    from vadkit.edge.bundle import ONNX_NAME
    from vadkit.edge.parity import compare_outputs
    from vadkit.metrics import auroc
    from vadkit.metrics.pixel import pixel_auroc

    layout, root = DATASETS[dataset]
    split = load_split(layout, root)
    labels = np.array([s.label for s in split.test])
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="bench_export_"))
    for method in methods:
        model = vadkit.create_model(method).fit(split.train, progress=False)
        model_file = model.save(scratch / f"{method}.vad")
        test = ImageDataset(split.test, model.transform)
        masks = test.masks_array() if test.has_masks else None
        fp32 = export_model(model, scratch / method)
        step = max(1, len(split.train) // calibration_images)
        calibration = [s.image_path for s in split.train][::step][:calibration_images]
        int8 = {calibrate: quantize_bundle(fp32, scratch / f"{method}_int8_{calibrate}", calibration, method=calibrate)
                for calibrate in calibrations}
        arrays = np.stack([test[i]["image"].numpy() for i in range(len(test))])
        reference = model.predict(torch.from_numpy(arrays), progress=False)
        batch1, batch8 = arrays[:1], arrays[:8]

        def torch_call(batch):
            with torch.inference_mode():
                model.predict(torch.from_numpy(batch), batch_size=len(batch), progress=False)

        variants = [("pytorch", None, torch_call, reference.scores, reference.maps, model_file.stat().st_size)]
        for precision, bundle in (("onnx fp32", fp32), *((f"onnx int8 {c}", b) for c, b in int8.items())):
            runtime = Runtime(bundle, threads=threads)
            scores, maps = zip(*(runtime.run(arrays[i:i + 8]) for i in range(0, len(arrays), 8)))
            variants.append((precision, runtime, runtime.run, np.concatenate(scores), np.concatenate(maps),
                             (bundle / ONNX_NAME).stat().st_size))
        for name, _, call, scores, maps, size in variants:
            row = {"dataset": dataset, "method": method, "variant": name, "bytes": size,
                   "image_auroc": auroc(labels, scores),
                   "pixel_auroc": None if masks is None else pixel_auroc(masks, maps),
                   **({} if name == "pytorch" else compare_outputs(reference.scores, reference.maps, scores, maps)),
                   "ms_batch1": median_ms(call, batch1, repeats), "ms_batch8": median_ms(call, batch8, max(3, repeats // 4))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{dataset}.json").write_text(json.dumps(rows, indent=2))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| dataset | method | variant | size MiB | image AUROC | pixel AUROC | score max rel diff | "
             "map max rel diff | ms/img batch 1 | ms/img batch 8 |", "|" + "---|" * 10]
    for r in rows:
        rel = lambda key: "-" if key not in r else f"{r[key]:.1e}"  # noqa: E731
        pixel = "-" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.3f}"
        lines.append(f"| {r['dataset']} | {r['method']} | {r['variant']} | {r['bytes'] / 2**20:.1f} | "
                     f"{r['image_auroc']:.3f} | {pixel} | {rel('score_max_rel')} | {rel('map_max_rel')} | "
                     f"{r['ms_batch1']:.1f} | {r['ms_batch8']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="battery_weld", choices=sorted(DATASETS))
    parser.add_argument("--methods", nargs="+", default=["patchcore", "padim", "stfpm"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-images", type=int, default=32)
    parser.add_argument("--calibrations", nargs="+", default=["minmax", "percentile"],
                        help="int8 calibration methods, one int8 bundle each")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export")
    args = parser.parse_args()
    from vadkit.threads import set_threads

    set_threads(args.threads)
    print(table(run(args.dataset, args.methods, args.threads, args.calibration_images, args.calibrations,
                    args.repeats, args.out)))


if __name__ == "__main__":
    main()
