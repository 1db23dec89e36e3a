"""FastFlow: one 2D normalising flow per feature stage maps a frozen backbone's features to a standard normal.

Yu, Zheng, Wang, Li, Wu, Zhao, Wu. "FastFlow: Unsupervised Anomaly Detection and Localization via 2D Normalizing
Flows", arXiv 2111.07677 (2021). https://arxiv.org/abs/2111.07677. The reference implementations are
gathierry/FastFlow (unofficial; close to the paper's AUROC with every backbone) and anomalib's
``models/image/fastflow`` (derived from it); both build their flows from FrEIA's ``AllInOneBlock``.

The paper leaves several details out (gathierry's README: the LayerNorm, parts of the loss and map); where it is
silent, this follows the two reference implementations, which agree. As they define it:

* feature extractor: an ImageNet CNN, frozen (ResNet-18 and Wide-ResNet-50-2 in the paper's CNN results), tapped
  at its stride-4, -8 and -16 stage ends (ResNet layer1..layer3: timm ``out_indices=[1, 2, 3]``); here the
  backbone's equivalents (MobileNetV2 ``features.3`` / ``.6`` / ``.13`` by default); one flow per stage;
* every tapped map goes through its own LayerNorm over (C, h, w) *with* a learned element-wise affine, trained
  with the flows, before its flow. Not in the paper: gathierry found it necessary to reproduce the paper's
  numbers for the CNNs (gathierry issue #3, "Unmentioned but critical LayerNorm"; a commenter there reports
  similar AUROC without it, and steadier training without the affine); anomalib keeps it, affine included;
* a flow is ``flow_steps`` steps (8 for the CNNs, 20 for CaiT / DeiT: gathierry's configs), each an affine coupling step
  as FrEIA's ``AllInOneBlock`` computes it (:class:`CouplingStep`): split the channels (the first ceil(C/2)
  pass through), a subnet on the passive half predicts ``(s, t)`` (its output scaled by 0.1), the active half
  becomes ``x2 * exp(clamp * tanh(s)) + t`` (soft clamp, ``clamp=2``), then a learned per-channel global
  affine (ActNorm-like; scale ``0.1 * softplus_{beta=0.5}(g)``, initialised to 1) and a fixed random channel
  permutation. The subnet is conv k x k, ReLU, conv k x k with ``int(C_in * hidden_ratio)`` hidden channels
  (hidden ratio 1.0 for the CNNs, 0.16 for CaiT); k alternates 3, 1, 3, 1, ... over the steps (the paper's
  Fig. 2 / Sec. 3.3, gathierry's Wide-ResNet-50 config, anomalib's default) unless ``conv3x3_only`` (3
  everywhere: gathierry's ResNet-18 config, ``configs/resnet18.yaml``);
* loss: per stage the mean over the batch of ``0.5 * sum_{C,h,w} z^2 - log|det J|`` (the negative
  log-likelihood under N(0, I) up to a constant), summed over the stages with weight 1 (:func:`fastflow_loss`;
  gathierry ``fastflow.py`` and anomalib ``loss.py`` alike);
* anomaly map: per stage ``-exp(-0.5 * mean_C z^2)`` at every position (minus a per-position likelihood; the
  mean over channels, not the sum, gathierry issue #11; the log-det is left out, gathierry issue #4 discusses
  adding it), upsampled bilinearly (corners not aligned) to the input size, averaged over the stages
  (:func:`likelihood_map`; anomalib ``anomaly_map.py`` identical). The map lies in [-1, 0): higher = more
  anomalous (the sign flip: gathierry issue #8). Image score: the map's maximum
  (anomalib's ``pred_score``; gathierry issue #7);
* training: Adam, learning rate 1e-3, weight decay 1e-5, batch size 32, 500 epochs, 256 x 256 images (the
  paper's implementation details; gathierry's ``constants.py`` and configs; anomalib's
  ``configure_optimizers``).

Deviations, stated:

* the coupling step is written here (a small class) rather than taken from FrEIA; it computes what
  ``AllInOneBlock(affine_clamping=clamp, permute_soft=False)`` computes with its defaults (global affine type
  SOFTPLUS, init 1.0, no conditioning, no Householder, no pre-permutation). The permutation is applied by
  indexing the channels (FrEIA multiplies by a permutation matrix as a 1x1 convolution: the same values);
* the default backbone is MobileNetV2 (the edge setting of this library); ``backbone="resnet18"`` is the paper's
  ResNet-18 setting: ``conv3x3_only=None`` (the default) means 3x3 only for ResNet-18 (gathierry's config) and
  alternating 3x3 / 1x1 for every other backbone (anomalib's default; MobileNetV2 has no published setting).
  Transformer backbones (CaiT, DeiT: 20 steps, hidden ratio 0.16, their own final norm) are not offered;
* the budget: ``epochs=500, max_steps=None`` is the paper's; the default stops at ``max_steps`` so that a fit
  takes minutes on a 2-core CPU. gathierry reports the best epoch by test AUROC and observes the AUROC peaking
  early and then dropping (gathierry issue #4); here, with ``fit(val=...)``, the weights with the lowest
  validation loss on held-out normal images are kept (no test labels are used);
* the LayerNorm's shape fixes the input size: the flows are built for the transform's output size
  (``crop_size`` or ``image_size``), as both reference implementations build them for ``input_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError
from vadkit.models.backbone_model import BackboneModel
from vadkit.models.trained import TrainedModel, check_number


def _global_scale(raw: torch.Tensor) -> torch.Tensor:
    """FrEIA's SOFTPLUS global-affine activation: ``0.1 * softplus(raw, beta=0.5)`` (positive, smooth)."""
    return 0.1 * F.softplus(raw, beta=0.5)


def _global_scale_raw(init: float) -> float:
    """The raw value that :func:`_global_scale` maps to ``init`` (FrEIA's initialisation)."""
    return 2.0 * math.log(math.exp(0.5 * 10.0 * init) - 1.0)


class CouplingStep(nn.Module):
    """One FastFlow step on (B, C, h, w): affine coupling with soft clamping, per-channel global affine, fixed
    random channel permutation (FrEIA's ``AllInOneBlock`` with FastFlow's settings).

    ``forward(x) -> (z, log|det dz/dx|)`` with the log-determinant per image, shape (B,);
    ``inverse(z) -> x``. The permutation is drawn from torch's global generator at construction (seeded by the
    training loop) and kept as a buffer, so a saved model restores it.
    """

    def __init__(self, channels: int, kernel_size: int, hidden_ratio: float, clamp: float) -> None:
        super().__init__()
        self.passive = channels - channels // 2   # x1: passes through, feeds the subnet
        self.active = channels // 2               # x2: scaled and shifted
        self.clamp = clamp
        hidden = int(self.passive * hidden_ratio)
        padding = kernel_size // 2
        self.subnet = nn.Sequential(nn.Conv2d(self.passive, hidden, kernel_size, padding=padding), nn.ReLU(),
                                    nn.Conv2d(hidden, 2 * self.active, kernel_size, padding=padding))
        self.global_scale = nn.Parameter(torch.full((1, channels, 1, 1), _global_scale_raw(1.0)))
        self.global_offset = nn.Parameter(torch.zeros(1, channels, 1, 1))
        permutation = torch.randperm(channels)
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    def _coupling(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-scale ``clamp * tanh(s)`` and the shift ``t`` the subnet predicts from the passive half."""
        a = 0.1 * self.subnet(x1)
        return self.clamp * torch.tanh(a[:, :self.active]), a[:, self.active:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = x.split([self.passive, self.active], dim=1)
        log_scale, shift = self._coupling(x1)
        y = torch.cat([x1, x2 * torch.exp(log_scale) + shift], dim=1)
        scale = _global_scale(self.global_scale)
        z = (y * scale + self.global_offset)[:, self.permutation]
        positions = x.shape[2] * x.shape[3]
        log_det = log_scale.sum(dim=(1, 2, 3)) + positions * torch.log(scale).sum()
        return z, log_det

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        y = (z[:, self.inverse_permutation] - self.global_offset) / _global_scale(self.global_scale)
        x1, y2 = y.split([self.passive, self.active], dim=1)
        log_scale, shift = self._coupling(x1)
        return torch.cat([x1, (y2 - shift) * torch.exp(-log_scale)], dim=1)


class StageFlow(nn.Module):
    """The flow of one feature stage: LayerNorm over (C, h, w) with a learned affine, then ``steps`` coupling
    steps whose subnet kernel alternates 3, 1, 3, ... (3 everywhere with ``conv3x3_only``).
    ``forward(features) -> (z, log|det J|)`` with the log-determinant of the steps (the LayerNorm is the
    flow's input map, outside the density, as in both reference implementations)."""

    def __init__(self, shape: Sequence[int], steps: int, hidden_ratio: float, clamp: float,
                 conv3x3_only: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(list(shape), elementwise_affine=True)
        self.steps = nn.ModuleList([
            CouplingStep(shape[0], 1 if i % 2 == 1 and not conv3x3_only else 3, hidden_ratio, clamp)
            for i in range(steps)])

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.norm(features)
        log_det = z.new_zeros(z.shape[:1])  # not len(z): an int would freeze the batch size into an export
        for step in self.steps:
            z, step_log_det = step(z)
            log_det = log_det + step_log_det
        return z, log_det


def fastflow_loss(latents: Sequence[torch.Tensor], log_dets: Sequence[torch.Tensor]) -> torch.Tensor:
    """FastFlow's loss: per stage the batch mean of ``0.5 * sum_{C,h,w} z^2 - log|det J|``, summed over stages."""
    return sum((0.5 * z.pow(2).sum(dim=(1, 2, 3)) - log_det).mean() for z, log_det in zip(latents, log_dets))


def likelihood_map(latents: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """FastFlow's anomaly map (B, H, W): per stage ``-exp(-0.5 * mean_C z^2)``, upsampled bilinearly to ``size``,
    averaged over the stages."""
    maps = [F.interpolate(-torch.exp(-0.5 * z.pow(2).mean(dim=1, keepdim=True)), size=size, mode="bilinear",
                          align_corners=False)[:, 0] for z in latents]
    return torch.stack(maps).mean(0)


class FastFlow(TrainedModel, BackboneModel):
    """FastFlow (Yu et al., 2021). See the module docstring for the method and its deviations.

    Args:
        backbone, layers, weights, image_size, crop_size: the frozen feature extractor (layers: default the
            stride-4, -8 and -16 stage ends, the paper's ResNet layer1..layer3); one flow per layer.
        flow_steps: coupling steps per flow (the paper's 8 for CNNs).
        hidden_ratio: hidden channels of a subnet per input channel (the paper's 1.0 for CNNs).
        conv3x3_only: 3x3 subnets in every step instead of alternating 3x3 and 1x1. None (default): True for
            ResNet-18 (gathierry's setting for the paper's ResNet-18), False otherwise (anomalib's default).
        clamp: the soft clamp of the coupling's log-scale (FrEIA's ``affine_clamping``, 2.0).
        lr, weight_decay: Adam, the paper's 1e-3 and 1e-5.
        epochs, max_steps, max_time: the training budget (the first reached stops training). Default
            ``max_steps=200`` (minutes on a 2-core CPU); the paper's is ``epochs=500, max_steps=None``.
        batch_size: training batch (the paper's 32).
        seed: initial weights, permutations and shuffling.
        validate_every, patience, num_workers: see :mod:`vadkit.models.trained`.
    """

    name = "fastflow"
    learned: ClassVar[tuple[str, ...]] = ("flows_",)

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 flow_steps: int = 8, hidden_ratio: float = 1.0, conv3x3_only: bool | None = None,
                 clamp: float = 2.0, lr: float = 1e-3, weight_decay: float = 1e-5,
                 epochs: int | None = None, max_steps: int | None = 200, max_time: float | None = None,
                 batch_size: int = 32, seed: int = 0, validate_every: int | None = None,
                 patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers,
                         backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        if isinstance(flow_steps, bool) or not isinstance(flow_steps, int) or flow_steps < 1:
            raise ParameterError(f"flow_steps must be an integer >= 1, got {flow_steps!r}")
        if conv3x3_only is not None and not isinstance(conv3x3_only, bool):
            raise ParameterError(f"conv3x3_only must be True, False or None (automatic), got {conv3x3_only!r}")
        for name, value in (("hidden_ratio", hidden_ratio), ("clamp", clamp), ("lr", lr)):
            check_number(name, value)
        check_number("weight_decay", weight_decay, positive=False)
        from vadkit.backbones import get_spec

        narrow = [layer for layer in self.chosen_layers() if get_spec(backbone).channels[layer] < 2]
        if narrow:
            raise ParameterError(f"a coupling step splits channels in two: layers {narrow} have fewer than 2")
        if int((min(get_spec(backbone).channels[layer] for layer in self.chosen_layers()) + 1) // 2
               * hidden_ratio) < 1:
            raise ParameterError(f"hidden_ratio {hidden_ratio!r} leaves a subnet without hidden channels")
        self.flow_steps, self.hidden_ratio, self.conv3x3_only, self.clamp = flow_steps, hidden_ratio, conv3x3_only, \
            clamp
        self.lr, self.weight_decay = lr, weight_decay
        self.flows_: nn.ModuleList | None = None

    def default_layers(self) -> list[str]:
        return self.stride_4_8_16_layers()

    def uses_conv3x3_only(self) -> bool:
        """``conv3x3_only``, or when None the published choice: 3x3 only for ResNet-18, alternating otherwise."""
        return self.backbone == "resnet18" if self.conv3x3_only is None else self.conv3x3_only

    def feature_shapes(self) -> list[tuple[int, int, int]]:
        """(C, h, w) of every tapped layer for the model's input size: every stride-2 stage of the supported
        backbones pads so that h = ceil(H / stride)."""
        from vadkit.backbones import get_spec

        spec = get_spec(self.backbone)
        height, width = self.input_size_ or self.transform.output_size
        return [(spec.channels[layer], math.ceil(height / spec.layers[layer]), math.ceil(width / spec.layers[layer]))
                for layer in self.chosen_layers()]

    # -- training -------------------------------------------------------------------------------------
    def build_networks(self) -> None:
        self.flows_ = nn.ModuleList([StageFlow(shape, self.flow_steps, self.hidden_ratio, self.clamp,
                                               self.uses_conv3x3_only()) for shape in self.feature_shapes()])

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            features = self.extractor(images)
        return [features[layer] for layer in self.chosen_layers()]

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        latents, log_dets = zip(*(flow(f) for flow, f in zip(self.flows_, self._features(images))))
        return fastflow_loss(latents, log_dets)

    def configure_optimizer(self, total_steps: int | None):
        optimizer = torch.optim.Adam(list(self.trainable_parameters()), lr=self.lr, weight_decay=self.weight_decay)
        return optimizer, None

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self) -> FastFlowGraph:
        self._check_fitted("inference_module")
        return FastFlowGraph(self.extractor, self.chosen_layers(), self.flows_)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)


class FastFlowGraph(nn.Module):
    """FastFlow's inference (also what ``FastFlow.predict`` runs): frozen features, one flow per stage, the
    averaged likelihood map and its maximum. ``forward(images) -> (scores (B,), maps (B, H, W))``."""

    def __init__(self, extractor: nn.Module, layers: Sequence[str], flows: nn.ModuleList) -> None:
        super().__init__()
        self.extractor, self.layers, self.flows = extractor, list(layers), flows

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.extractor(images)
        latents = [flow(features[layer])[0] for flow, layer in zip(self.flows, self.layers)]
        maps = likelihood_map(latents, tuple(images.shape[-2:]))
        return maps.flatten(1).amax(1), maps
