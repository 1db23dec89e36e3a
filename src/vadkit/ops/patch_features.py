"""Locally aware patch features from a feature pyramid.

PatchCore (Roth et al., CVPR 2022, Sec. 3.1) describes each patch by the average of its 3x3 neighbourhood at
every chosen layer, then brings the deeper (coarser) maps to the resolution of the shallowest one and
concatenates them along channels. PaDiM (Defard et al., ICPR 2021) concatenates the same way without the
neighbourhood averaging. Both therefore call :func:`pyramid_embedding`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F


def local_average(feature_map: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Average each position with its ``patch_size`` x ``patch_size`` neighbourhood (stride 1, same size).

    Zero padding counts towards the average at the border, as in the paper's reference code (which unfolds
    padded patches before pooling), so border features are damped the same way.
    """
    if patch_size <= 1:
        return feature_map
    return F.avg_pool2d(feature_map, kernel_size=patch_size, stride=1, padding=patch_size // 2)


def pyramid_embedding(features: Mapping[str, torch.Tensor], layers: Sequence[str], patch_size: int = 1) -> torch.Tensor:
    """Concatenate the named layers at the resolution of the largest one: (B, sum C_l, H_max, W_max).

    ``patch_size`` > 1 applies :func:`local_average` to every layer first (PatchCore's locally aware
    patch features). Coarser maps are upsampled bilinearly.
    """
    maps = [local_average(features[name], patch_size) for name in layers]
    target = max((m.shape[-2:] for m in maps), key=lambda hw: hw[0] * hw[1])
    resized = [m if m.shape[-2:] == target else F.interpolate(m, size=target, mode="bilinear", align_corners=False)
               for m in maps]
    return torch.cat(resized, dim=1)


def flatten_patches(embedding: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C), patches of one image contiguous, row-major over (H, W)."""
    return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])
