"""Image scores from patch or pixel scores: the reductions several methods share."""

from __future__ import annotations

import torch


def top_fraction_mean(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Mean of the largest ``fraction`` of each row's scores: (B, ...) -> (B,). At least one value is taken,
    so a small grid falls back to its maximum. AnomalyDINO's image score (mean of the top 1% of patch
    distances) and Dinomaly's (mean of the top 1% of the smoothed map's pixels)."""
    flat = scores.flatten(1)
    k = max(1, int(flat.shape[1] * fraction))
    return flat.topk(k, dim=1).values.mean(dim=1)
