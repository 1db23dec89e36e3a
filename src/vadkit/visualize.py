"""Overlay images for a person to check a model: input | anomaly heatmap | predicted defect mask.

Pure numpy + Pillow (no matplotlib): a heatmap needs one colour map, and a plotting library would add
seconds of import time to every CLI run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# Anchor colours of a perceptually ordered map (dark blue -> cyan -> yellow -> red), interpolated linearly.
_ANCHORS = np.array([[0, 0, 96], [0, 96, 255], [0, 220, 220], [255, 230, 0], [255, 64, 0], [160, 0, 0]], np.float32)


def colorize(values: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(H, W) floats -> (H, W, 3) uint8 colours; ``vmin``/``vmax`` map to the ends of the scale."""
    span = max(vmax - vmin, 1e-12)
    position = np.clip((values - vmin) / span, 0.0, 1.0) * (len(_ANCHORS) - 1)
    low = np.floor(position).astype(int).clip(0, len(_ANCHORS) - 2)
    frac = (position - low)[..., None]
    return ((1 - frac) * _ANCHORS[low] + frac * _ANCHORS[low + 1]).astype(np.uint8)


def overlay_panel(image: np.ndarray, anomaly_map: np.ndarray, *, vmin: float, vmax: float,
                  threshold: float | None, caption: str = "") -> Image.Image:
    """Three panels side by side: the image, its heatmap blended over it, and the thresholded mask
    (pixels whose map value is >= ``threshold`` tinted red; the panel is left plain without a threshold)."""
    heat = colorize(anomaly_map, vmin, vmax)
    blended = (0.5 * image + 0.5 * heat).astype(np.uint8)
    masked = image.copy()
    if threshold is not None:
        defect = anomaly_map >= threshold
        masked[defect] = (0.4 * masked[defect] + 0.6 * np.array([255, 0, 0])).astype(np.uint8)
    canvas = Image.fromarray(np.concatenate([image, blended, masked], axis=1))
    if caption:
        ImageDraw.Draw(canvas).text((4, 4), caption, fill=(255, 255, 255))
    return canvas


def save_overlay(path: str | Path, image: np.ndarray, anomaly_map: np.ndarray, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_panel(image, anomaly_map, **kwargs).save(path)
    return path
