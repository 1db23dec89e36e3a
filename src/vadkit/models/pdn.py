"""EfficientAD's patch description network (PDN) and the distillation that makes its teacher.

Batzner, Heckler, König. "EfficientAD: Accurate Visual Anomaly Detection at Millisecond-Level Latencies",
WACV 2024. https://arxiv.org/abs/2303.14535 (appendix: Table 5 for PDN-S, Algorithm 1 for the distillation).

PDN-S (the paper's Table 5; also anomalib's ``SmallPatchDescriptionNetwork``): four convolutions, 128 4x4,
256 4x4, 256 3x3 and ``out_channels`` 4x4 kernels, stride 1, ReLU after the first three, a 2x2 average pool
with stride 2 after the first two. With the paddings of Table 5 (3, pool 1, 3, pool 1, 1, 0) a 256 x 256
image gives a 64 x 64 map (what the distillation target has); without padding, as anomalib and EfficientAD's
training use it by default, 56 x 56 (each output sees a 33 x 33 patch). The weights are the same either way.

Distillation (Algorithm 1 of the appendix): a pretrained feature extractor Psi gives, for an image resized to
W x H, a 384-channel map at the PDN's output resolution; Psi's outputs are normalised by their per-channel
mean and standard deviation (computed on distillation images before training), and the PDN, fed the same
image at 256 x 256, regresses them with a mean squared error; Adam, learning rate 1e-4, weight decay 1e-5,
batch 16, 60,000 steps; every image is turned grayscale with probability 0.1. The paper's Psi is PatchCore's
WideResNet-101 feature extractor (layer2 + layer3, each position averaged with its 3 x 3 neighbourhood, layer3
upsampled to layer2's resolution, concatenated and reduced to 384 channels by average pooling along the
channels) on 512 x 512 images, distilled on ImageNet.

Here (offline, no WideResNet-101 weights and no ImageNet): Psi is the same PatchCore construction on any vadkit
backbone (default MobileNetV2, ``features.6`` + ``.13`` + ``.17``: 448 channels reduced to 384; the backbone's
own default pair would give only 128), on images sized so that its shallowest tapped layer has the PDN's
padded output resolution (2 x for a stride-8 layer, the paper's 512 for 256); and the distillation images are
any folder of images or the ELPV package's cells. The steps default to a CPU budget (``vadkit
distill-teacher --steps``; the paper's 60,000 are one option away). A backbone with fewer than 384 channels
in the tapped layers is stretched to 384 by the same channel pooling (channels repeated).

A teacher file (:func:`save_teacher`) holds the PDN's weights and metadata (backbone, layers, steps, image
source, SHA-256 of the weights); :func:`load_teacher` reads it back (weights only, never arbitrary pickles).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vadkit.errors import DataError, ModelFileError, WeightsNotFoundError

#: channels of the teacher's output (EfficientAD-S and -M alike)
TEACHER_CHANNELS = 384
TEACHER_FORMAT = "vadkit-efficientad-teacher"
#: Algorithm 1: probability of turning a distillation image grayscale
DISTILL_GRAYSCALE = 0.1
#: MobileNetV2 layers whose PatchCore features are distilled (see the module docstring)
DISTILL_LAYERS = {"mobilenet_v2": ("features.6", "features.13", "features.17")}
DISTILL_COMMAND = "vadkit distill-teacher --backbone {backbone} --images <folder of images, or elpv>"


class SmallPDN(nn.Module):
    """PDN-S. ``forward(images)``: ImageNet-normalised (B, 3, H, W) -> (B, out_channels, h, w), with h = H / 4
    (``padding=True``) or H / 4 - 8 (``padding=False``) for H a multiple of 4."""

    def __init__(self, out_channels: int = TEACHER_CHANNELS, padding: bool = False) -> None:
        super().__init__()
        p = 1 if padding else 0
        self.padding = padding
        self.conv1 = nn.Conv2d(3, 128, kernel_size=4, padding=3 * p)
        self.conv2 = nn.Conv2d(128, 256, kernel_size=4, padding=3 * p)
        self.conv3 = nn.Conv2d(256, 256, kernel_size=3, padding=1 * p)
        self.conv4 = nn.Conv2d(256, out_channels, kernel_size=4)
        self.pool1 = nn.AvgPool2d(kernel_size=2, stride=2, padding=1 * p)
        self.pool2 = nn.AvgPool2d(kernel_size=2, stride=2, padding=1 * p)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.pool1(F.relu(self.conv1(images)))
        x = self.pool2(F.relu(self.conv2(x)))
        return self.conv4(F.relu(self.conv3(x)))


def pdn_output_size(size: int, padding: bool) -> int:
    """Side of the PDN's output map for a ``size`` x ``size`` input (convolution arithmetic, layer by layer)."""
    p = 1 if padding else 0
    size = size + 6 * p - 3                     # conv1 4x4
    size = (size + 2 * p - 2) // 2 + 1          # pool1
    size = size + 6 * p - 3                     # conv2 4x4
    size = (size + 2 * p - 2) // 2 + 1          # pool2
    size = size + 2 * p - 2                     # conv3 3x3
    return size - 3                             # conv4 4x4, no padding


# ---------------------------------------------------------------- the distillation target Psi


def distill_layers(backbone: str) -> list[str]:
    """The backbone layers Psi taps: the MobileNetV2 triple above, else the backbone's default (PatchCore) pair."""
    from vadkit.backbones import get_spec

    return list(DISTILL_LAYERS.get(backbone, get_spec(backbone).default_layers))


def channel_pool(embedding: torch.Tensor, channels: int = TEACHER_CHANNELS) -> torch.Tensor:
    """(B, C, h, w) -> (B, channels, h, w): average pooling along the channels (PatchCore's reduction)."""
    batch, _, height, width = embedding.shape
    flat = embedding.permute(0, 2, 3, 1).reshape(batch * height * width, 1, -1)
    pooled = F.adaptive_avg_pool1d(flat, channels)
    return pooled.reshape(batch, height, width, channels).permute(0, 3, 1, 2).contiguous()


def patchcore_features(features: dict[str, torch.Tensor], layers: Sequence[str],
                       channels: int = TEACHER_CHANNELS) -> torch.Tensor:
    """Psi's output from a backbone's feature maps: 3 x 3 local averages, brought to the shallowest layer's
    resolution and concatenated (:func:`vadkit.ops.patch_features.pyramid_embedding`), pooled to ``channels``."""
    from vadkit.ops.patch_features import pyramid_embedding

    return channel_pool(pyramid_embedding(features, layers, patch_size=3), channels)


class FeatureTarget(nn.Module):
    """Psi: images in [0, 1] (B, 3, S, S) -> the 384-channel PatchCore features of the backbone (unnormalised)."""

    def __init__(self, extractor: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.extractor, self.layers = extractor, list(layers)
        self.register_buffer("mean", torch.tensor(extractor.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(extractor.std).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return patchcore_features(self.extractor((images - self.mean) / self.std), self.layers)


def channel_statistics(maps: Sequence[torch.Tensor] | Callable[[], Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation (1, C, 1, 1) of every element of the given (B, C, h, w) maps,
    accumulated in float64 (one pass, constant memory)."""
    total = squares = None
    count = 0
    for block in maps:
        block = block.double()
        s, q = block.sum(dim=(0, 2, 3)), block.pow(2).sum(dim=(0, 2, 3))
        total, squares = (s, q) if total is None else (total + s, squares + q)
        count += block.numel() // block.shape[1]
    mean = total / count
    variance = (squares / count - mean.pow(2)).clamp_min(0) * count / max(count - 1, 1)
    return mean.float().view(1, -1, 1, 1), variance.sqrt().float().view(1, -1, 1, 1)


# ---------------------------------------------------------------- images


#: joins several image sources into one (``"elpv + /data/bottle/train"``): pooled distillation / penalty images
SOURCE_SEPARATOR = " + "


def image_source_paths(source: str | Path) -> list[Path]:
    """The image files of a distillation / penalty source: ``"elpv"`` (the elpv-dataset package's cells), a
    folder (searched recursively), or several of those joined by :data:`SOURCE_SEPARATOR` (pooled, in order)."""
    from vadkit.data import list_images

    parts = str(source).split(SOURCE_SEPARATOR)
    if len(parts) > 1:
        return [path for part in parts for path in image_source_paths(part)]
    if str(source) == "elpv":
        from vadkit.data.elpv import elpv_data_dir

        return list_images(elpv_data_dir() / "images")
    paths = list_images(source, recursive=True)
    if not paths:
        raise DataError(f"no images in {source} (searched recursively); give a folder of images, or elpv")
    return paths


def random_grayscale(images: torch.Tensor, probability: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Turn each image in [0, 1] (B, 3, H, W) grayscale (ITU-R 601 luma, on all three channels) with
    ``probability``."""
    from torchvision.transforms.functional import rgb_to_grayscale

    chosen = torch.rand(len(images), generator=generator) < probability
    if not chosen.any():
        return images
    gray = rgb_to_grayscale(images, num_output_channels=3)
    return torch.where(chosen.view(-1, 1, 1, 1).to(images.device), gray, images)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalise(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images -> the ImageNet normalisation the PDN takes (torchvision's, as the paper's code)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


# ---------------------------------------------------------------- distillation


def distillation_loss(teacher: nn.Module, target: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Algorithm 1: the mean over all elements of the squared difference between the normalised target and
    the PDN's output on the same images (ImageNet-normalised, at the PDN's input size)."""
    return (teacher(images) - target).pow(2).mean()


def distill_teacher(paths: Sequence[str | Path], *, backbone: str = "mobilenet_v2", steps: int = 2000,
                    image_size: int = 256, batch_size: int = 16, lr: float = 1e-4, weight_decay: float = 1e-5,
                    stat_images: int = 256, seed: int = 0, source: str = "", weights: str | None = None,
                    max_time: float | None = None,
                    progress: bool | None = None) -> tuple[SmallPDN, dict[str, Any]]:
    """Distil a PDN-S teacher from ``backbone``'s PatchCore features on the images ``paths`` (module docstring).

    Returns the teacher (eval mode, padded) and its metadata. ``stat_images``: how many images the channel
    normalisation is computed on (the paper's 10,000). ``source`` describes where the images came from.
    ``max_time``: seconds of distillation (after the statistics) at which it stops early, whichever of
    ``steps`` and ``max_time`` comes first; the metadata's ``steps`` counts the steps actually taken.
    """
    from vadkit.backbones import create_extractor, get_spec
    from vadkit.backbones.extractor import state_dict_sha256
    from vadkit.data import ImageDataset, Sample, Transform
    from vadkit.progress import track

    started = time.perf_counter()
    layers = distill_layers(backbone)
    spec = get_spec(backbone)
    output = pdn_output_size(image_size, padding=True)
    stride = min(spec.layers[layer] for layer in layers)
    psi_size = output * stride  # Psi's shallowest map then has the PDN's (padded) output resolution
    extractor = create_extractor(backbone, layers, weights=weights)
    psi = FeatureTarget(extractor, layers).eval()
    dataset = ImageDataset([Sample(Path(p)) for p in paths],
                           Transform(image_size=psi_size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)))
    generator = torch.Generator().manual_seed(seed)

    def batch_of(indices: torch.Tensor) -> torch.Tensor:
        images = torch.stack([dataset[int(i)]["image"] for i in indices])
        return random_grayscale(images, DISTILL_GRAYSCALE, generator)

    def targets(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            features = psi(images)
        if features.shape[-1] != output:  # a backbone whose stride does not divide exactly
            features = F.interpolate(features, size=(output, output), mode="bilinear", align_corners=False)
        return features

    n_stat = min(stat_images, len(dataset))
    order = torch.randperm(len(dataset), generator=generator)[:n_stat]
    mean, std = channel_statistics(targets(batch_of(chunk)) for chunk in order.split(batch_size))
    std = std.clamp_min(1e-6)

    torch.manual_seed(seed)
    teacher = SmallPDN(TEACHER_CHANNELS, padding=True).to(memory_format=torch.channels_last)  # 2x on a CPU
    optimizer = torch.optim.Adam(teacher.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    deadline = None if max_time is None else time.perf_counter() + max_time
    for _ in track(range(steps), f"distilling a PDN teacher from {backbone}", total=steps, enabled=progress):
        if deadline is not None and time.perf_counter() >= deadline:
            break
        images = batch_of(torch.randint(len(dataset), (batch_size,), generator=generator))
        target = (targets(images) - mean) / std
        small = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
        small = imagenet_normalise(small).contiguous(memory_format=torch.channels_last)
        loss = distillation_loss(teacher, target, small)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    teacher.eval()
    tail = losses[-max(1, min(50, len(losses) // 5)):] if losses else [float("nan")]
    metadata = {
        "backbone": backbone, "layers": layers, "backbone_weights": extractor.weights_source,
        "backbone_sha256": extractor.weights_sha256, "images": source, "n_images": len(dataset),
        "steps": len(losses), "max_steps": steps, "max_time": max_time, "batch_size": batch_size, "image_size": image_size, "feature_image_size": psi_size,
        "lr": lr, "weight_decay": weight_decay, "stat_images": n_stat, "seed": seed,
        "first_loss": losses[0] if losses else None, "final_loss": sum(tail) / len(tail),
        "seconds": round(time.perf_counter() - started, 1), "out_channels": TEACHER_CHANNELS,
        "sha256": state_dict_sha256(teacher.state_dict()),
    }
    return teacher, metadata


# ---------------------------------------------------------------- teacher files


def default_teacher_path(backbone: str, cache_dir: str | Path | None = None) -> Path:
    """Where a teacher distilled from ``backbone`` is cached: ``$VADKIT_HOME/weights/efficientad_teacher_<name>.pth``
    (the folder of :func:`vadkit.backbones.weights.weights_cache_dir`)."""
    from vadkit.backbones.weights import weights_cache_dir

    return weights_cache_dir(cache_dir) / f"efficientad_teacher_{backbone.replace(':', '_').replace('/', '_')}.pth"


def save_teacher(path: str | Path, teacher: SmallPDN, metadata: dict[str, Any]) -> Path:
    """Write the teacher's weights and metadata atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": TEACHER_FORMAT, "format_version": 1, "metadata": metadata,
               "state_dict": {key: value.detach().cpu() for key, value in teacher.state_dict().items()}}
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    partial.replace(path)
    return path


def load_teacher(path: str | Path, padding: bool = False) -> tuple[SmallPDN, dict[str, Any]]:
    """A teacher file's PDN (eval mode, frozen; ``padding`` as the caller uses it) and metadata.

    Raises:
        WeightsNotFoundError: no such file (naming the command that makes one).
        ModelFileError: the file is not a teacher file, or its weights do not match its recorded SHA-256.
    """
    from vadkit.backbones.extractor import state_dict_sha256

    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f"EfficientAD teacher file {path} does not exist: distil one with "
                                   f"`vadkit distill-teacher --images <folder or elpv> --out {path}`")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ModelFileError(f"{path} cannot be read as a teacher file ({type(error).__name__}); "
                             "distil it again with `vadkit distill-teacher`") from None
    if not isinstance(payload, dict) or payload.get("format") != TEACHER_FORMAT:
        raise ModelFileError(f"{path} is not an EfficientAD teacher file (made by `vadkit distill-teacher`)")
    teacher = SmallPDN(TEACHER_CHANNELS, padding=padding)
    teacher.load_state_dict(payload["state_dict"])
    metadata = dict(payload["metadata"])
    if state_dict_sha256(teacher.state_dict()) != metadata.get("sha256"):
        raise ModelFileError(f"the weights in {path} do not match the SHA-256 recorded in it: the file is damaged")
    teacher.requires_grad_(False)
    return teacher.eval(), metadata
