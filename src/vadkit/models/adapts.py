"""AdapTS: a teacher-student detector whose student is the frozen teacher plus small trainable adapters.

Barusco, Dalle Pezze, Borsatti, Susto. "AdapTS: Lightweight Teacher-Student Approach for Multi-Class and
Continual Visual Anomaly Detection", 2026. https://arxiv.org/abs/2603.17530 (authors' code:
github.com/groupvad/adapts, ``models/stfpm_adapters.py`` and ``trainers/stfpm_adapters_trainer_seg.py``)

STFPM (:mod:`vadkit.models.stfpm`) trains a whole second network, the student. AdapTS keeps one network: the
pretrained backbone, frozen, is the teacher, and the *same* backbone with a trainable adapter after each tapped
layer is the student. Only the adapters are learned (about 22 k parameters on MobileNetV2, 90 kB, against STFPM's
1.08 M), so a product costs a set of adapters and the backbone is stored once for any number of products: the
property continual learning needs (:mod:`vadkit.continual.strategies.adapters` keeps one set per task and picks
it per image by the nearest task prototype).

As the paper and the authors' code define it:

* adapter: residual ``x + conv1x1(relu(bn(conv1x1(x))))`` at the layer's width (the authors' ``LinearAdapter``;
  the 1 x 1 convolutions orthogonally initialised, biases zero); its output is both the student's feature at
  that layer and the input of the backbone's next layers;
* loss on normal images: STFPM's, between the teacher's and the student's channel-normalised features;
* segmentation-guided objective: on images with simulated anomalies (Perlin-noise masks), the per-channel
  squared differences of the normalised features of every tapped layer, upsampled to the first layer's size and
  concatenated, go through a 1 x 1 convolution and a sigmoid (a segmentation head used only in training); its
  focal loss (gamma 4) plus its L1 distance to the mask is added to the loss. It teaches the adapters to make
  the student *differ* from the teacher where an image is abnormal, not only agree where it is normal;
* optimiser: SGD at learning rate 0.1 without momentum, cosine-annealed to 0.001; batch size 32; 30 epochs;
* anomaly map and score: STFPM's (product over layers of the upsampled distances; the map's maximum);
* task prototype: the mean of a teacher feature over a task's training images; an image goes to the task of
  the nearest prototype (Euclidean).

Deviations, stated:

* the authors' code applies each adapter twice (once for the feature it compares, once more on that output
  before the next layer); it is applied once here, as the paper's architecture figure draws it;
* prototype feature: the authors flatten the backbone's last feature map (MobileNetV2 ``features.18``, ResNet
  ``avgpool``), which needs the rest of the backbone to run; here it is the global average of the tapped
  layers' teacher features, concatenated, which the teacher computes anyway (BENCHMARKS.md measures the task
  identification it gives);
* simulated anomalies: :class:`vadkit.data.synthetic.PerlinAnomaly` with Perlin-noise textures (DRAEM's masks;
  which texture source the authors blend in we could not verify);
* layers: STFPM's stride-4/8/16 stage ends (MobileNetV2 ``features.3 / .6 / .13``, ResNet ``layer1..3``; the
  authors tap ``layer1..3`` on ResNets); adapters need a torchvision backbone (the student is the teacher's
  traced graph with the adapters inserted), timm backbones are refused;
* budget: ``max_steps=100`` by default (minutes on a 2-core CPU); ``epochs=30, max_steps=None`` is the paper's.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError
from vadkit.models.backbone_model import BackboneModel
from vadkit.models.stfpm import STFPMGraph, pyramid_loss
from vadkit.models.trained import TrainedModel, check_number


class Adapter(nn.Module):
    """``x + conv(relu(bn(conv(x))))`` with 1 x 1 convolutions through ``round(channels * width)`` channels."""

    def __init__(self, channels: int, width: float = 1.0) -> None:
        super().__init__()
        hidden = max(1, round(channels * width))
        self.down = nn.Conv2d(channels, hidden, kernel_size=1)
        self.norm = nn.BatchNorm2d(hidden)
        self.up = nn.Conv2d(hidden, channels, kernel_size=1)
        for conv in (self.down, self.up):
            nn.init.orthogonal_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(F.relu(self.norm(self.down(x))))


def adapter_key(layer: str) -> str:
    """A module name for ``layer`` (module names cannot contain dots)."""
    return layer.replace(".", "_")


class AdaptedBackbone(nn.Module):
    """The teacher's traced graph with ``adapters[layer]`` inserted after each tapped layer: the student.

    The backbone's modules are the teacher's own (shared, frozen, not copied); ``forward(x) -> {layer: feature}``
    returns the adapters' outputs, which are also what the following layers receive."""

    def __init__(self, teacher, adapters: nn.ModuleDict) -> None:
        super().__init__()
        body = teacher.body
        if not isinstance(body, torch.fx.GraphModule):
            raise ParameterError(f"AdapTS inserts its adapters into the traced graph of a torchvision backbone; "
                                 f"{teacher.name} is not one: use a torchvision backbone (e.g. mobilenet_v2)")
        graph = copy.deepcopy(body.graph)
        output = next(node for node in graph.nodes if node.op == "output")
        taps = output.args[0]
        for layer in teacher.layers:
            node = taps[layer]
            with graph.inserting_after(node):
                adapted = graph.call_module(f"adapters.{adapter_key(layer)}", (node,))
            node.replace_all_uses_with(adapted, delete_user_cb=lambda user, adapted=adapted: user is not adapted)
        holder = nn.Module()
        for name, child in body.named_children():
            holder.add_module(name, child)
        holder.add_module("adapters", adapters)
        graph.lint()
        self.graph_module = torch.fx.GraphModule(holder, graph)
        self.memory_format = teacher.memory_format
        self.layers = teacher.layers

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.graph_module(x.contiguous(memory_format=self.memory_format))
        return {layer: out[layer] for layer in self.layers}


def pooled(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, sum of channels) global average of every feature map, concatenated: the prototype feature."""
    return torch.cat([feature.float().mean(dim=(2, 3)) for feature in features.values()], dim=1)


def difference_stack(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor]) -> torch.Tensor:
    """(B, sum of channels, h1, w1): per-channel squared differences of the normalised features of every layer,
    upsampled to the first layer's size and concatenated (the segmentation head's input)."""
    size = next(iter(teacher.values())).shape[-2:]
    stack = [F.interpolate((F.normalize(teacher[layer], dim=1) - F.normalize(student[layer], dim=1)).pow(2),
                           size=size, mode="bilinear", align_corners=False) for layer in teacher]
    return torch.cat(stack, dim=1)


def focal_l1_loss(logits: torch.Tensor, masks: torch.Tensor, gamma: float = 4.0) -> torch.Tensor:
    """The segmentation-guided term: binary focal loss (``gamma``) of sigmoid(logits) against 0/1 ``masks``, plus
    the mean absolute difference between them (both averaged over pixels)."""
    probability = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
    p_true = probability * masks + (1 - probability) * (1 - masks)
    return (cross_entropy * (1 - p_true) ** gamma).mean() + (probability - masks).abs().mean()


class AdapTS(TrainedModel, BackboneModel):
    """AdapTS (Barusco et al., 2026). See the module docstring for the method and its deviations.

    Args:
        backbone, layers, weights, image_size, crop_size: the frozen teacher (a torchvision backbone) and its
            tapped layers (default: STFPM's stride-4/8/16 stage ends).
        adapter_width: hidden channels of each adapter as a fraction of its layer's (1.0: the authors'
            ``LinearAdapter``; 0.25 gives their bottleneck's size).
        segmentation: add the segmentation-guided objective on simulated anomalies (the paper's; ``False``
            trains on the STFPM loss alone, about half the time per step).
        lr, min_lr: SGD's learning rate, cosine-annealed to ``min_lr`` over the steps (the paper's 0.1 / 0.001).
        epochs, max_steps, max_time: the training budget (the first reached stops training). Default:
            ``max_steps=100``; the paper's is ``epochs=30, max_steps=None``.
        batch_size: training batch (the paper's 32).
        seed: initial weights, shuffling and the simulated anomalies.
        validate_every, patience, num_workers: see :mod:`vadkit.models.trained`.
    """

    name = "adapts"
    learned: ClassVar[tuple[str, ...]] = ("adapters_", "head_", "prototype_")

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 adapter_width: float = 1.0, segmentation: bool = True, lr: float = 0.1, min_lr: float = 0.001,
                 epochs: int | None = None, max_steps: int | None = 100, max_time: float | None = None,
                 batch_size: int = 32, seed: int = 0, validate_every: int | None = None,
                 patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers,
                         backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        check_number("adapter_width", adapter_width)
        check_number("lr", lr)
        check_number("min_lr", min_lr, positive=False)
        if not isinstance(segmentation, bool):
            raise ParameterError(f"segmentation must be true or false, got {segmentation!r}")
        self.adapter_width, self.segmentation = adapter_width, segmentation
        self.lr, self.min_lr = lr, min_lr
        self.adapters_: nn.ModuleDict | None = None
        self.head_: nn.Conv2d | None = None
        self.prototype_: torch.Tensor | None = None
        self._student: tuple[nn.ModuleDict, AdaptedBackbone] | None = None  # built for these adapters
        self._anomalies = None

    def default_layers(self) -> list[str]:
        return self.stride_4_8_16_layers()

    # -- networks -------------------------------------------------------------------------------------
    def build_networks(self) -> None:
        """One adapter per tapped layer, the segmentation head, and the student (teacher graph + adapters)."""
        teacher = self.extractor
        self.adapters_ = nn.ModuleDict({adapter_key(layer): Adapter(channels, self.adapter_width)
                                        for layer, channels in teacher.channels.items()})
        self.adapters_.to(memory_format=teacher.memory_format)
        self.head_ = nn.Conv2d(sum(teacher.channels.values()), 1, kernel_size=1)
        self._student = None

    def student(self, adapters: nn.ModuleDict | None = None) -> AdaptedBackbone:
        """The student with ``adapters`` (default: this model's); the teacher's modules are shared."""
        if adapters is not None:
            return AdaptedBackbone(self.extractor, adapters)
        if self._student is None or self._student[0] is not self.adapters_:
            self._student = (self.adapters_, AdaptedBackbone(self.extractor, self.adapters_))
        return self._student[1]

    def anomaly_generator(self):
        if self._anomalies is None:
            from vadkit.data.synthetic import PerlinAnomaly

            self._anomalies = PerlinAnomaly()
        return self._anomalies

    # -- training -------------------------------------------------------------------------------------
    def _with_anomalies(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``images`` (normalised) with simulated anomalies, and their masks (B, 1, H, W)."""
        from vadkit.data.synthetic import synthesize_batch

        mean = torch.tensor(self.extractor.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.extractor.std, device=images.device).view(1, 3, 1, 1)
        pixels = (images * std + mean).clamp(0, 1)
        # the anomalies' seed comes from torch's global RNG, which the loop seeds and checkpoints
        augmented, masks = synthesize_batch(pixels, self.anomaly_generator(), int(torch.randint(0, 2 ** 62, (1,))))
        return (augmented - mean) / std, masks

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        student = self.student()
        with torch.no_grad():
            teacher = self.extractor(images)
        loss = pyramid_loss(teacher, student(images))
        if not self.segmentation:
            return loss
        augmented, masks = self._with_anomalies(images)
        with torch.no_grad():
            teacher = self.extractor(augmented)
        logits = self.head_(difference_stack(teacher, student(augmented)))
        masks = (F.interpolate(masks, size=logits.shape[-2:], mode="bilinear", align_corners=False) >= 0.5).float()
        return loss + focal_l1_loss(logits, masks)

    def validation_loss(self, images: torch.Tensor) -> torch.Tensor:
        """The student's error on held-out normal images (STFPM's loss; no simulated anomalies, so that
        validations compare)."""
        with torch.no_grad():
            return pyramid_loss(self.extractor(images), self.student()(images))

    def configure_optimizer(self, total_steps: int | None):
        optimizer = torch.optim.SGD(list(self.trainable_parameters()), lr=self.lr)
        if total_steps is None:
            return optimizer, None
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps, eta_min=self.min_lr)

    def after_training(self, dataset, val) -> None:
        """The task prototype: the mean pooled teacher feature of the training images."""
        self.prototype_ = self.prototype(dataset)

    @torch.inference_mode()
    def prototype(self, images) -> torch.Tensor:
        """(D,) mean of :func:`pooled` teacher features over ``images`` (any input ``predict`` accepts)."""
        total, count = None, 0
        for batch in self._batches(images, None):
            features = pooled(self.extractor(batch.to(self.device))).sum(0, dtype=torch.float64)
            total = features if total is None else total + features
            count += len(batch)
        return (total / count).float().cpu()

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self, adapters: nn.ModuleDict | None = None) -> STFPMGraph:
        """Teacher and adapted student, STFPM's product map and its maximum (``adapters``: another task's)."""
        self._check_fitted("inference_module")
        return STFPMGraph(self.extractor, self.student(adapters)).eval()

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)
