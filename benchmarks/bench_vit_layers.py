"""Which ViT layer to compare patches on: AnomalyDINO per layer, shots and seed, on every shared dataset.

    .venv/bin/python benchmarks/bench_vit_layers.py [--datasets battery_weld magnetic_tile mvtec_bottle]
        [--sizes 224] [--layers blocks.4 ... norm] [--shots 1 4 16 0] [--seeds 0 1 2] [--backbone dinov2_vits14_imgfocus]

The offline ViT (``dinov2_vits14_imgfocus``) may have been fine-tuned for saliency, so its default layer is
chosen by measurement, not taken from the paper (which reads the final LayerNorm of the official DINOv2).
Every configuration runs the real :class:`~vadkit.models.anomalydino.AnomalyDINO` (fit + predict + vadkit's
metrics); the backbone's forward pass is shared between configurations by a caching extractor (one forward of
every image with every candidate layer, kept in float16, returned in float32 to the model), so the study costs
one pass over each dataset per input size. Shots 0 = the whole training split; few-shot draws use the seeds. A
layer given as ``blocks.6+blocks.8`` compares the two layers' features concatenated (AnomalyDINO's ``layers``).

Writes ``benchmarks/results/vit_layers/<dataset>_<size>.json`` (one row per layer x shots x seed) and prints a
table of image AUROC, pixel AUROC and AU-PRO per layer: the mean over seeds per dataset, and the mean over
datasets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_seeds import DATASETS  # noqa: E402 - the shared datasets, located once

OUT = HERE / "results" / "vit_layers"
DEFAULT_LAYERS = [f"blocks.{i}" for i in range(3, 12)] + ["norm"]


class CachedExtractor(torch.nn.Module):
    """The real extractor with every candidate layer, run once per distinct image (keyed by its bytes)."""

    def __init__(self, extractor, layers: list[str]) -> None:
        super().__init__()
        self.extractor, self.layers = extractor, layers
        self.weights_source, self.weights_sha256 = extractor.weights_source, extractor.weights_sha256
        self.patch_size, self.strides = extractor.patch_size, extractor.strides
        self.cache: dict[bytes, dict[str, torch.Tensor]] = {}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        keys = [hashlib.sha1(image.numpy().tobytes()).digest() for image in images]
        missing = [i for i, key in enumerate(keys) if key not in self.cache]
        if missing:
            with torch.inference_mode():
                features = self.extractor(images[missing])
            for j, i in enumerate(missing):
                self.cache[keys[i]] = {layer: features[layer][j].half() for layer in self.layers}
        return {layer: torch.stack([self.cache[key][layer] for key in keys]).float() for layer in self.layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[224])
    parser.add_argument("--layers", nargs="+", default=DEFAULT_LAYERS)
    parser.add_argument("--shots", nargs="+", type=int, default=[1, 4, 16, 0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--backbone", default="dinov2_vits14_imgfocus")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from vadkit.backbones import create_extractor
    from vadkit.data import ImageDataset, load_split
    from vadkit.metrics import compute_metrics
    from vadkit.models import create_model

    OUT.mkdir(parents=True, exist_ok=True)
    taps = list(dict.fromkeys(tap for layer in args.layers for tap in layer.split("+")))
    extractor = create_extractor(args.backbone, taps)
    summary: dict[tuple[str, int], list[dict]] = {}
    for dataset in args.datasets:
        layout, root = DATASETS[dataset]
        split = load_split(layout, root)
        for size in args.sizes:
            cached = CachedExtractor(extractor, taps)
            rows = []
            for layer in args.layers:
                for shots in args.shots:
                    for seed in (args.seeds if shots else [0]):
                        model = create_model("anomalydino", backbone=args.backbone, layers=layer.split("+"), image_size=size,
                                             shots=shots or None, seed=seed)
                        model._extractor = cached
                        test = ImageDataset(split.test, model.transform)
                        start = time.perf_counter()
                        model.fit(split.train, progress=False)
                        prediction = model.predict(test, progress=False)
                        masks = test.masks_array() if test.has_masks else None
                        metrics = compute_metrics(test.labels, prediction.scores, masks, prediction.maps).as_dict()
                        row = {"dataset": dataset, "size": size, "layer": layer, "shots": shots, "seed": seed,
                               "seconds": round(time.perf_counter() - start, 2), "rotated": model.rotated_,
                               **{key: metrics.get(key) for key in ("image_auroc", "pixel_auroc", "pixel_aupro")}}
                        rows.append(row)
                        print(json.dumps(row), flush=True)
            target = OUT / f"{dataset}_{size}.json"
            previous = json.loads(target.read_text()) if target.is_file() else []
            fresh = {(r["layer"], r["shots"], r["seed"]) for r in rows}
            kept = [r for r in previous if (r["layer"], r["shots"], r["seed"]) not in fresh]
            target.write_text(json.dumps(kept + rows, indent=1))  # runs of other layers are kept
            summary[(dataset, size)] = rows
    print_table(summary, args)


def print_table(summary: dict[tuple[str, int], list[dict]], args) -> None:
    for shots in args.shots:
        print(f"\nshots={shots or 'all'}: image AUROC / pixel AUROC / AU-PRO, mean over seeds")
        header = "| layer | " + " | ".join(f"{d} {s}" for d, s in summary) + " | mean image AUROC |"
        print(header + "\n" + "|---" * (len(summary) + 2) + "|")
        for layer in args.layers:
            cells, images = [], []
            for rows in summary.values():
                chosen = [r for r in rows if r["layer"] == layer and r["shots"] == shots]
                values = [np.mean([r[k] for r in chosen if r[k] is not None] or [np.nan])
                          for k in ("image_auroc", "pixel_auroc", "pixel_aupro")]
                images.append(values[0])
                cells.append("/".join("-" if np.isnan(v) else f"{v:.3f}" for v in values))
            print(f"| {layer} | " + " | ".join(cells) + f" | {np.nanmean(images):.3f} |")


if __name__ == "__main__":
    main()
