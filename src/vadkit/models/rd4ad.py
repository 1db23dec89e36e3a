"""RD4AD: reverse distillation; a decoder student rebuilds a frozen teacher's features from a one-class embedding.

Deng & Li. "Anomaly Detection via Reverse Distillation from One-Class Embedding", CVPR 2022.
https://arxiv.org/abs/2201.10703 (authors' code: github.com/hq-deng/RD4AD)

As the paper and the authors' code define it:

* teacher encoder: an ImageNet backbone, frozen (WideResNet-50-2 in the paper), tapped at its stride-4, -8
  and -16 stage ends (ResNet layer1..layer3); here the backbone's equivalents (MobileNetV2 ``features.3 / .6
  / .13`` by default);
* one-class bottleneck embedding (OCBE), trained: multi-scale feature fusion (the stride-4 map through two
  3x3 stride-2 convolutions, the stride-8 map through one, each with BatchNorm and ReLU, concatenated with
  the stride-16 map), then a ResNet "layer4"-like stage (first block stride 2) that compresses the fusion
  into the embedding at stride 32 with twice the deepest tapped width;
* student decoder, trained: the encoder reversed, three stages that each double the resolution with a 2x2
  stride-2 transposed convolution in their first block (in place of its 3x3 convolution, and in its
  shortcut) and rebuild the teacher's stride-16, -8 and -4 features;
* loss: per layer, 1 - cosine similarity between the teacher's and the decoder's whole feature maps
  (flattened per image), averaged over the batch, summed over the layers (the authors' code; the paper's
  eq. 2 averages a per-pixel cosine map instead, which the authors report trains worse, issue #22 of their
  repository);
* anomaly map: per layer 1 - cosine similarity along channels at every position, upsampled bilinearly
  (corners aligned) to the input size, summed over layers, smoothed by a Gaussian with sigma = 4. Image
  score: the map's maximum;
* training: Adam, learning rate 0.005, betas (0.5, 0.999), batch size 16, 256 x 256 images, 200 epochs.

Deviations, stated:

* decoder and OCBE for backbones other than ResNets: neither the paper, the authors' code nor anomalib define
  them. With a bottleneck-block ResNet (WideResNet-50-2) the blocks are the authors' (Bottleneck, width per
  group 128, OCBE 3 blocks, decoder 3 / 4 / 6); for every other backbone (ResNet-18 included, as in the
  authors' ``de_resnet18``) basic blocks, 2 per stage, with the widths taken from the teacher's layers: the
  same structure scaled to the backbone (for MobileNetV2: 24 / 32 / 96 channels, embedding 192);
* the Gaussian pads borders by reflection without repeating the edge pixel (scipy's default, which the
  authors use, repeats it): a difference within the 16-pixel border;
* budget and validation: the default stops at ``max_steps`` so that a fit takes minutes on a 2-core CPU;
  ``epochs=200, max_steps=None`` is the paper's. The authors keep their last weights; here the weights with
  the lowest validation loss on held-out normal images are kept when ``fit(val=...)`` is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError
from vadkit.models.backbone_model import BackboneModel
from vadkit.models.trained import TrainedModel, check_number
from vadkit.ops.smoothing import gaussian_blur

#: backbones whose ResNet bottleneck blocks the authors' OCBE and decoder mirror exactly:
#: name -> (width per group, OCBE blocks, decoder blocks of the stride-16 / -8 / -4 stages)
AUTHORS_BOTTLENECK = {"wide_resnet50_2": (128, 3, (3, 4, 6))}
#: every other backbone: basic blocks (the authors' ``de_resnet18`` layout)
BASIC_LAYOUT = (2, (2, 2, 2))


def _conv_bn_relu(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(outputs),
                         nn.ReLU(inplace=True))


def _shortcut(inputs: int, outputs: int, up: bool, down: bool) -> nn.Module | None:
    """The identity path of a block that changes resolution or width (None: identity)."""
    if up:
        return nn.Sequential(nn.ConvTranspose2d(inputs, outputs, 2, stride=2, bias=False), nn.BatchNorm2d(outputs))
    if down or inputs != outputs:
        return nn.Sequential(nn.Conv2d(inputs, outputs, 1, stride=2 if down else 1, bias=False),
                             nn.BatchNorm2d(outputs))
    return None


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual; the first one strided (``down``) or replaced by a 2x2 stride-2
    transposed convolution (``up``)."""

    def __init__(self, inputs: int, outputs: int, *, up: bool = False, down: bool = False) -> None:
        super().__init__()
        first = (nn.ConvTranspose2d(inputs, outputs, 2, stride=2, bias=False) if up
                 else nn.Conv2d(inputs, outputs, 3, stride=2 if down else 1, padding=1, bias=False))
        self.body = nn.Sequential(first, nn.BatchNorm2d(outputs), nn.ReLU(inplace=True),
                                  nn.Conv2d(outputs, outputs, 3, padding=1, bias=False), nn.BatchNorm2d(outputs))
        self.shortcut = _shortcut(inputs, outputs, up, down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.body(x) + identity)


class BottleneckBlock(nn.Module):
    """ResNet's bottleneck (1x1, 3x3, 1x1, expansion 4) with ``width_per_group``; the 3x3 strided (``down``)
    or replaced by a 2x2 stride-2 transposed convolution (``up``), as in the authors' ``de_resnet``."""

    def __init__(self, inputs: int, outputs: int, width_per_group: int, *, up: bool = False,
                 down: bool = False) -> None:
        super().__init__()
        width = outputs // 4 * width_per_group // 64
        middle = (nn.ConvTranspose2d(width, width, 2, stride=2, bias=False) if up
                  else nn.Conv2d(width, width, 3, stride=2 if down else 1, padding=1, bias=False))
        self.body = nn.Sequential(
            nn.Conv2d(inputs, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            middle, nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, outputs, 1, bias=False), nn.BatchNorm2d(outputs))
        self.shortcut = _shortcut(inputs, outputs, up, down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.body(x) + identity)


def _stage(inputs: int, outputs: int, blocks: int, width_per_group: int | None, **first) -> nn.Sequential:
    def block(i: int, o: int, **options):
        return BasicBlock(i, o, **options) if width_per_group is None else BottleneckBlock(i, o, width_per_group,
                                                                                            **options)
    return nn.Sequential(block(inputs, outputs, **first), *(block(outputs, outputs) for _ in range(blocks - 1)))


class OneClassBottleneck(nn.Module):
    """OCBE: multi-scale feature fusion of the three teacher maps, then the one-class embedding stage."""

    def __init__(self, channels: Sequence[int], blocks: int, width_per_group: int | None) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.from_stride_4 = nn.Sequential(_conv_bn_relu(c1, c2), _conv_bn_relu(c2, c3))
        self.from_stride_8 = _conv_bn_relu(c2, c3)
        self.embedding = _stage(3 * c3, 2 * c3, blocks, width_per_group, down=True)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = features
        fused = torch.cat([self.from_stride_4(f1), self.from_stride_8(f2), f3], dim=1)
        return self.embedding(fused)


class ReverseDecoder(nn.Module):
    """The student: from the embedding (2 c3, stride 32) back to the teacher's stride-16, -8 and -4 maps."""

    def __init__(self, channels: Sequence[int], blocks: Sequence[int], width_per_group: int | None) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.stages = nn.ModuleList([_stage(2 * c3, c3, blocks[0], width_per_group, up=True),
                                     _stage(c3, c2, blocks[1], width_per_group, up=True),
                                     _stage(c2, c1, blocks[2], width_per_group, up=True)])

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        outputs, x = [], embedding
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs[::-1]  # shallow to deep, as the teacher's layers


def cosine_loss(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor]) -> torch.Tensor:
    """1 - cosine similarity of each image's whole feature map (flattened), batch mean, summed over layers."""
    return sum((1 - F.cosine_similarity(t.flatten(1), s.flatten(1), dim=1)).mean() for t, s in zip(teacher, student))


def cosine_map(teacher: Sequence[torch.Tensor], student: Sequence[torch.Tensor], size: tuple[int, int],
               sigma: float) -> torch.Tensor:
    """RD4AD's anomaly map (B, H, W): per layer 1 - cosine similarity along channels, upsampled (corners
    aligned) to ``size``, summed over layers, Gaussian-smoothed."""
    total = None
    for t, s in zip(teacher, student):
        layer = 1 - F.cosine_similarity(t, s, dim=1)
        layer = F.interpolate(layer[:, None], size=size, mode="bilinear", align_corners=True)[:, 0]
        total = layer if total is None else total + layer
    return gaussian_blur(total, sigma)


class RD4AD(TrainedModel, BackboneModel):
    """RD4AD (Deng & Li, CVPR 2022). See the module docstring for the method and its deviations.

    Args:
        backbone, layers, weights, image_size, crop_size: the teacher encoder (layers: three, shallow to
            deep; default the stride-4, -8 and -16 stage ends, the paper's layer1..layer3).
        lr, betas: Adam, the paper's 0.005 and (0.5, 0.999).
        sigma: Gaussian smoothing of the map, in pixels (the paper's 4).
        epochs, max_steps, max_time: the training budget. Default ``max_steps=200`` (minutes on a 2-core CPU);
            the paper's is ``epochs=200, max_steps=None``.
        batch_size: training batch (the paper's 16).
        seed, validate_every, patience, num_workers: see :mod:`vadkit.models.trained`.
    """

    name = "rd4ad"
    learned: ClassVar[tuple[str, ...]] = ("bottleneck_", "decoder_")

    def __init__(self, *, backbone: str = "mobilenet_v2", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 256, crop_size: int | None = None, resize: str = "stretch",
                 lr: float = 0.005, betas: Sequence[float] = (0.5, 0.999), sigma: float = 4.0,
                 epochs: int | None = None, max_steps: int | None = 200, max_time: float | None = None,
                 batch_size: int = 16, seed: int = 0, validate_every: int | None = None,
                 patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers,
                         backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        from vadkit.models.backbone_model import check_sigma

        check_number("lr", lr)
        betas = list(betas) if isinstance(betas, (list, tuple)) else betas
        if not (isinstance(betas, list) and len(betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1
                                                                   for b in betas)):
            raise ParameterError(f"betas must be two numbers in [0, 1), got {betas!r}")
        check_sigma(sigma)
        if len(self.chosen_layers()) != 3:
            raise ParameterError(f"RD4AD taps exactly three layers (shallow to deep), got {self.chosen_layers()}")
        self.lr, self.betas, self.sigma = lr, betas, sigma
        self.bottleneck_: nn.Module | None = None
        self.decoder_: nn.Module | None = None

    def default_layers(self) -> list[str]:
        return self.stride_4_8_16_layers()

    # -- training -------------------------------------------------------------------------------------
    def build_networks(self) -> None:
        from vadkit.backbones import get_spec

        spec = get_spec(self.backbone)
        channels = [spec.channels[layer] for layer in self.chosen_layers()]
        width, oce_blocks, decoder_blocks = AUTHORS_BOTTLENECK.get(self.backbone, (None, *BASIC_LAYOUT))
        self.bottleneck_ = OneClassBottleneck(channels, oce_blocks, width)
        self.decoder_ = ReverseDecoder(channels, decoder_blocks, width)

    def _teacher(self, images: torch.Tensor) -> list[torch.Tensor]:
        features = self.extractor(images)
        return [features[layer] for layer in self.chosen_layers()]

    def training_step(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher = self._teacher(images)
        return cosine_loss(teacher, self.decoder_(self.bottleneck_(teacher)))

    def configure_optimizer(self, total_steps: int | None):
        optimizer = torch.optim.Adam(list(self.trainable_parameters()), lr=self.lr, betas=tuple(self.betas))
        return optimizer, None

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self) -> RD4ADGraph:
        self._check_fitted("inference_module")
        return RD4ADGraph(self.extractor, self.chosen_layers(), self.bottleneck_, self.decoder_, self.sigma)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)


class RD4ADGraph(nn.Module):
    """RD4AD's inference (also what ``RD4AD.predict`` runs): teacher, OCBE, decoder, the summed cosine map,
    smoothed, and its maximum."""

    def __init__(self, teacher: nn.Module, layers: Sequence[str], bottleneck: nn.Module, decoder: nn.Module,
                 sigma: float) -> None:
        super().__init__()
        self.teacher, self.layers, self.bottleneck, self.decoder, self.sigma = teacher, list(layers), bottleneck, \
            decoder, sigma

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.teacher(images)
        teacher = [features[layer] for layer in self.layers]
        maps = cosine_map(teacher, self.decoder(self.bottleneck(teacher)), tuple(images.shape[-2:]), self.sigma)
        return maps.flatten(1).amax(1), maps
