"""STFPM: a student network learns to reproduce a pretrained teacher's feature pyramid on normal images only.

Wang, Han, Ding, Huang. "Student-Teacher Feature Pyramid Matching for Anomaly Detection", BMVC 2021.
https://arxiv.org/abs/2103.04257 (authors' code: github.com/gdwang08/STFPM)

As the paper and the authors' code define it:

* teacher: an ImageNet backbone, frozen (ResNet-18 in the paper), tapped at three stages: ResNet conv2_x,
  conv3_x, conv4_x (layer1..layer3), i.e. the stride-4, -8 and -16 stage ends; here the backbone's
  equivalents (MobileNetV2 ``features.3`` / ``.6`` / ``.13`` by default);
* student: the same architecture cut at the same depth, randomly initialised, trained;
* features are L2-normalised along channels at every position;
* loss: per layer, the squared distance between normalised teacher and student features summed over
  channels and averaged over positions (and the batch), summed over layers with weight 1;
* anomaly map: per layer 1/2 ||t - s||^2 of the normalised features at every position, upsampled bilinearly
  to the input size; the maps of the layers are multiplied; no smoothing. Image score: the map's maximum;
* training: SGD, learning rate 0.4, momentum 0.9, weight decay 1e-4, batch size 32, 256 x 256 images,
  100 epochs; the checkpoint kept is the one with the lowest validation loss on held-out normal images
  (the authors hold out 20% of the training images).

Deviations, stated:

* the paper's eq. 1 has a factor 1/2 in the loss that the authors' code (whose learning rate of 0.4 goes with
  it) does not: the loss here is the code's; the 1/2 would only halve the effective learning rate.
  anomalib sums over the batch instead of averaging, i.e. a gradient ``batch_size / 2`` times larger at the
  same learning rate (and uses weight decay 1e-3): ``lr=6.4, weight_decay=6.25e-5`` takes anomalib's steps
  at batch 32, which localises better on some sets and worse on others (BENCHMARKS.md, "STFPM beside
  anomalib");
* the budget: ``epochs=100`` is the paper's; the default here stops at ``max_steps`` (see the class docstring)
  so that a fit takes minutes on a 2-core CPU; BENCHMARKS.md shows how accuracy moves with the budget;
* validation: every epoch on the validation normals given to ``fit(val=...)``; the weights with the lowest
  validation loss are kept (the authors keep the lowest mean anomaly map on the same images, a close
  relative: both are the student's error on normal images);
* the default backbone is MobileNetV2 (the edge setting of this library); ``backbone="resnet18"`` is the
  paper's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F

from vadkit.data.transforms import Size
from vadkit.models.backbone_model import BackboneModel
from vadkit.models.trained import TrainedModel, check_number


def normalised_distance(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """(B, h, w) squared distance, summed over channels, of the channel-wise L2-normalised feature maps."""
    return (F.normalize(teacher, dim=1) - F.normalize(student, dim=1)).pow(2).sum(1)


def pyramid_loss(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor]) -> torch.Tensor:
    """STFPM's loss: per layer the mean over batch and positions of :func:`normalised_distance`, summed."""
    return sum(normalised_distance(teacher[layer], student[layer]).mean() for layer in teacher)


def product_map(teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor],
                size: tuple[int, int]) -> torch.Tensor:
    """STFPM's anomaly map (B, H, W): per layer 1/2 of :func:`normalised_distance`, upsampled bilinearly to
    ``size``, multiplied over the layers."""
    result = None
    for layer in teacher:
        layer_map = 0.5 * normalised_distance(teacher[layer], student[layer])
        layer_map = F.interpolate(layer_map[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        result = layer_map if result is None else result * layer_map
    return result


class STFPM(TrainedModel, BackboneModel):
    """STFPM (Wang et al., BMVC 2021). See the module docstring for the method and its deviations.

    Args:
        backbone, layers, weights, image_size, crop_size: the teacher (layers: default the stride-4, -8 and
            -16 stage ends, the paper's conv2_x..conv4_x); the student has the same architecture.
        lr, momentum, weight_decay: SGD, the paper's 0.4 / 0.9 / 1e-4.
        epochs, max_steps, max_time: the training budget (the first reached stops training). Default:
            ``max_steps=200`` (minutes on a 2-core CPU); the paper's is ``epochs=100, max_steps=None``.
        batch_size: training batch (the paper's 32).
        seed: initial weights and shuffling.
        validate_every, patience, num_workers: see :mod:`vadkit.models.trained`.
    """

    name = "stfpm"
    learned: ClassVar[tuple[str, ...]] = ("student_",)

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 lr: float = 0.4, momentum: float = 0.9, weight_decay: float = 1e-4,
                 epochs: int | None = None, max_steps: int | None = 200, max_time: float | None = None,
                 batch_size: int = 32, seed: int = 0, validate_every: int | None = None,
                 patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers,
                         backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        check_number("lr", lr)
        check_number("momentum", momentum, positive=False)
        check_number("weight_decay", weight_decay, positive=False)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.student_: torch.nn.Module | None = None

    def default_layers(self) -> list[str]:
        return self.stride_4_8_16_layers()

    # -- training -------------------------------------------------------------------------------------
    def build_networks(self) -> None:
        """The student: the teacher's architecture up to its deepest tapped layer, randomly initialised."""
        from vadkit.backbones import create_extractor

        self.student_ = create_extractor(self.backbone, self.chosen_layers(), pretrained=False, frozen=False)

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self.extractor(images)
        return pyramid_loss(teacher, self.student_(images))

    def configure_optimizer(self, total_steps: int | None):
        optimizer = torch.optim.SGD(list(self.trainable_parameters()), lr=self.lr, momentum=self.momentum,
                                    weight_decay=self.weight_decay)
        return optimizer, None

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self) -> STFPMGraph:
        self._check_fitted("inference_module")
        return STFPMGraph(self.extractor, self.student_)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)


class STFPMGraph(torch.nn.Module):
    """STFPM's inference (also what ``STFPM.predict`` runs): teacher and student on the same images, the
    product map and its maximum. ``forward(images) -> (scores (B,), maps (B, H, W))``."""

    def __init__(self, teacher: torch.nn.Module, student: torch.nn.Module) -> None:
        super().__init__()
        self.teacher, self.student = teacher, student

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = product_map(self.teacher(images), self.student(images), tuple(images.shape[-2:]))
        return maps.flatten(1).amax(1), maps
