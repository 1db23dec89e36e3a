"""How different are the two libraries' input tensors for the same file? (information, not a pass/fail test)

    /tmp/anomalib_venv/bin/python benchmarks/anomalib_reference/check_preprocessing.py

vadkit: ``Transform(256).image(load_image(path))`` = Pillow bilinear resize (antialiased) on the 8-bit image,
rounded back to uint8, then /255 and ImageNet normalisation. anomalib: ``read_image`` (float32 in [0, 1]) then
the model's pre-processor, torchvision ``Resize((256, 256), antialias=True)`` on the float tensor (no uint8
rounding) and ``Normalize``. For the first 5 test images of each dataset, prints the max and mean abs
difference in normalised units and in 8-bit grey levels (x std x 255); writes preprocessing_check.json.
"""

from __future__ import annotations

import json

import numpy as np
import torch

import reference as ref


def main() -> None:
    from anomalib.models import Padim
    from vadkit.data import Transform, load_image

    ours = Transform(image_size=ref.IMAGE_SIZE)
    transform = Padim.configure_pre_processor().transform
    std = torch.tensor(ours.std).view(3, 1, 1)
    out = {"anomalib_transform": str(transform).replace("\n", " "), "datasets": {}}
    for dataset in ref.DATASETS:
        samples = ref.load_split(dataset).test[:5]
        a = torch.stack([ours.image(load_image(s.image_path)) for s in samples])
        b = next(ref.load_batches(samples, transform, batch_size=len(samples)))
        diff = (a - b).abs()
        levels = diff * std * 255
        out["datasets"][dataset] = {
            "n_images": len(samples),
            "max_abs_diff_normalised": float(diff.max()),
            "mean_abs_diff_normalised": float(diff.mean()),
            "max_abs_diff_grey_levels": float(levels.max()),
            "mean_abs_diff_grey_levels": float(levels.mean()),
            "original_sizes": sorted({tuple(np.asarray(load_image(s.image_path)).shape[:2]) for s in samples}),
        }
    (ref.RESULTS / "preprocessing_check.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
