"""A part segmenter: torchvision's Mask R-CNN on an offline MobileNetV2-FPN, fine-tuned on a few annotated images.

SADSeM segments the object into its sub-classes with a Mask R-CNN (He et al., ICCV 2017) fine-tuned on about ten
annotated normal images per class (a COCO-pretrained ResNet-50 in the paper). No COCO checkpoint can be downloaded
here, so the detector is built on the ImageNet MobileNetV2 vadkit loads offline: its stride-8, -16 and -32 stage
ends (``features.6``, ``.13``, ``.18``) feed torchvision's feature pyramid, and the RPN, box and mask heads are
trained from scratch on the annotations while the backbone stays frozen (few images do not train a backbone; a
frozen one also keeps CPU fine-tuning to minutes). A user with a COCO Mask R-CNN passes its weights to
:func:`fine_tune` through ``initial_state``.

Instances: each connected component of a sub-class's mask is one instance (screws, holes), boxed by its extent.
Inference paints, for each sub-class in the annotations' merge order, the union of its detected instance masks
(score >= ``score_threshold``, mask > 0.5) over what came before, as the annotations are merged.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from vadkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Transform
from vadkit.segmentation.parts import PartAnnotations

FPN_LAYERS = ("features.6", "features.13", "features.18")
FPN_CHANNELS = 64


class _PyramidBackbone(nn.Module):
    """The frozen MobileNetV2 taps followed by a feature pyramid: what MaskRCNN calls its backbone."""

    def __init__(self, extractor: nn.Module, in_channels: list[int]) -> None:
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        self.body = extractor
        self.fpn = FeaturePyramidNetwork(in_channels, FPN_CHANNELS, extra_blocks=LastLevelMaxPool())
        self.out_channels = FPN_CHANNELS

    def forward(self, images: torch.Tensor) -> OrderedDict:
        with torch.no_grad():
            features = self.body(images)
        return self.fpn(OrderedDict((str(i), features[name]) for i, name in enumerate(FPN_LAYERS)))


class PartMaskRCNN(nn.Module):
    """Normalised images (B, 3, H, W) -> partition (B, K + 1, H, W), part 0 the background (package docstring).

    ``part_names``: the sub-classes in merge order. ``image_size``: the model's input (H, W).
    """

    def __init__(self, part_names: tuple[str, ...], image_size: tuple[int, int], weights: str | None = None,
                 score_threshold: float = 0.5) -> None:
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator
        from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
        from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

        from vadkit.backbones import create_extractor, get_spec

        self.part_names = ("background", *part_names)
        self.score_threshold = score_threshold
        extractor = create_extractor("mobilenet_v2", list(FPN_LAYERS), weights=weights)
        extractor.requires_grad_(False)
        channels = [get_spec("mobilenet_v2").channels[name] for name in FPN_LAYERS]
        anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
        classes = len(part_names) + 1
        # heads sized for a few parts and a CPU: the pyramid's 64 channels throughout (torchvision's defaults,
        # 256-wide mask convolutions and a 1024-wide box MLP, are built for COCO's 80 classes), and sampling
        # budgets for images with a handful of instances
        self.detector = MaskRCNN(
            _PyramidBackbone(extractor, channels), min_size=min(image_size), max_size=max(image_size),
            image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), rpn_anchor_generator=anchors,
            rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=100, rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=100, rpn_batch_size_per_image=64, box_batch_size_per_image=64,
            box_detections_per_img=20,
            box_head=TwoMLPHead(FPN_CHANNELS * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, classes),
            mask_head=MaskRCNNHeads(FPN_CHANNELS, [FPN_CHANNELS] * 4, 1),
            mask_predictor=MaskRCNNPredictor(FPN_CHANNELS, FPN_CHANNELS, classes))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What fine-tuning changed (the pyramid and the heads): the frozen backbone is the published weights."""
        return {key: value for key, value in self.detector.state_dict().items() if not key.startswith("backbone.body.")}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.detector.load_state_dict(state, strict=False)
        if unexpected or any(not key.startswith("backbone.body.") for key in missing):
            raise ValueError(f"the segmenter state does not fit this Mask R-CNN (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]})")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images * self.std + self.mean).clamp(0.0, 1.0)
        detections = self.detector(list(pixels))
        height, width = images.shape[-2:]
        partitions = []
        for found in detections:
            labels = torch.zeros(height, width, dtype=torch.long, device=images.device)
            keep = found["scores"] >= self.score_threshold
            for part in range(1, len(self.part_names)):
                chosen = keep & (found["labels"] == part)
                if chosen.any():
                    labels[(found["masks"][chosen, 0] > 0.5).any(dim=0)] = part
            partitions.append(torch.nn.functional.one_hot(labels, len(self.part_names)).permute(2, 0, 1))
        return torch.stack(partitions).to(images.dtype)


def instance_targets(labels: np.ndarray) -> dict[str, torch.Tensor]:
    """Mask R-CNN targets of a partition (H, W) (0 background): one instance per connected component of a part."""
    from scipy import ndimage

    boxes, classes, masks = [], [], []
    for part in np.unique(labels):
        if part == 0:
            continue
        components, count = ndimage.label(labels == part)
        for component in range(1, count + 1):
            mask = components == component
            rows, columns = np.nonzero(mask)
            if mask.sum() < 4:  # a speck of annotation noise, not an instance
                continue
            boxes.append([columns.min(), rows.min(), columns.max() + 1, rows.max() + 1])
            classes.append(int(part))
            masks.append(mask)
    height, width = labels.shape
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(classes, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, height, width), bool)).to(torch.uint8)}


def fine_tune(annotations: PartAnnotations, transform: Transform, *, steps: int = 200, lr: float = 0.01,
              batch_size: int = 2, seed: int = 0, weights: str | None = None, max_time: float | None = None,
              initial_state: dict[str, torch.Tensor] | None = None, progress: bool | None = None
              ) -> tuple[PartMaskRCNN, dict]:
    """Fine-tune a :class:`PartMaskRCNN` on ``annotations`` at ``transform``'s input geometry (SGD with momentum,
    horizontal flips); returns it in eval mode and ``{"steps", "losses", "seconds"}``."""
    from vadkit.data.io import load_image
    from vadkit.progress import track

    size = transform.output_size
    model = PartMaskRCNN(annotations.names, size, weights=weights)
    if initial_state is not None:
        model.load_trainable_state(initial_state)
    images, targets = [], []
    for index, path in enumerate(annotations.images):
        picture = load_image(path)
        images.append(torch.from_numpy(transform.display_array(picture).copy()).permute(2, 0, 1).float() / 255.0)
        # the labels take the image's geometry (the same resize, padding and crop), nearest-neighbour
        labels = np.zeros(size, dtype=np.int64)
        full = annotations.label_map(index, (picture.height, picture.width))
        for part in range(1, len(annotations.names) + 1):
            labels[transform.mask_array(full == part)] = part
        targets.append(instance_targets(labels))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the heads' initialisation
    model.detector.train()
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.SGD(parameters, lr=lr, momentum=0.9, weight_decay=1e-4)
    losses, started = [], time.perf_counter()
    for _ in track(range(steps), "fine-tuning the part segmenter", total=steps, enabled=progress):
        chosen = torch.randint(len(images), (min(batch_size, len(images)),), generator=generator).tolist()
        flip = torch.rand(len(chosen), generator=generator) < 0.5
        batch, batch_targets = [], []
        for i, flipped in zip(chosen, flip.tolist()):
            image, target = images[i], dict(targets[i])
            if flipped:
                width = image.shape[-1]
                image, target["masks"] = image.flip(-1), target["masks"].flip(-1)
                target["boxes"] = target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + \
                    torch.tensor([width, 0, width, 0])
            batch.append(image)
            batch_targets.append(target)
        loss = sum(model.detector(batch, batch_targets).values())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if max_time is not None and time.perf_counter() - started > max_time:
            break
    model.detector.eval()
    return model.eval(), {"steps": len(losses), "losses": losses, "seconds": time.perf_counter() - started}
