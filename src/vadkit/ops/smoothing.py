"""Anomaly-map post-processing: resize to the input resolution, then Gaussian smoothing.

PatchCore and PaDiM both upsample the patch-level score map bilinearly to the image size and smooth it
with a Gaussian of sigma = 4 pixels. The blur is separable, so it runs as two 1-D convolutions over the
whole batch at once (no loop over images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian with radius ceil(4*sigma) (the truncation scipy.ndimage uses)."""
    radius = max(1, int(4.0 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur a batch of maps (B, H, W) with a Gaussian; borders are reflected so they are not darkened."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma, maps.dtype).to(maps.device)
    radius = kernel.numel() // 2
    x = maps.unsqueeze(1)
    # reflect padding needs the pad to be smaller than the map: fall back to replicate for tiny maps
    mode = "reflect" if min(maps.shape[-2:]) > radius else "replicate"
    x = F.pad(x, (radius, radius, 0, 0), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = F.pad(x, (0, 0, radius, radius), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def to_image_maps(patch_scores: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Patch-level scores (B, h, w) -> smoothed pixel-level maps (B, H, W) at the input resolution."""
    maps = F.interpolate(patch_scores.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return gaussian_blur(maps, sigma)
