"""The classical fallback partition: Otsu's threshold on brightness, cleaned by an opening and a closing.

Otsu (IEEE Trans. SMC, 1979) picks the grey level that maximises the between-class variance of the image's
histogram. Here per image, on the mean of the three normalised channels (an affine image of brightness, so
the same split), over ``bins`` levels between the image's minimum and maximum; pixels above it are part 1
("bright"), the rest part 0 ("dark"). An opening then a closing with a ``kernel`` x ``kernel`` square removes
specks and fills pinholes, so the parts are regions, not texture. Everything is batched torch (histogram by
one-hot counting, morphology by max pooling): the partition exports to ONNX with the rest of the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PART_NAMES = ("dark", "bright")


def _dilate(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    return F.max_pool2d(mask, kernel, stride=1, padding=kernel // 2)


def _erode(mask: torch.Tensor, kernel: int) -> torch.Tensor:
    return -F.max_pool2d(-mask, kernel, stride=1, padding=kernel // 2)


def otsu_levels(values: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """Otsu's threshold (B,) of each row of ``values`` (B, N), as a value between the row's min and max."""
    low = values.amin(dim=1, keepdim=True)
    high = values.amax(dim=1, keepdim=True)
    width = (high - low).clamp_min(1e-12) / bins
    index = ((values - low) / width).floor().clamp(0, bins - 1).long()
    histogram = F.one_hot(index, bins).sum(dim=1).float()                          # (B, bins)
    probability = histogram / histogram.sum(dim=1, keepdim=True)
    levels = torch.arange(bins, dtype=values.dtype, device=values.device)
    weight0 = probability.cumsum(dim=1)                                            # class below and at t
    mean0 = (probability * levels).cumsum(dim=1)
    total = mean0[:, -1:]
    between = (total * weight0 - mean0) ** 2 / (weight0 * (1 - weight0)).clamp_min(1e-12)
    best = between[:, :-1].argmax(dim=1, keepdim=True)                              # the split after bin t
    return (low + (best + 1).to(values.dtype) * width).squeeze(1)


class OtsuPartition(nn.Module):
    """Normalised images (B, 3, H, W) -> partition (B, 2, H, W): part 0 dark, part 1 bright (module docstring)."""

    part_names = PART_NAMES

    def __init__(self, bins: int = 64, kernel: int = 5) -> None:
        super().__init__()
        self.bins, self.kernel = bins, kernel

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        brightness = images.mean(dim=1)                                                # (B, H, W)
        level = otsu_levels(brightness.flatten(1), self.bins)
        bright = (brightness > level[:, None, None]).to(images.dtype).unsqueeze(1)
        bright = _erode(_dilate(_dilate(_erode(bright, self.kernel), self.kernel), self.kernel), self.kernel)
        return torch.cat([1.0 - bright, bright], dim=1)
