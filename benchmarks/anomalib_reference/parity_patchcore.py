"""PatchCore in vadkit and in anomalib 2.7.0 on the same images and the same memory bank, stage by stage.

    /tmp/anomalib_venv/bin/python benchmarks/anomalib_reference/parity_patchcore.py [--dataset battery_weld]

The memory bank is fixed: vadkit fits PatchCore (mobilenet_v2, 256 px, coreset 10%) and anomalib's torch
model is given that very bank (float32), so coreset randomness plays no part. Each stage is then compared on
the *same* input, so a difference belongs to that stage alone:

1. preprocessing: each library's tensor for the same files (vadkit resizes the 8-bit image with Pillow,
   anomalib the float tensor with torchvision);
2. features of each tapped layer, both on anomalib's tensor (torchvision's MobileNetV2 with vadkit's folded
   BatchNorms vs timm's ``mobilenetv2_100``, same ImageNet weights);
3. the locally aware embedding (3x3 average, deeper layer upsampled bilinearly, concatenated), from the same
   features;
4. patch scores (nearest bank feature), from the same embedding, and each against the exact (float64) distance;
5. the image score (eq. 7), from the same embedding;
6. the anomaly map, from the same patch scores: vadkit upsamples bilinearly as the paper says, anomalib with
   F.interpolate's default, nearest; both blur with sigma 4, kernel 33, reflected borders;
7. end to end: each library's own pipeline on its own tensor, with the fixed bank: image AUROC (with DeLong's
   paired test of the difference), pixel AUROC and AU-PRO by vadkit's metrics.

Writes ``benchmarks/results/anomalib/parity_patchcore_<dataset>.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

import reference as ref


def relative(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """Max absolute difference, and relative to the largest magnitude of ``b``."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    diff = float((a - b).abs().max())
    return {"max_abs": diff, "max_rel": diff / max(float(b.abs().max()), 1e-30), "mean_abs": float((a - b).abs().mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="battery_weld", choices=list(ref.DATASETS))
    parser.add_argument("--ratio", type=float, default=0.1)
    args = parser.parse_args()
    torch.set_grad_enabled(False)

    from vadkit.data import ImageDataset
    from vadkit.metrics import compute_metrics, delong_test
    from vadkit.models import create_model
    from vadkit.ops.smoothing import to_image_maps

    split = ref.load_split(args.dataset)
    ours = create_model("patchcore", coreset_ratio=args.ratio, image_size=ref.IMAGE_SIZE).fit(split.train, progress=False)
    bank = ours.memory_bank_.float()
    theirs, _ = ref.build_model("patchcore", seed=0, coreset_ratio=args.ratio)
    theirs.model.memory_bank = bank.clone()
    theirs.model.eval()
    model = theirs.model
    layers_ours, layers_theirs = ours.layers_, list(ref.METHODS["patchcore"]["layers"])

    test = split.test
    x_ours = torch.stack([item["image"] for item in ImageDataset(test, ours.transform)])
    x_theirs = torch.cat(list(ref.load_batches(test, theirs.pre_processor.transform)))
    stages = {"1 preprocessing (each library's tensor)": relative(x_ours, x_theirs)}

    # 2. features on the same (anomalib's) tensor
    f_ours = ours.features(x_theirs)
    f_theirs = model.feature_extractor(x_theirs)
    for ours_layer, their_layer in zip(layers_ours, layers_theirs):
        stages[f"2 features {ours_layer} / {their_layer}"] = relative(f_ours[ours_layer], f_theirs[their_layer])

    # 3. embedding from the same (anomalib's) features
    from vadkit.ops.patch_features import pyramid_embedding

    same_features = {ours_layer: f_theirs[their_layer] for ours_layer, their_layer in zip(layers_ours, layers_theirs)}
    e_ours = pyramid_embedding(same_features, layers_ours, ours.patch_size)
    e_theirs = model.generate_embedding({layer: model.feature_pooler(f) for layer, f in f_theirs.items()})
    stages["3 locally aware embedding"] = relative(e_ours, e_theirs)

    # 4-5. patch and image scores from the same embedding
    b, _, h, w = e_theirs.shape
    scores_ours, maps_ours, patch_ours = ours.score_embedding(e_theirs, (ref.IMAGE_SIZE, ref.IMAGE_SIZE))
    flat = model.reshape_embedding(e_theirs)
    patch_theirs, locations = model.nearest_neighbors(flat, n_neighbors=1)
    patch_theirs, locations = patch_theirs.reshape(b, -1), locations.reshape(b, -1)
    scores_theirs = model.compute_anomaly_score(patch_theirs, locations, flat)
    stages["4 patch scores"] = relative(patch_ours.reshape(b, -1), patch_theirs)
    # both against the exact float64 distance to the same nearest bank row: which side the rounding is on
    exact = (flat.double() - bank.double()[locations.reshape(-1)]).norm(dim=1).reshape(b, -1)
    stages["4a patch scores: vadkit vs exact float64"] = relative(patch_ours.reshape(b, -1), exact)
    stages["4b patch scores: anomalib vs exact float64"] = relative(patch_theirs, exact)
    stages["5 image score (eq. 7)"] = relative(scores_ours, scores_theirs)

    # 6. maps from the same patch scores
    patch_grid = patch_theirs.reshape(b, 1, h, w)
    map_theirs = model.anomaly_map_generator(patch_grid, (ref.IMAGE_SIZE, ref.IMAGE_SIZE)).reshape(b, ref.IMAGE_SIZE, -1)
    map_ours = to_image_maps(patch_grid[:, 0], (ref.IMAGE_SIZE, ref.IMAGE_SIZE), ours.sigma)
    nearest = F.interpolate(patch_grid, size=(ref.IMAGE_SIZE, ref.IMAGE_SIZE)).squeeze(1)
    from vadkit.ops.smoothing import gaussian_blur

    stages["6 map (vadkit bilinear vs anomalib nearest upsampling)"] = relative(map_ours, map_theirs)
    stages["6b map (vadkit's blur after nearest upsampling)"] = relative(gaussian_blur(nearest, ours.sigma), map_theirs)

    # 7. end to end, each library on its own tensor, the same bank
    own_ours = ours.predict(x_ours, progress=False)
    own_theirs = model(x_theirs)
    labels = np.array([s.label for s in test])
    masks = ref.masks_for(test) if ref.USE_MASKS[args.dataset] else None
    end_to_end = {}
    for name, scores, maps in (("vadkit", own_ours.scores, own_ours.maps),
                               ("anomalib", own_theirs.pred_score.reshape(-1).numpy(),
                                own_theirs.anomaly_map.reshape(len(test), ref.IMAGE_SIZE, -1).numpy())):
        values = compute_metrics(labels, scores, masks, maps).as_dict()
        end_to_end[name] = {key: values.get(key) for key in ("image_auroc", "pixel_auroc", "pixel_aupro")}
    test_result = delong_test(labels, own_theirs.pred_score.reshape(-1).numpy(), own_ours.scores)
    end_to_end["delong vadkit - anomalib"] = {"difference": test_result.difference, "low": test_result.ci_low,
                                              "high": test_result.ci_high, "p_value": test_result.p_value}

    result = {"dataset": args.dataset, "coreset_ratio": args.ratio, "bank_rows": int(bank.shape[0]),
              "n_test": len(test), "stages": stages, "end_to_end": end_to_end}
    (ref.RESULTS / f"parity_patchcore_{args.dataset}.json").write_text(json.dumps(result, indent=1))
    print(f"{args.dataset}: fixed bank of {bank.shape[0]} rows, {len(test)} test images")
    print(f"{'stage':<58}{'max abs':>12}{'max rel':>12}{'mean abs':>12}")
    for stage, d in stages.items():
        print(f"{stage:<58}{d['max_abs']:>12.3g}{d['max_rel']:>12.3g}{d['mean_abs']:>12.3g}")
    print(json.dumps(end_to_end, indent=1))


if __name__ == "__main__":
    main()
