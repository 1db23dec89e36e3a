"""SADSeM's Mask R-CNN part segmenter: does fine-tuning on a few annotated images learn the parts?

    .venv/bin/python benchmarks/bench_sadsem_segmenter.py [--steps 60] [--images 6]

No shared dataset has part annotations, so this is a check of the training pipeline on generated images (a blue
body with a red cap on a noisy background, both placed at random; tests/conftest.py ``make_part_annotations``),
not a quality claim: the intersection over union of each part between the annotation and the segmenter's
partition of the same images after ``--steps`` fine-tuning steps, against the 1-step control, with the time.
Writes ``benchmarks/results/sadsem_segmenter.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.conftest, for the generated annotations


def part_iou(model, annotations, transform) -> dict[str, float]:
    from vadkit.data import load_image

    images = torch.stack([transform.image(load_image(path)) for path in annotations.images])
    with torch.no_grad():
        labels = model(images).argmax(dim=1).numpy()
    size = transform.output_size
    truth = np.stack([annotations.label_map(i, size) for i in range(len(annotations.images))])
    return {name: float(((labels == k) & (truth == k)).sum() / max(((labels == k) | (truth == k)).sum(), 1))
            for k, name in enumerate(annotations.names, start=1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()
    from tests.conftest import make_part_annotations
    from vadkit.data import Transform
    from vadkit.segmentation import read_part_annotations
    from vadkit.segmentation.maskrcnn import fine_tune

    torch.set_num_threads(2)
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        annotations = read_part_annotations(make_part_annotations(Path(folder), n=args.images, size=args.size))
        transform = Transform(image_size=args.size)
        for steps in (1, args.steps):
            started = time.perf_counter()
            model, info = fine_tune(annotations, transform, steps=steps, seed=0, progress=False)
            rows[f"steps_{steps}"] = {"iou": part_iou(model, annotations, transform), "seconds": time.perf_counter() - started,
                                      "first_loss": info["losses"][0], "last_loss": info["losses"][-1]}
            print(steps, rows[f"steps_{steps}"])
    out = HERE / "results" / "sadsem_segmenter.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"images": args.images, "size": args.size, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
