"""Dinomaly: reconstruct a frozen ViT's features through a noisy bottleneck with a linear-attention decoder.

Guo, Lu, Zhang, Lin, Chen, Cao, Hu, Huang, Zhao. "Dinomaly: The Less Is More Philosophy in Multi-Class
Unsupervised Anomaly Detection", CVPR 2025. https://arxiv.org/abs/2405.14325 (official code:
github.com/guojiajeremy/Dinomaly). One model for all classes: train it on the union of their normal images.

As the paper and its code define it:

* encoder: a frozen DINOv2 ViT (ViT-B/14 with registers in the paper); the raw outputs of 8 middle blocks
  (``blocks.2`` .. ``blocks.9`` of a 12-block ViT), all tokens (class and registers included);
* noisy bottleneck: one MLP (D -> 4D -> D, GELU) with dropout 0.2 on its input, hidden and output, applied to
  the mean of the 8 tapped layers; the dropout is the "noise" that keeps the decoder from learning identity;
* decoder: 8 pre-norm transformer blocks with linear attention (softmax replaced by phi(q) (phi(k)^T v),
  phi = ELU + 1, normalised by phi(q) . sum phi(k); no 1/sqrt(d) scaling), LayerNorm eps 1e-8;
* loose reconstruction: the taps in 2 groups (blocks 2-5, 6-9), each group's mean reconstructed by the mean
  of a group of decoder outputs (the last 4 decoder blocks for the shallow group, the first 4 for the deep);
* loss: per group, 1 - cosine similarity between the whole encoder and decoder feature maps of an image
  (flattened), averaged; hard mining: the gradient of the 90% easiest points (by their per-point cosine
  distance over the batch) is multiplied by 0.1, the 90% reached linearly over the first 1,000 steps;
* optimiser: StableAdamW (lr 2e-3, betas 0.9 / 0.999, weight decay 1e-4, AMSGrad), gradient norm clipped at
  0.1, a 100-step linear warm-up then a cosine down to 2e-4; batch 16; 10,000 steps for a multi-class model
  (5,000 per class); Linear weights initialised from a normal of std 0.01 truncated at +-0.03, biases 0;
* map: per group, 1 - cosine similarity per position, averaged over the groups, upsampled, smoothed by a
  Gaussian of sigma 4; image score: the mean of the top 1% of the map's pixels;
* input: resize to 448, centre crop 392.

Deviations, each a choice stated here:

* the encoder is the offline ``dinov2_vits14_imgfocus`` ViT-S/14 (no registers; see
  :mod:`vadkit.backbones.registry`) by default; ``backbone="dinov2_vits14"`` or ``"timm:<name>"`` takes
  official weights (the paper's ``timm:vit_base_patch14_reg4_dinov2.lvd142m``).
* the CPU default: input 224 px (no crop) and ``max_steps=300`` with the schedule and the hard-mining warm-up
  scaled to that budget (``warmup_steps=None`` / ``hard_mining_warmup=None`` mean 1% and 10% of the steps,
  the paper's proportions); the paper's setting is ``image_size=448, crop_size=392, max_steps=10000,
  warmup_steps=100, hard_mining_warmup=1000``. Chosen from the anytime curves in BENCHMARKS.md.
* the frozen encoder runs once per training image (its features cached by the training loop:
  ``caches_frozen_features``); Dinomaly has no augmentation, so the loss and gradients are the same.
* under a time budget alone the step count is unknown: the learning rate stays at its peak after the warm-up
  and the hard-mining warm-up takes the paper's 1,000 steps (or ``hard_mining_warmup``).
* smoothing: vadkit's Gaussian (radius 4 sigma, reflected borders) where the code uses a 5 x 5 kernel with
  zero padding; the map stays at the input size (the code resizes it to 256 first).

Paper (ViT-B/14, multi-class): MVTec AD image AUROC 99.6, pixel AUROC 98.4; VisA 98.7 / 98.7. Our
measurements: BENCHMARKS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from vadkit.data.transforms import Size
from vadkit.errors import ParameterError
from vadkit.models.backbone_model import BackboneModel, check_sigma
from vadkit.models.stable_adamw import StableAdamW, warm_cosine
from vadkit.models.trained import TrainedModel, check_number
from vadkit.ops.image_scores import top_fraction_mean
from vadkit.ops.smoothing import to_image_maps


class LinearAttention(nn.Module):
    """Multi-head linear attention (Katharopoulos et al. 2020) as Dinomaly uses it: phi = ELU + 1 on queries and
    keys, out = phi(q) (phi(k)^T v) / (phi(q) . sum_t phi(k_t)), per head; no 1/sqrt(d) scaling."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, d_h)
        q, k = F.elu(q) + 1.0, F.elu(k) + 1.0
        kv = k.transpose(-2, -1) @ v                                                   # (B, h, d_h, d_h)
        normaliser = q @ k.sum(dim=2, keepdim=True).transpose(-2, -1)                 # (B, h, N, 1)
        out = (q @ kv) / normaliser
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class DecoderBlock(nn.Module):
    """A pre-norm transformer block with linear attention: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-8), nn.LayerNorm(dim, eps=1e-8)
        self.attn = LinearAttention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def noisy_bottleneck(dim: int, dropout: float) -> nn.Sequential:
    """Dropout on the input, the hidden layer and the output of a D -> 4D -> D MLP: the bottleneck's noise."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(4 * dim, dim), nn.Dropout(dropout))


class DinomalyDecoder(nn.Module):
    """The trained part: noisy bottleneck + decoder. ``forward(fused tokens) -> decoder group means`` (B, G, N, D),
    group 0 the last decoder blocks (they reconstruct the shallow encoder group)."""

    def __init__(self, dim: int, heads: int, depth: int, groups: int, dropout: float) -> None:
        super().__init__()
        self.bottleneck = noisy_bottleneck(dim, dropout)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads) for _ in range(depth))
        self.groups = groups

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(fused)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        outputs = torch.stack(outputs[::-1], dim=1)                                     # (B, depth, N, D)
        b, depth, n, d = outputs.shape
        return outputs.view(b, self.groups, depth // self.groups, n, d).mean(dim=2)


def default_taps(depth: int) -> list[str]:
    """Dinomaly's 8 encoder taps: blocks 2..9 of a 12-block ViT, 4, 6, ..., 18 of a 24-block one (the paper's), and
    8 blocks spread the same way (from a sixth to three quarters of the depth) in other ViTs."""
    first, last = depth / 6, 3 * depth / 4
    return [f"blocks.{round(first + i * (last - first) / 7)}" for i in range(8)]


def encoder_groups(tokens: torch.Tensor, groups: int, prefix: int) -> tuple[torch.Tensor, torch.Tensor]:
    """From the tapped layers' tokens (B, L, N, D): the bottleneck's input, their mean (B, N, D), and the mean of
    each of ``groups`` consecutive groups of layers over the patch tokens (B, G, P, D), the prefix dropped."""
    b, layers, n, d = tokens.shape
    grouped = tokens[:, :, prefix:].reshape(b, groups, layers // groups, n - prefix, d).mean(dim=2)
    return tokens.mean(dim=1), grouped


def hard_mined(decoded: torch.Tensor, encoded: torch.Tensor, keep: float, factor: float) -> torch.Tensor:
    """``decoded`` (B, P, D) with the gradient of its easiest points scaled by ``factor``: the points whose cosine
    distance to ``encoded`` is below the ``keep`` quantile over the batch (the same value forward)."""
    with torch.no_grad():
        distance = 1.0 - F.cosine_similarity(encoded, decoded, dim=-1)                 # (B, P)
        k = max(1, int(distance.numel() * (1.0 - keep)))
        threshold = distance.flatten().kthvalue(distance.numel() - k + 1).values       # the k-th largest
        weight = torch.where(distance < threshold, factor, 1.0).unsqueeze(-1)
    return decoded * weight + decoded.detach() * (1.0 - weight)


def global_cosine_loss(encoded: torch.Tensor, decoded: torch.Tensor, keep: float, factor: float) -> torch.Tensor:
    """Dinomaly's loss: per group, the mean over images of 1 - cos(whole encoder map, whole decoder map), with
    hard mining on the decoder's gradient; averaged over groups. ``encoded``, ``decoded``: (B, G, P, D)."""
    losses = []
    for group in range(encoded.shape[1]):
        target, output = encoded[:, group].detach(), decoded[:, group]
        output = hard_mined(output, target, keep, factor)
        losses.append((1.0 - F.cosine_similarity(target.flatten(1), output.flatten(1), dim=1)).mean())
    return torch.stack(losses).mean()


class Dinomaly(TrainedModel, BackboneModel):
    """Dinomaly (Guo et al., CVPR 2025). See the module docstring for the method and its deviations.

    Args:
        backbone: a ViT (default ``dinov2_vits14_imgfocus``); layers: the 8 encoder taps (default: blocks 2-9
            of a 12-block ViT); weights: explicit backbone weights file.
        image_size, crop_size: input resize and optional centre crop, multiples of the patch size (paper: 448
            and 392; default 224, no crop).
        groups: encoder taps and decoder blocks are split into this many consecutive groups (2).
        decoder_depth: decoder blocks (8); dropout: the bottleneck's dropout rate (0.2; 0.4 for Real-IAD).
        lr, final_lr, weight_decay: StableAdamW's peak and final learning rates and weight decay.
        warmup_steps: linear warm-up of the learning rate (None: 1% of the step budget; paper 100).
        hard_mining: share of easy points whose gradient is scaled by ``hard_mining_factor`` (0.9 and 0.1);
            hard_mining_warmup: steps over which that share rises from 0 (None: 10% of the budget; paper 1000).
        grad_clip: the gradient norm's cap (0.1).
        top_percent: the image score is the mean of this top percentage of the map (1).
        sigma: Gaussian smoothing of the map, in pixels.
        epochs, max_steps, max_time, batch_size, seed, validate_every, patience, num_workers: the training loop
            (:mod:`vadkit.models.trained`); the paper trains 10,000 steps of batch 16.
    """

    name = "dinomaly"
    learned: ClassVar[tuple[str, ...]] = ("decoder_",)
    caches_frozen_features: ClassVar[bool] = True

    def __init__(self, *, backbone: str = "dinov2_vits14_imgfocus", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 224, crop_size: int | None = None, resize: str = "stretch",
                 groups: int = 2, decoder_depth: int = 8, dropout: float = 0.2, lr: float = 2e-3,
                 final_lr: float = 2e-4, weight_decay: float = 1e-4, warmup_steps: int | None = None,
                 hard_mining: float = 0.9, hard_mining_factor: float = 0.1, hard_mining_warmup: int | None = None,
                 grad_clip: float = 0.1, top_percent: float = 1.0, sigma: float = 4.0,
                 epochs: int | None = None, max_steps: int | None = 300, max_time: float | None = None,
                 batch_size: int = 16, seed: int = 0, validate_every: int | None = None,
                 patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size, seed=seed,
                         validate_every=validate_every, patience=patience, num_workers=num_workers,
                         backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize)
        from vadkit.backbones import get_spec

        if not get_spec(backbone).vit:
            raise ParameterError(f"{self.name} reconstructs a ViT's tokens: {backbone!r} is not a vision transformer "
                                 "(use dinov2_vits14_imgfocus, dinov2_vits14 or a timm ViT)")
        for name, value in (("groups", groups), ("decoder_depth", decoder_depth)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ParameterError(f"{name} must be an integer >= 1, got {value!r}")
        if decoder_depth % groups:
            raise ParameterError(f"decoder_depth ({decoder_depth}) must be a multiple of groups ({groups})")
        for name, value in (("warmup_steps", warmup_steps), ("hard_mining_warmup", hard_mining_warmup)):
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ParameterError(f"{name} must be an integer >= 0 or None (a share of the budget), got {value!r}")
        for name, value in (("dropout", dropout), ("hard_mining", hard_mining), ("hard_mining_factor", hard_mining_factor)):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1) \
                    or (name == "dropout" and value == 1):
                raise ParameterError(f"{name} must be a number in [0, 1{')' if name == 'dropout' else ']'}, got {value!r}")
        for name, value in (("lr", lr), ("final_lr", final_lr), ("grad_clip", grad_clip)):
            check_number(name, value)
        check_number("weight_decay", weight_decay, positive=False)
        if not (isinstance(top_percent, (int, float)) and 0 < top_percent <= 100):
            raise ParameterError(f"top_percent must be in (0, 100], got {top_percent!r}")
        check_sigma(sigma)
        self.groups, self.decoder_depth, self.dropout = groups, decoder_depth, dropout
        self.lr, self.final_lr, self.weight_decay, self.warmup_steps = lr, final_lr, weight_decay, warmup_steps
        self.hard_mining, self.hard_mining_factor = hard_mining, hard_mining_factor
        self.hard_mining_warmup, self.grad_clip = hard_mining_warmup, grad_clip
        self.top_percent, self.sigma = top_percent, sigma
        self.decoder_: DinomalyDecoder | None = None
        self._scheduler = None
        self._mining_warmup = 1000

    def default_layers(self) -> list[str]:
        from vadkit.backbones import get_spec

        return default_taps(sum(1 for layer in get_spec(self.backbone).layers if layer.startswith("blocks.")))

    def _check_groups(self) -> None:
        if len(self.chosen_layers()) % self.groups:
            raise ParameterError(f"the {len(self.chosen_layers())} encoder layers cannot be split into "
                                 f"{self.groups} equal groups")

    # -- training -------------------------------------------------------------------------------------
    def build_networks(self) -> None:
        self._check_groups()
        extractor = self.extractor
        dim = next(iter(extractor.channels.values()))
        heads = max(1, dim // 64)  # the ViT's head width (64 in every DINOv2 and DeiT size)
        self.decoder_ = DinomalyDecoder(dim, heads, self.decoder_depth, self.groups, self.dropout)
        for module in self.decoder_.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.01, a=-0.03, b=0.03)
                nn.init.zeros_(module.bias)

    def frozen_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The bottleneck's input (B, N, D), the mean of the tapped layers' tokens, and the encoder groups' means
        of the patch tokens (B, G, P, D): the frozen half of a step."""
        with torch.no_grad():
            tokens = torch.stack(list(self.extractor.tokens(images).values()), dim=1)        # (B, L, N, D)
        return encoder_groups(tokens, self.groups, self.extractor.num_prefix_tokens)

    def training_step(self, images: torch.Tensor, frozen=None) -> torch.Tensor:
        fused, encoded = self.frozen_features(images) if frozen is None else frozen
        decoded = self.decoder_(fused)[:, :, self.extractor.num_prefix_tokens:]
        return global_cosine_loss(encoded, decoded, self._mining_share(), self.hard_mining_factor)

    def _mining_share(self) -> float:
        """The share of easy points whose gradient is scaled: 0 at step 0, ``hard_mining`` after the warm-up."""
        step = self._scheduler.last_epoch if self._scheduler is not None else self._mining_warmup
        return self.hard_mining * min(1.0, step / max(1, self._mining_warmup))

    def configure_optimizer(self, total_steps: int | None):
        budget = total_steps
        warmup = self.warmup_steps if self.warmup_steps is not None else (budget // 100 if budget else 100)
        self._mining_warmup = self.hard_mining_warmup if self.hard_mining_warmup is not None else \
            (budget // 10 if budget else 1000)
        optimizer = StableAdamW(list(self.trainable_parameters()), lr=self.lr, betas=(0.9, 0.999),
                                weight_decay=self.weight_decay, amsgrad=True, eps=1e-10)
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warm_cosine(warmup, budget,
                                                                                   self.final_lr / self.lr))
        return optimizer, self._scheduler

    def clip_gradients(self) -> None:
        torch.nn.utils.clip_grad_norm_(list(self.trainable_parameters()), self.grad_clip)

    # -- prediction -----------------------------------------------------------------------------------
    def inference_module(self) -> DinomalyGraph:
        self._check_fitted("inference_module")
        return DinomalyGraph(self.extractor, self.decoder_, self.groups, self.top_percent / 100.0, self.sigma)

    def _predict_batch(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inference_module()(images)


class DinomalyGraph(nn.Module):
    """Dinomaly's inference: encoder taps, bottleneck (no dropout) and decoder, 1 - cos per position and group,
    averaged, upsampled and smoothed; image score the mean of the map's top pixels."""

    def __init__(self, extractor: nn.Module, decoder: DinomalyDecoder, groups: int, top_fraction: float,
                 sigma: float) -> None:
        super().__init__()
        self.extractor, self.decoder, self.groups = extractor, decoder, groups
        self.top_fraction, self.sigma = top_fraction, sigma

    def distance_grid(self, images: torch.Tensor) -> torch.Tensor:
        """(B, h, w): 1 - cosine between encoder and decoder features per position, averaged over the groups."""
        tokens = torch.stack(list(self.extractor.tokens(images).values()), dim=1)            # (B, L, N, D)
        prefix = self.extractor.num_prefix_tokens
        fused, encoded = encoder_groups(tokens, self.groups, prefix)
        decoded = self.decoder(fused)[:, :, prefix:]
        distance = (1.0 - F.cosine_similarity(encoded, decoded, dim=-1)).mean(dim=1)          # (B, P)
        h, w = (side // self.extractor.patch_size for side in images.shape[-2:])
        return distance.view(-1, h, w)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = to_image_maps(self.distance_grid(images), tuple(images.shape[-2:]), self.sigma)
        return top_fraction_mean(maps, self.top_fraction), maps
