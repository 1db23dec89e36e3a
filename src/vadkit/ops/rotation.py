"""Rotations of an image batch about its centre, for methods that augment their few normal images.

AnomalyDINO (Damm et al., WACV 2025, sec. 3) rotates each reference image by multiples of 45 degrees
before its patches enter the memory bank, so that a test part seen at another angle still finds its
neighbours. The authors rotate the decoded image on the same canvas with bilinear interpolation and
mirrored borders (OpenCV ``warpAffine``, ``BORDER_REFLECT_101``); here the normalised batch is rotated with
``grid_sample`` (bilinear, ``padding_mode="reflection"``): the same geometry in one vectorised call, the
borders mirrored about the edge pixels' outer side instead of their centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def rotate_batch(images: torch.Tensor, degrees: Sequence[float]) -> torch.Tensor:
    """Every image of ``images`` (B, C, H, W) rotated by every angle of ``degrees`` (counter-clockwise):
    (B * len(degrees), C, H, W), the rotations of image 0 first. 0 degrees returns the image exactly."""
    b, _, h, w = images.shape
    angles = torch.tensor([math.radians(d) for d in degrees], dtype=images.dtype, device=images.device)
    cos, sin = torch.cos(angles), torch.sin(angles)
    # affine_grid works in normalised coordinates, where x spans W and y spans H: a rotation of the pixel grid
    # is a rotation scaled by the aspect ratio in those coordinates
    theta = torch.zeros(len(degrees), 2, 3, dtype=images.dtype, device=images.device)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * h / w
    theta[:, 1, 0], theta[:, 1, 1] = sin * w / h, cos
    grid = F.affine_grid(theta, (len(degrees), 1, h, w), align_corners=False)       # (R, H, W, 2)
    repeated = images.repeat_interleave(len(degrees), dim=0)                        # (B * R, C, H, W)
    rotated = F.grid_sample(repeated, grid.repeat(b, 1, 1, 1), mode="bilinear", padding_mode="reflection",
                            align_corners=False)
    exact = torch.tensor([d % 360 == 0 for d in degrees], device=images.device).repeat(b)
    rotated[exact] = repeated[exact]  # no resampling blur for the unrotated copy
    return rotated
