"""Deterministic preprocessing shared by training, evaluation and inference.

One :class:`Transform` turns an RGB image into the normalised tensor a backbone expects and its mask into a
boolean map aligned with it, pixel for pixel. It is a small frozen dataclass (plain numbers only) so that a
model file can store it and reproduce exactly the preprocessing it was trained with.

Steps, in order: resize to ``image_size`` (an int means a square, ``(H, W)`` or ``"HxW"`` a rectangle; bilinear
with antialiasing, as Pillow does it, which matches torchvision's ``Resize(antialias=True)`` on PIL input) in
one of four ways (``resize``), optional centre crop to ``crop_size`` (torchvision's rounding of the offsets),
scale to [0, 1], normalise by ``mean``/``std``. There is no random augmentation here: anomaly detection learns
"normal" from the data as it is.

How an image meets the ``image_size`` canvas (``resize``):

- ``stretch``: both axes scaled to the canvas; the aspect ratio changes (the classic 256 x 256 squeeze).
- ``fit``: the aspect ratio is kept, the image scaled to fit inside the canvas and centred; the rest of the
  canvas repeats the image's border pixels (so the network sees no artificial edge).
- ``fit_pad``: as ``fit``, but the rest of the canvas is the normalisation mean (zeros after normalising).
- ``short_side``: the aspect ratio is kept, the image scaled to cover the canvas and centre-cropped to it
  (torchvision's ``Resize(side)`` + ``CenterCrop``): what falls outside is not seen and has no score.

The *evaluation grid* is where maps and masks meet (metrics, thresholds, overlays). For ``stretch`` and
``short_side`` it is the model's own view. For ``fit`` and ``fit_pad`` the padding must never score, so a
map is cut back to the image's content and resampled onto the whole image stretched to the output size
(:meth:`Transform.to_evaluation_grid`), and masks are read at that same stretched geometry: every pixel
metric then counts each image pixel and no padding, exactly, and the masks are those of ``stretch``, so the
modes are compared on identical ground truth.

Importing this module does not import torch (only the tensor-returning methods do): the torch-free edge
runtime (:mod:`vadkit.edge.runtime`) preprocesses with :meth:`Transform.array`, the same numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from vadkit.data.io import to_rgb

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

Size = int | tuple[int, int] | str

#: the ways an image meets its canvas (see the module docstring)
RESIZE_MODES = ("stretch", "fit", "fit_pad", "short_side")
_SIZE_TEXT = re.compile(r"^\s*(\d+)\s*[x×X]\s*(\d+)\s*$")


def parse_size(size: Size, name: str = "image_size") -> tuple[int, int]:
    """``(H, W)`` from an int (square), a pair, or text ``"HxW"`` / ``"256"``; rejects non-positive sizes."""
    if isinstance(size, str):
        match = _SIZE_TEXT.match(size)
        if match:
            size = (int(match.group(1)), int(match.group(2)))
        elif size.strip().isdigit():
            size = int(size)
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size):
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{name} must be an int, a (height, width) pair of ints or text 'HxW' (e.g. '640x256'), "
                         f"got {size!r}")
    if min(hw) <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return hw



def check_resize(resize: str) -> str:
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
    return resize


def _crop_box(full: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """Top-left corner of a centred crop, rounded as torchvision's ``center_crop`` does."""
    return int(round((full[0] - crop[0]) / 2.0)), int(round((full[1] - crop[1]) / 2.0))


@dataclass(frozen=True)
class Transform:
    """Resize, centre-crop and normalise images; put masks on the evaluation grid.

    ``image_size`` and ``crop_size`` are an int (square), ``(height, width)`` or ``"HxW"``; ``crop_size=None``
    means no crop. ``mean``/``std`` are per-channel, for pixels scaled to [0, 1]. ``resize``: one of
    :data:`RESIZE_MODES` (module docstring).
    """

    image_size: Size = 256
    crop_size: Size | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: str = "stretch"

    def __post_init__(self) -> None:
        # Accept lists (as read back from JSON) but store tuples, so the dataclass stays hashable.
        for name in ("image_size", "crop_size", "mean", "std"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
            elif isinstance(value, str) and name in ("image_size", "crop_size"):  # "HxW": one spelling of a size
                object.__setattr__(self, name, parse_size(value, name))
        resize = parse_size(self.image_size, "image_size")
        if self.crop_size is not None:
            crop = parse_size(self.crop_size, "crop_size")
            if crop[0] > resize[0] or crop[1] > resize[1]:
                raise ValueError(f"crop_size {self.crop_size!r} is larger than image_size {self.image_size!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {self.mean!r} and {self.std!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        check_resize(self.resize)

    @property
    def pads(self) -> bool:
        """True when the canvas may hold padding (``fit``, ``fit_pad``): maps go through the evaluation grid."""
        return self.resize in ("fit", "fit_pad")

    def evaluation_view(self) -> Transform:
        """The transform whose geometry is the evaluation grid: masks and overlay pictures are read with it."""
        return replace(self, resize="stretch") if self.pads else self

    def placement(self, original_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the resized image on the ``image_size`` canvas (before the crop),
        for an original image of ``(H, W)``. ``stretch``: the whole canvas; ``fit*``: inside it, centred;
        ``short_side``: covering it (negative offsets: the parts cut away)."""
        canvas_h, canvas_w = self.resize_size
        height, width = (int(v) for v in original_size)
        if self.resize == "stretch":
            return 0, 0, canvas_h, canvas_w
        scale = (min if self.pads else max)(canvas_h / height, canvas_w / width)
        # the scaled side that matches the canvas is exact; the other rounds, at least one pixel
        content_h = canvas_h if scale == canvas_h / height else max(1, round(height * scale))
        content_w = canvas_w if scale == canvas_w / width else max(1, round(width * scale))
        return (canvas_h - content_h) // 2, (canvas_w - content_w) // 2, content_h, content_w

    def content_box(self, original_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(top, left, height, width)`` of the image's own pixels in the output (after the crop): the part
        of a map that scores. The whole output unless the canvas holds padding."""
        top, left, height, width = self.placement(original_size)
        if self.crop_size is not None:
            crop_top, crop_left = _crop_box(self.resize_size, self.output_size)
            top, left = top - crop_top, left - crop_left
        out_h, out_w = self.output_size
        y0, x0 = max(top, 0), max(left, 0)
        y1, x1 = min(top + height, out_h), min(left + width, out_w)
        return y0, x0, max(y1 - y0, 0), max(x1 - x0, 0)

    def to_evaluation_grid(self, anomaly_map: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """A map of the model's view ``(H, W)`` on the evaluation grid (same shape): unchanged unless the
        canvas is padded; then the content is cut out and resampled (bilinear) over the whole output, so no
        padded pixel reaches a metric, a threshold or an overlay."""
        anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
        if not self.pads:
            return anomaly_map
        top, left, height, width = self.content_box(original_size)
        out_h, out_w = self.output_size
        if (top, left, height, width) == (0, 0, out_h, out_w):
            return anomaly_map
        content = np.ascontiguousarray(anomaly_map[top : top + height, left : left + width])
        return np.asarray(Image.fromarray(content, mode="F").resize((out_w, out_h), Image.BILINEAR), dtype=np.float32)

    @property
    def resize_size(self) -> tuple[int, int]:
        """``(H, W)`` after the resize, before the crop."""
        return parse_size(self.image_size, "image_size")

    @property
    def output_size(self) -> tuple[int, int]:
        """``(H, W)`` of every tensor this transform returns."""
        return self.resize_size if self.crop_size is None else parse_size(self.crop_size, "crop_size")

    def _crop(self, array: np.ndarray) -> np.ndarray:
        if self.crop_size is None:
            return array
        out_h, out_w = self.output_size
        top, left = _crop_box(self.resize_size, self.output_size)
        return array[top : top + out_h, left : left + out_w]

    def _resize(self, img: Image.Image, resample: int) -> np.ndarray:
        """The image on the ``image_size`` canvas, as an array (``resize`` decides how)."""
        canvas_h, canvas_w = self.resize_size
        top, left, height, width = self.placement((img.height, img.width))
        if img.size != (width, height):
            img = img.resize((width, height), resample)
        pixels = np.asarray(img)
        if (top, left, height, width) == (0, 0, canvas_h, canvas_w):
            return pixels
        if not self.pads:  # short_side: the centred window of the covering image
            return pixels[-top : -top + canvas_h, -left : -left + canvas_w]
        spans = ((top, canvas_h - top - height), (left, canvas_w - left - width)) + ((0, 0),) * (pixels.ndim - 2)
        if self.resize == "fit" or pixels.ndim == 2:  # masks pad with "normal" (0) whatever the mode
            return np.pad(pixels, spans, mode="edge" if self.resize == "fit" and pixels.ndim == 3 else "constant")
        mean = np.round(np.asarray(self.mean) * 255.0).clip(0, 255).astype(pixels.dtype)
        canvas = np.empty((canvas_h, canvas_w, pixels.shape[2]), dtype=pixels.dtype)
        canvas[...] = mean
        canvas[top : top + height, left : left + width] = pixels
        return canvas

    def display_array(self, img: Image.Image) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB at the output size, not normalised: the model's view of the image (with
        its padding, for ``fit*``). Overlays use ``evaluation_view().display_array``, the picture maps lie on."""
        return np.ascontiguousarray(self._crop(self._resize(to_rgb(img), Image.BILINEAR)))

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
        return np.ascontiguousarray(self._crop(self._resize(img, Image.NEAREST)) > 127)

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
        """An ``(H', W')`` map on the evaluation grid back on the original image ``(H, W)``: the inverse of the
        resize (bilinear) and of the crop (pixels the crop cut away have no score: NaN there), float32.

        Users overlay maps on the images they have, not on the model's 256 x 256 view of them.
        """
        if self.pads:  # evaluation-grid maps cover the whole image, stretched
            return self.evaluation_view().map_to_original(anomaly_map, original_size)
        anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
        if anomaly_map.shape != self.output_size:
            raise ValueError(f"expected a map of the output size {self.output_size}, got {anomaly_map.shape}")
        height, width = (int(v) for v in original_size)
        # where the output lies on the scaled image: the crop's offset, and for short_side the cut-away margin
        top, left, scaled_h, scaled_w = self.placement(original_size)
        crop_top, crop_left = (0, 0) if self.crop_size is None else _crop_box(self.resize_size, self.output_size)
        top, left = crop_top - top, crop_left - left
        out_h, out_w = self.output_size
        # the output window in original pixels (the resize scales each axis by original / scaled)
        y0, y1 = round(top * height / scaled_h), round((top + out_h) * height / scaled_h)
        x0, x1 = round(left * width / scaled_w), round((left + out_w) * width / scaled_w)
        result = np.full((height, width), np.nan, dtype=np.float32)
        if y1 > y0 and x1 > x0:
            window = Image.fromarray(anomaly_map, mode="F").resize((x1 - x0, y1 - y0), Image.BILINEAR)
            result[y0:y1, x0:x1] = np.asarray(window, dtype=np.float32)
        return result
