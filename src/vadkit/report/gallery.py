"""Gallery panels of the HTML report: image + ground truth | heatmap | predicted mask, as one PNG per image.

Pure numpy + Pillow (no matplotlib): a report holds hundreds of panels, so one must cost a few milliseconds
(about 6 ms at 256 x 256 on two CPU cores). The colours are the ones of ``vadkit.visualize`` (same colour map,
same blend, same red tint for the predicted defect), so an overlay written by ``vadkit test`` and a report tile
look alike.

Tiles, left to right, separated by ``TILE_GAP`` white columns:

1. the image with the ground-truth contour in ``CONTOUR_GREEN`` (no contour when there is no mask or it is empty);
2. the anomaly map, colour-mapped between ``vmin`` and ``vmax`` and blended over the image. Pass the same
   ``vmin``/``vmax`` to every panel of a report so that equal colours mean equal scores across images;
3. the predicted defect, pixels with ``map >= pixel threshold`` tinted red in images the model judged anomalous
   (none in the others), with the ground-truth contour on top; with no threshold (an uncalibrated model) the
   tile is the image greyed out, labelled "uncalibrated".

Encoding: a 256-colour palette PNG (Pillow's fast octree quantiser, no dithering). A full-colour PNG of a noisy
256 x 256 panel weighs ~270 kB and takes ~16 ms to compress here; the palette one ~76 kB in ~4 ms, and a report
embeds hundreds of them. The cost is mild banding in smooth gradients (mean error 3-6 of 255 on camera-like images);
flat colours, such as the contour and the red tint, survive exactly when the panel has at most 256 colours.
JPEG would be smaller still but smears one-pixel contours.

The contour is the inner boundary of the mask: mask pixels with a non-mask pixel (or the image border) among their
4 neighbours, ``contour_thickness`` pixels deep, so it never covers a pixel outside the defect.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from vadkit.visualize import blend_heatmap, tint

__all__ = ["CONTOUR_GREEN", "TILE_GAP", "GalleryItem", "contour", "contour_thickness", "encode_png",
           "gallery_panel", "panel_tiles"]

CONTOUR_GREEN = (0, 255, 0)
TILE_GAP = 2  # white columns between tiles
_GAP_COLOUR = 255
_PNG_COMPRESS_LEVEL = 1  # palette PNGs: 3x faster than the default 6 for ~5% more bytes


@dataclass(frozen=True)
class GalleryItem:
    """One card of the report's gallery.

    Attributes:
        name: image file name (shown, and the key of the "by name" sort).
        defect_type: the image's defect folder ("good" for normal images).
        label: ground truth, 1 = anomalous.
        predicted: the model's decision at its threshold (1 = anomalous), None when uncalibrated.
        score: the image's anomaly score.
        aupimo: the image's AUPIMO, None (or NaN) for normal images or when undefined.
        png: the panel, PNG bytes (``gallery_panel``).
    """

    name: str
    defect_type: str
    label: int
    predicted: int | None
    score: float
    aupimo: float | None
    png: bytes

    @property
    def outcome(self) -> str | None:
        """"TP", "FP", "FN" or "TN"; None without a prediction."""
        if self.predicted is None:
            return None
        return {(1, 1): "TP", (0, 1): "FP", (1, 0): "FN", (0, 0): "TN"}[(int(self.label), int(self.predicted))]


def contour_thickness(height: int, width: int) -> int:
    """Contour width in pixels: 1 up to 191 px, then one more per 128 px, so it stays visible when scaled down."""
    return max(1, round(min(height, width) / 128))


def contour(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Bool (H, W): the mask pixels within ``thickness`` pixels (4-connected) of the mask's outside or the border."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    inner = ndimage.binary_erosion(mask, iterations=thickness, border_value=0)
    return mask & ~inner


def gallery_panel(image: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray | None, threshold: float | None,
                  vmin: float, vmax: float, flagged: bool = True) -> bytes:
    """PNG bytes of the three tiles of one image (see the module docstring), ``3 * W + 2 * TILE_GAP`` wide.

    Args:
        image: (H, W, 3) uint8 RGB, as shown to a person (denormalised).
        anomaly_map: (H, W) float anomaly map at the image's resolution.
        mask: (H, W) bool ground truth, or None when the data set has no masks.
        threshold: the model's pixel threshold on map values; None when uncalibrated.
        vmin, vmax: map values at the two ends of the colour scale (shared by all panels of a report).
        flagged: whether the model judged the image anomalous; the predicted-defect tile of an image judged
            normal shows no defect pixel, whatever its map.
    """
    return encode_png(panel_tiles(image, anomaly_map, mask, threshold, vmin, vmax, flagged))


def panel_tiles(image: np.ndarray, anomaly_map: np.ndarray, mask: np.ndarray | None, threshold: float | None,
                vmin: float, vmax: float, flagged: bool = True) -> np.ndarray:
    """The panel as an (H, 3 * W + 2 * TILE_GAP, 3) uint8 array (what ``gallery_panel`` encodes)."""
    image, anomaly_map, mask = _validate(image, anomaly_map, mask)
    height, width = anomaly_map.shape
    edge = contour(mask, contour_thickness(height, width)) if mask is not None else None

    truth = _with_contour(image, edge)
    heat = blend_heatmap(image, anomaly_map, vmin=vmin, vmax=vmax)
    if threshold is None:
        predicted = _with_contour(_greyed(image), edge)
        predicted = _label(predicted, "uncalibrated")
    elif not flagged:
        predicted = _with_contour(image, edge)
    else:
        predicted = _with_contour(tint(image, anomaly_map >= threshold), edge)

    gap = np.full((height, TILE_GAP, 3), _GAP_COLOUR, np.uint8)
    return np.concatenate([truth, gap, heat, gap, predicted], axis=1)


def encode_png(pixels: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes with a 256-colour palette (see the module docstring for why)."""
    palette = Image.fromarray(pixels).quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _validate(image, anomaly_map, mask):
    image = np.asarray(image)
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape} and dtype {image.dtype}.")
    if anomaly_map.shape != image.shape[:2]:
        raise ValueError(f"anomaly_map must be (H, W) = {image.shape[:2]}, got {anomaly_map.shape}.")
    if mask is not None:
        mask = np.asarray(mask).astype(bool, copy=False)
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask must be (H, W) = {image.shape[:2]}, got {mask.shape}.")
    return image, anomaly_map, mask


def _with_contour(tile: np.ndarray, edge: np.ndarray | None) -> np.ndarray:
    if edge is None or not edge.any():
        return tile
    tile = tile.copy()  # never draw on the caller's image
    tile[edge] = CONTOUR_GREEN
    return tile


def _greyed(image: np.ndarray) -> np.ndarray:
    """Luminance only, washed out towards white: clearly 'no prediction here'."""
    grey = image @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = 0.45 * grey + 0.55 * 235.0
    return np.repeat(grey[..., None], 3, axis=2).astype(np.uint8)


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    """``text`` in white on a dark box, centred on the tile."""
    height, width = tile.shape[:2]
    font = _font(max(9, min(height, width) // 11))
    canvas = Image.fromarray(tile)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 3)
    x = (width - (right - left)) // 2 - left
    y = (height - (bottom - top)) // 2 - top
    draw.rectangle((x + left - pad, y + top - pad, x + right + pad, y + bottom + pad), fill=(48, 48, 48))
    draw.text((x, y), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)


@lru_cache(maxsize=8)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled scalable font (needs FreeType)
    except (ImportError, OSError, TypeError):
        return ImageFont.load_default()
