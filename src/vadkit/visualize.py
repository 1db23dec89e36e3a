"""Overlay images for a person to check a model: input | anomaly heatmap | predicted defect mask.

Pure numpy + Pillow (no matplotlib): a heatmap needs one colour map, and a plotting library would add
seconds of import time to every CLI run. The pieces (``colorize``, ``blend_heatmap``, ``tint``) are shared
with the HTML report's gallery (``vadkit.report.gallery``), so both show the same colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["COLORMAP_ANCHORS", "blend_heatmap", "colorize", "overlay_panel", "save_overlay", "tint"]

# Anchor colours of a perceptually ordered map (dark blue -> cyan -> yellow -> red), interpolated linearly.
# Their hue decreases monotonically (240 deg -> 0 deg), so "redder" always means "more anomalous".
_ANCHORS = np.array([[0, 0, 96], [0, 96, 255], [0, 220, 220], [255, 230, 0], [255, 64, 0], [160, 0, 0]], np.float32)
COLORMAP_ANCHORS: tuple[tuple[int, int, int], ...] = tuple(tuple(int(c) for c in row) for row in _ANCHORS)

DEFECT_RED = (255, 0, 0)


def _interpolate(position: np.ndarray) -> np.ndarray:
    """Colours at ``position`` in [0, 1] along the anchors, exact linear interpolation, float32 (..., 3)."""
    position = np.clip(position, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    return (1 - frac) * _ANCHORS[low] + frac * _ANCHORS[low + 1]


# The map sampled at 1024 levels: a table lookup per pixel instead of interpolating each one (5x faster on a
# 256 x 256 map); the nearest level is at most 1/2046 of the scale away, under one colour unit.
_LUT_SIZE = 1024
_LUT = np.round(_interpolate(np.linspace(0.0, 1.0, _LUT_SIZE))).astype(np.uint8)


def colorize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) floats -> (H, W, 3) uint8 colours; ``vmin``/``vmax`` map to the ends of the scale."""
    span = max(float(vmax) - float(vmin), 1e-12)
    scaled = np.asarray(values, dtype=np.float32) - np.float32(vmin)
    scaled *= np.float32((_LUT_SIZE - 1) / span)
    np.clip(scaled, 0, _LUT_SIZE - 1, out=scaled)
    scaled += np.float32(0.5)
    return _LUT[scaled.astype(np.intp)]


def blend_heatmap(image: np.ndarray, anomaly_map: np.ndarray, *, vmin: float, vmax: float,
                  alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 image with the colour-mapped (H, W) ``anomaly_map`` blended over it (weight ``alpha``).

    NaN map values (pixels without a score, e.g. outside a centre crop) leave the image as it is."""
    finite = np.isfinite(anomaly_map)
    heat = colorize(np.where(finite, anomaly_map, vmin), vmin, vmax)
    mixed = image.astype(np.float32) * np.float32(1 - alpha)
    mixed += heat * np.float32(alpha)
    if not finite.all():
        mixed[~finite] = image[~finite]
    return mixed.astype(np.uint8)


def tint(image: np.ndarray, where: np.ndarray, colour=DEFECT_RED, strength: float = 0.6) -> np.ndarray:
    """A copy of ``image`` with the pixels of the bool (H, W) ``where`` pulled towards ``colour``."""
    out = image.copy()
    out[where] = ((1 - strength) * out[where] + strength * np.asarray(colour)).astype(np.uint8)
    return out


def overlay_panel(image: np.ndarray, anomaly_map: np.ndarray, *, vmin: float, vmax: float,
                  threshold: float | None, caption: str = "") -> Image.Image:
    """Three panels side by side: the image, its heatmap blended over it, and the predicted defect (pixels
    whose map value is >= the pixel ``threshold`` tinted red; the panel is left plain with None: an
    uncalibrated model, or an image the model judges normal)."""
    blended = blend_heatmap(image, anomaly_map, vmin=vmin, vmax=vmax)
    with np.errstate(invalid="ignore"):
        masked = tint(image, anomaly_map >= threshold) if threshold is not None else image.copy()
    canvas = Image.fromarray(np.concatenate([image, blended, masked], axis=1))
    if caption:
        ImageDraw.Draw(canvas).text((4, 4), caption, fill=(255, 255, 255))
    return canvas


def save_overlay(path: str | Path, image: np.ndarray, anomaly_map: np.ndarray, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_panel(image, anomaly_map, **kwargs).save(path)
    return path
