"""Zero-shot foreground masks from a ViT's patch features: the first principal component, thresholded.

AnomalyDINO (Damm et al., WACV 2025, sec. 3, "masking") scores only the patches of the object for
categories whose background varies: the first principal component of an image's own DINOv2 patch features
separates object from background; patches whose projection exceeds a threshold (10, for ViT-S/14 features
after the final LayerNorm at 448 px) are foreground. The component's sign is arbitrary, so if at most 35%
of the central region (a 20% border trimmed) comes out as foreground, the sign is flipped. The mask is then
dilated and closed with a 3 x 3 square.

Here, as in anomalib's port, the dilation and closing act on the 2-D patch grid (the authors' code runs them
on the flattened column of patches, i.e. along raster order). The component is found by power iteration on
the features' covariance (a fixed number of matrix products from a fixed start: deterministic, batched and
exportable to ONNX, where an SVD is not), and its sign starts as the one that makes the largest projection
positive, before the centre check.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POWER_ITERATIONS = 50


def first_component_scores(features: torch.Tensor) -> torch.Tensor:
    """Projections (B, P) of each image's patch features (B, P, C), centred, on their first principal axis."""
    centred = features - features.mean(dim=1, keepdim=True)
    covariance = centred.transpose(1, 2) @ centred                                    # (B, C, C)
    axis = torch.ones(features.shape[0], features.shape[2], 1, dtype=features.dtype, device=features.device)
    for _ in range(POWER_ITERATIONS):
        axis = covariance @ axis
        axis = axis / axis.norm(dim=1, keepdim=True).clamp_min(1e-12)
    projections = (centred @ axis).squeeze(2)                                          # (B, P)
    largest = projections.gather(1, projections.abs().argmax(dim=1, keepdim=True))
    return projections * torch.where(largest < 0, -1.0, 1.0)


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(mask, 3, stride=1, padding=1)


def foreground_mask(features: torch.Tensor, grid: tuple[int, int], threshold: float = 10.0,
                    border: float = 0.2, min_centre: float = 0.35) -> torch.Tensor:
    """Boolean foreground (B, h, w) of patch features (B, h * w, C) on a ``grid`` of (h, w) patches."""
    h, w = grid
    projections = first_component_scores(features).view(-1, h, w)
    top, left = int(h * border), int(w * border)
    centre = (slice(None), slice(top, h - top), slice(left, w - left))
    share = (projections[centre] > threshold).float().flatten(1).mean(dim=1)           # (B,)
    flip = (share <= min_centre)[:, None, None]
    mask = (torch.where(flip, -projections, projections) > threshold).float().unsqueeze(1)
    mask = _dilate(mask)
    closed = -_dilate(-_dilate(mask))  # closing: dilation, then erosion (a dilation of the complement)
    return closed.squeeze(1) > 0.5
