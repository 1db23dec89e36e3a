"""Are anomalib's backbone weights the same as vadkit's? Compare the feature maps on one real image.

    /tmp/anomalib_venv/bin/python benchmarks/anomalib_reference/check_weights.py

vadkit: ``create_extractor("mobilenet_v2")`` (torchvision mobilenet_v2, its own offline weight resolution).
anomalib: the extractor anomalib builds for PatchCore/PaDiM (timm ``mobilenetv2_100`` ``features_only``) with
the shared ``peer_weights.load_into_extractor``. The same normalised tensor (vadkit's Transform on one
battery_weld test image) goes into both; layer pairs (same stride): features.3 = blocks.1 (4),
features.6 = blocks.2 (8), features.13 = blocks.4 (16). Prints JSON with the max abs difference per layer,
and writes it to benchmarks/results/anomalib/weights_check.json.
"""

from __future__ import annotations

import json

import torch

import reference as ref

PAIRS = {"features.3": "blocks.1", "features.6": "blocks.2", "features.13": "blocks.4"}


def main() -> None:
    from vadkit.backbones import create_extractor
    from vadkit.data import Transform, load_image

    sample = next(s for s in ref.load_split("battery_weld").test if s.label == 1)
    x = Transform(image_size=ref.IMAGE_SIZE).image(load_image(sample.image_path)).unsqueeze(0)

    ours = create_extractor("mobilenet_v2", layers=list(PAIRS))
    model, load_report = ref.build_model("padim", seed=0)  # PaDiM's extractor holds all three layers
    theirs = model.model.feature_extractor
    with torch.no_grad():
        a = ours(x)
        b = theirs(x)
    out = {"image": str(sample.image_path), "vadkit_weights_source": ours.weights_source,
           "peer_weights_load": load_report, "layers": {}}
    for v_layer, t_layer in PAIRS.items():
        fa, fb = a[v_layer].contiguous(), b[t_layer].contiguous()
        assert fa.shape == fb.shape, (v_layer, fa.shape, t_layer, fb.shape)
        diff = (fa - fb).abs()
        out["layers"][f"{v_layer} = {t_layer}"] = {
            "shape": list(fa.shape),
            "max_abs_diff": float(diff.max()),
            "max_abs_value": float(fa.abs().max()),
            "mean_abs_diff": float(diff.mean()),
        }
    ref.RESULTS.mkdir(parents=True, exist_ok=True)
    (ref.RESULTS / "weights_check.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
