"""Deterministic preprocessing shared by training, evaluation and inference.

One :class:`Transform` turns an RGB image into the normalised tensor a backbone expects and its mask into a
boolean map aligned with it, pixel for pixel. It is a small frozen dataclass (plain numbers only) so that a
model file can store it and reproduce exactly the preprocessing it was trained with.

Steps, in order: resize to ``image_size`` (an int means a square; bilinear with antialiasing, as Pillow does
it, which matches torchvision's ``Resize(antialias=True)`` on PIL input), optional centre crop to
``crop_size`` (torchvision's rounding of the offsets), scale to [0, 1], normalise by ``mean``/``std``.
Masks take the same geometry with nearest-neighbour resizing, so they stay binary.
There is no random augmentation here: anomaly detection learns "normal" from the data as it is.

Importing this module does not import torch (only the tensor-returning methods do): the torch-free edge
runtime (:mod:`vadkit.edge.runtime`) preprocesses with :meth:`Transform.array`, the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vadkit.data.io import to_rgb

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Size = int | tuple[int, int]


def _as_hw(size: Size, name: str) -> tuple[int, int]:
    """``(H, W)`` from an int (square) or a pair; rejects non-positive sizes."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, (int, np.integer)) for v in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{name} must be an int or a (height, width) pair of ints, got {size!r}")
    if min(hw) <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return hw


def _crop_box(full: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a centred crop, rounded as torchvision's ``center_crop`` does."""
    return int(round((full[0] - crop[0]) / 2.0)), int(round((full[1] - crop[1]) / 2.0))


@dataclass(frozen=True)
class Transform:
    """Resize, centre-crop and normalise images; apply the same geometry to masks.

    ``image_size`` and ``crop_size`` are an int (square) or ``(height, width)``; ``crop_size=None`` means no
    crop. ``mean``/``std`` are per-channel, for pixels scaled to [0, 1].
    """

    image_size: Size = 256
    crop_size: Size | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        # Accept lists (as read back from JSON) but store tuples, so the dataclass stays hashable.
        for name in ("image_size", "crop_size", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        resize = _as_hw(self.image_size, "image_size")
        if self.crop_size is not None:
            crop = _as_hw(self.crop_size, "crop_size")
            if crop[0] > resize[0] or crop[1] > resize[1]:
                raise ValueError(f"crop_size {self.crop_size!r} is larger than image_size {self.image_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {self.mean!r} and {self.std!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")

    @property
    def resize_size(self) -> tuple[int, int]:
        """``(H, W)`` after the resize, before the crop."""
        return _as_hw(self.image_size, "image_size")

    @property
    def output_size(self) -> tuple[int, int]:
        """``(H, W)`` of every tensor this transform returns."""
        return self.resize_size if self.crop_size is None else _as_hw(self.crop_size, "crop_size")

    def _crop(self, array: np.ndarray) -> np.ndarray:
        if self.crop_size is None:
            return array
        out_h, out_w = self.output_size
        top, left = _crop_box(self.resize_size, self.output_size)
        return array[top : top + out_h, left : left + out_w]

    def _resize(self, img: Image.Image, resample: int) -> Image.Image:
        height, width = self.resize_size
        return img if img.size == (width, height) else img.resize((width, height), resample)

    def display_array(self, img: Image.Image) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB at the output size, not normalised: the picture an anomaly map lies on."""
        return np.ascontiguousarray(self._crop(np.asarray(self._resize(to_rgb(img), Image.BILINEAR))))

    def array(self, img: Image.Image) -> np.ndarray:
        """Float32 array ``(3, H, W)``, normalised, from a PIL image (converted to RGB if it is not)."""
        pixels = self.display_array(img)
        # numpy, not torch, for this per-image arithmetic: torch's intra-op threads cost more than they save
        # on one small image, and badly so on a busy machine (measured 43 ms vs 3 ms per MTD image).
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        values = (pixels.astype(np.float32) / np.float32(255.0) - mean) / std
        return np.ascontiguousarray(values.transpose(2, 0, 1))

    def image(self, img: Image.Image) -> torch.Tensor:
        """Float tensor ``(3, H, W)``: :meth:`array` as a tensor."""
        import torch

        return torch.from_numpy(self.array(img))

    def mask_array(self, mask: np.ndarray) -> np.ndarray:
        """Bool array ``(H, W)`` from a 2-D mask of any size (nonzero = defect), nearest-neighbour resized."""
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
        img = Image.fromarray((mask != 0).astype(np.uint8) * 255, mode="L")
        return np.ascontiguousarray(self._crop(np.asarray(self._resize(img, Image.NEAREST)) > 127))

    def mask(self, mask: np.ndarray) -> torch.Tensor:
        """Bool tensor ``(H, W)``: :meth:`mask_array` as a tensor."""
        import torch

        return torch.from_numpy(self.mask_array(mask))

    def denormalise(self, tensor: torch.Tensor | np.ndarray) -> np.ndarray:
        """Undo normalisation: ``(3, H, W)`` tensor -> ``(H, W, 3)`` uint8 RGB array, for overlays."""
        import torch

        values = torch.as_tensor(tensor).detach().to("cpu", torch.float32)
        if values.ndim != 3 or values.shape[0] != 3:
            raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(values.shape)}")
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        pixels = (values * std + mean).clamp_(0.0, 1.0).mul_(255.0).round_()
        return pixels.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()

    def map_to_original(self, anomaly_map: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """An ``(H', W')`` map at the output size back on the original image ``(H, W)``: the inverse of the
        resize (bilinear) and of the crop (pixels the crop cut away have no score: NaN there), float32.

        Users overlay maps on the images they have, not on the model's 256 x 256 view of them.
        """
        anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
        if anomaly_map.shape != self.output_size:
            raise ValueError(f"expected a map of the output size {self.output_size}, got {anomaly_map.shape}")
        height, width = (int(v) for v in original_size)
        resized_h, resized_w = self.resize_size
        top, left = (0, 0) if self.crop_size is None else _crop_box(self.resize_size, self.output_size)
        out_h, out_w = self.output_size
        # the crop window in original pixels (the resize scales each axis by original / resized)
        y0, y1 = round(top * height / resized_h), round((top + out_h) * height / resized_h)
        x0, x1 = round(left * width / resized_w), round((left + out_w) * width / resized_w)
        result = np.full((height, width), np.nan, dtype=np.float32)
        if y1 > y0 and x1 > x0:
            window = Image.fromarray(anomaly_map, mode="F").resize((x1 - x0, y1 - y0), Image.BILINEAR)
            result[y0:y1, x0:x1] = np.asarray(window, dtype=np.float32)
        return result
