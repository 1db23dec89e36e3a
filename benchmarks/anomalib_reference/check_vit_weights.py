"""Do anomalib's AnomalyDINO and Dinomaly encoders, loaded with vadkit's offline ViT-S/14, give vadkit's features?

    cd benchmarks/anomalib_reference
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python check_vit_weights.py [--image-size 224]

One real image (the first anomalous battery_weld test image). vadkit: ``create_extractor("dinov2_vits14_imgfocus",
weights=<the converted file>)`` (vadkit's ``ViTFeatureNet``: its own position-embedding resize). anomalib: the
encoders that ``vit_reference.build_anomalydino`` / ``build_dinomaly`` build (timm ``vit_small_patch14_dinov2``,
``forward_intermediates``), weights loaded by ``vit_reference.load_vit``.

1. Same input: vadkit's normalised tensor (``Transform(S)``) into both. Compared: AnomalyDINO's default layer
   (last block through the final LayerNorm) with vadkit's ``norm``; AnomalyDINO re-pointed to raw block 8 with
   vadkit's ``blocks.8``; Dinomaly's 8 taps (raw blocks 2-9, class token included) with vadkit's ``tokens()``.
   Reported per layer: max |a - b|, max |a - b| / max |a| and the largest per-token relative L2 difference.
2. Each library's own input (anomalib's ``read_image`` + the model's pre-processor; vadkit's Pillow resize):
   the input difference in grey levels and the per-patch cosine similarity of the resulting features.

Writes ``benchmarks/results/anomalib/vit_weights_check.json`` and prints it.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import reference as ref
import vit_reference as vr

TAPS = [f"blocks.{i}" for i in range(2, 10)]


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    a, b = a.detach().float().contiguous(), b.detach().float().contiguous()
    if a.shape != b.shape:
        raise AssertionError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = (a - b).abs()
    per_token = ((a - b).norm(dim=-1) / a.norm(dim=-1).clamp_min(1e-12))
    return {"shape": list(a.shape), "max_abs_diff": float(diff.max()), "max_abs_value": float(a.abs().max()),
            "max_rel_diff": float(diff.max() / a.abs().max()), "max_token_rel_l2": float(per_token.max()),
            "mean_abs_diff": float(diff.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--dataset", default="battery_weld", choices=sorted(ref.DATASETS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    vr.check_patch_multiple(args.image_size)

    from anomalib.data.utils import read_image
    from torchvision import tv_tensors
    from vadkit.backbones import create_extractor
    from vadkit.data import Transform, load_image

    sample = next(s for s in ref.load_split(args.dataset).test if s.label == 1)
    x = Transform(image_size=args.image_size).image(load_image(sample.image_path)).unsqueeze(0)
    ours = create_extractor(vr.VADKIT_BACKBONE, layers=[*TAPS, "norm"], weights=str(vr.ensure_weights()))
    with torch.no_grad():
        t0 = time.perf_counter()
        tokens = ours.tokens(x)                       # raw block tokens; "norm": the last block through the norm
        vadkit_seconds = time.perf_counter() - t0
    prefix = ours.num_prefix_tokens

    dino_norm, report_norm = vr.build_anomalydino("norm", args.image_size)
    dino_b8, report_b8 = vr.build_anomalydino("blocks.8", args.image_size)
    dinomaly, report_dinomaly = vr.build_dinomaly(0, args.image_size)
    dino_norm.model.eval(), dino_b8.model.eval(), dinomaly.model.eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        a_norm = dino_norm.model.extract_features(x)
        anomalib_seconds = time.perf_counter() - t0
        a_b8 = dino_b8.model.extract_features(x)
        a_taps = dinomaly.model.encoder(x)

    out = {"image": str(sample.image_path), "image_size": args.image_size,
           "vadkit_weights_source": ours.weights_source, "vadkit_weights_sha256": ours.weights_sha256,
           "anomalib_load": {"anomalydino": report_norm, "anomalydino_blocks8": report_b8["layer_used"],
                             "dinomaly": report_dinomaly},
           "same_input": {
               "anomalydino default (blocks.11 + final norm) vs vadkit norm": compare(tokens["norm"][:, prefix:], a_norm),
               "anomalydino re-pointed (blocks.8 raw) vs vadkit blocks.8": compare(tokens["blocks.8"][:, prefix:], a_b8),
               **{f"dinomaly {t} (cls + patches) vs vadkit tokens {t}": compare(tokens[t], a_taps[t]) for t in TAPS},
           },
           "one_image_forward_seconds_1_thread": {"vadkit_all_12_blocks": round(vadkit_seconds, 4),
                                                  "anomalib_all_12_blocks": round(anomalib_seconds, 4)}}
    worst = max(v["max_rel_diff"] for v in out["same_input"].values())
    out["same_input_worst_max_rel_diff"] = worst

    # each library's own preprocessing of the same file
    own = {}
    raw = tv_tensors.Image(read_image(sample.image_path, as_tensor=True))
    for name, model in (("anomalydino (bicubic, antialias)", dino_b8), ("dinomaly (bilinear, antialias)", dinomaly)):
        xa = torch.as_tensor(model.pre_processor.transform(raw)).unsqueeze(0)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        grey = ((xa - x).abs() * std * 255)
        with torch.no_grad():
            fa = dino_b8.model.extract_features(xa)[0]
            fv = tokens["blocks.8"][0, prefix:]
        cos = torch.nn.functional.cosine_similarity(fa, fv, dim=-1)
        own[name] = {"input_max_grey_levels": float(grey.max()), "input_mean_grey_levels": float(grey.mean()),
                     "blocks.8 patch cosine (anomalib input vs vadkit input) min": float(cos.min()),
                     "mean": float(cos.mean())}
    out["own_preprocessing"] = own
    ref.RESULTS.mkdir(parents=True, exist_ok=True)
    (ref.RESULTS / "vit_weights_check.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
