"""Vision transformers as feature extractors: patch grids ``(B, C, h, w)`` from chosen blocks, like the CNNs.

:class:`ViTFeatureNet` runs a timm ``VisionTransformer`` (DINOv2, DeiT, ...) up to the deepest tapped block
and returns each tapped block's output as a patch grid, the class and register tokens dropped, so that every
method that reads CNN feature maps reads ViT features unchanged. Methods that need the full token sequences
(Dinomaly keeps the prefix tokens through its decoder; MuSc compares images by their class tokens) ask for
them explicitly with :meth:`ViTFeatureNet.tokens`.

Layer names: ``blocks.0`` .. ``blocks.{depth-1}`` (a block's raw output, as DINOv2's "intermediate layers"
and Dinomaly read them) and ``norm`` (the last block's output through the final LayerNorm, what
``forward_features`` returns and AnomalyDINO reads). Every layer has the patch size as its stride.

Any input size whose sides are multiples of the patch size works (the grid is ``H / patch``). The position
embedding, learned on a fixed grid (37 x 37 for DINOv2 at 518 px), is resized to the input's grid the way
the Hugging Face DINOv2 port does it: bicubic (PyTorch's a = -0.75), ``align_corners=False``, no
antialiasing, to the target size. That is what the ONNX file of the offline DINOv2 backbone computes
(:mod:`vadkit.backbones.onnx_dinov2`), so the two agree to float rounding; timm's own dynamic-size path
antialiases, which shifts every feature when the grid shrinks. The official DINOv2 code interpolates with
a scale factor offset by 0.1 cell, which gives the same output size and near-identical values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

NORM = "norm"


def is_vit(model: nn.Module) -> bool:
    """A timm vision transformer with a learned absolute position embedding (what :class:`ViTFeatureNet` runs)."""
    return all(hasattr(model, name) for name in ("blocks", "patch_embed", "pos_embed", "num_prefix_tokens")) \
        and model.pos_embed is not None


def vit_layer_names(depth: int) -> list[str]:
    return [f"blocks.{i}" for i in range(depth)] + [NORM]


def resize_position_embedding(grid: Tensor, size: tuple[int, int]) -> Tensor:
    """A learned position grid ``(1, C, h0, w0)`` at ``size`` (h, w): bicubic, no antialiasing (module docstring)."""
    if tuple(grid.shape[-2:]) == tuple(size):
        return grid
    return F.interpolate(grid.float(), size=size, mode="bicubic", align_corners=False, antialias=False).to(grid.dtype)


class ViTFeatureNet(nn.Module):
    """``vit`` cut after its deepest tapped layer. ``forward(x) -> {layer: (B, C, h, w)}`` in the order of
    ``layers``; :meth:`tokens` gives the token sequences ``(B, prefix + h * w, C)`` instead."""

    def __init__(self, vit: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        depth = len(vit.blocks)
        valid = vit_layer_names(depth)
        unknown = [layer for layer in layers if layer not in valid]
        if unknown:
            raise ValueError(f"unknown ViT layer(s) {unknown}; valid: {', '.join(valid)}")
        self.layers = list(layers)
        deepest = max(depth - 1 if layer == NORM else int(layer.split(".")[1]) for layer in layers)
        self.patch_size = int(vit.patch_embed.proj.kernel_size[0])
        self.proj = vit.patch_embed.proj
        self.patch_norm = vit.patch_embed.norm
        self.cls_token = vit.cls_token
        self.reg_token = getattr(vit, "reg_token", None)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        # DINOv2 with registers (timm's "no_embed_class"): the position embedding covers the patches only
        self.embed_prefix = not vit.no_embed_class
        prefix = self.num_prefix_tokens if self.embed_prefix else 0
        self.pos_prefix = nn.Parameter(vit.pos_embed[:, :prefix].detach().clone(), requires_grad=False)
        side = vit.pos_embed.shape[1] - prefix
        h0, w0 = vit.patch_embed.grid_size if side == vit.patch_embed.num_patches else (int(side ** 0.5),) * 2
        self.pos_grid = nn.Parameter(vit.pos_embed[:, prefix:].detach().reshape(1, h0, w0, -1).permute(0, 3, 1, 2)
                                     .contiguous(), requires_grad=False)
        self.norm_pre = vit.norm_pre
        self.blocks = nn.Sequential(*vit.blocks[:deepest + 1])
        # the final LayerNorm: the ``norm`` layer, and every tapped block with tokens(norm=True)
        self.norm = vit.norm
        self.embed_dim = int(vit.embed_dim)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size, width // self.patch_size

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> the token sequence the first block reads (B, prefix + h * w, C)."""
        patches = self.proj(x)                                               # (B, C, h, w)
        b, c, h, w = patches.shape
        tokens = self.patch_norm(patches.flatten(2).transpose(1, 2))
        positions = resize_position_embedding(self.pos_grid, (h, w)).flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(b, -1, -1)] if self.cls_token is not None else []
        if self.reg_token is not None:
            prefix.append(self.reg_token.expand(b, -1, -1))
        if self.embed_prefix:
            tokens = torch.cat(prefix + [tokens], dim=1) + torch.cat([self.pos_prefix, positions], dim=1)
        else:
            tokens = torch.cat(prefix + [tokens + positions], dim=1)
        return self.norm_pre(tokens)

    def tokens(self, x: Tensor, norm: bool = False) -> dict[str, Tensor]:
        """``{layer: (B, prefix + h * w, C)}``: every tapped layer's whole token sequence, prefix tokens first.
        ``norm``: through the final LayerNorm, as DINOv2's ``get_intermediate_layers(norm=True)`` returns them."""
        out: dict[str, Tensor] = {}
        tokens = self.embed(x)
        taps = {int(layer.split(".")[1]): layer for layer in self.layers if layer != NORM}
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            tokens = block(tokens)
            if i in taps:
                out[taps[i]] = self.norm(tokens) if norm else tokens
            if i == last and NORM in self.layers:
                out[NORM] = self.norm(tokens)
        return {layer: out[layer] for layer in self.layers}

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h, w = self.grid_size(*x.shape[-2:])
        return {layer: self.to_grid(tokens, h, w) for layer, tokens in self.tokens(x).items()}

    def to_grid(self, tokens: Tensor, h: int, w: int) -> Tensor:
        """Token sequences (B, prefix + h * w, C) -> patch grids (B, C, h, w), the prefix dropped."""
        patches = tokens[:, self.num_prefix_tokens:]
        return patches.reshape(patches.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
