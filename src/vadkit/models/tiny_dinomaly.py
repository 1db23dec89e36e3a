"""Tiny-Dinomaly: Dinomaly made small for edge devices.

Barusco, Borsatti, Petrovic, Dalle Pezze, Susto. "Continual Visual Anomaly Detection on the Edge: Benchmark
and Efficient Solutions", arXiv 2604.06435 (2026). The paper proposes Tiny-Dinomaly, "a lightweight
adaptation of the Dinomaly model built on the DINO foundation model", and reports a 13x smaller memory
footprint, 20x lower computational cost and +5 points of pixel F1 against Dinomaly.

What is known and what is vadkit's: only the paper's abstract could be read here (no code is published), so
its exact configuration (encoder size, tapped layers, decoder depth, input size) is not known. vadkit's
Tiny-Dinomaly is Dinomaly (:mod:`vadkit.models.dinomaly`, everything else unchanged: noisy bottleneck,
linear-attention decoder, loose reconstruction, hard-mined global cosine loss, StableAdamW) shrunk along
the three axes that set its memory and compute, each a parameter:

* the smallest DINO encoder, ViT-S/14 (Dinomaly's paper uses ViT-B/14; 22 M against 86 M parameters);
* 224-px inputs (256 patch tokens; Dinomaly's 392-px crop has 784, and the decoder's cost is linear in them);
* a 4-block decoder (2 per group) instead of 8.

BENCHMARKS.md ("Foundation-model methods") measures the paper's claims against this configuration: memory
(parameters and peak RSS) and compute (MACs) against Dinomaly as the paper configures it (ViT-B/14 with
registers at 392 px, counted on the architecture) and as vadkit runs it offline (ViT-S/14), and pixel F1 on the
shared sets.
"""

from __future__ import annotations

from collections.abc import Sequence

from vadkit.data.transforms import Size
from vadkit.models.dinomaly import Dinomaly


class TinyDinomaly(Dinomaly):
    """Tiny-Dinomaly: :class:`~vadkit.models.dinomaly.Dinomaly` with a 4-block decoder on a ViT-S/14 at 224 px
    (see the module docstring). Every parameter is Dinomaly's."""

    name = "tiny_dinomaly"

    def __init__(self, *, backbone: str = "dinov2_vits14_imgfocus", layers: Sequence[str] | None = None,
                 weights: str | None = None, image_size: Size = 224, crop_size: int | None = None, resize: str = "stretch",
                 groups: int = 2, decoder_depth: int = 4, dropout: float = 0.2, lr: float = 2e-3,
                 final_lr: float = 2e-4, weight_decay: float = 1e-4, warmup_steps: int | None = None,
                 hard_mining: float = 0.9, hard_mining_factor: float = 0.1, hard_mining_warmup: int | None = None,
                 grad_clip: float = 0.1, top_percent: float = 1.0, sigma: float = 4.0,
                 epochs: int | None = None, max_steps: int | None = 300, max_time: float | None = None,
                 batch_size: int = 16, seed: int = 0, validate_every: int | None = None,
                 patience: int | None = None, num_workers: int = 0) -> None:
        super().__init__(backbone=backbone, layers=layers, weights=weights, image_size=image_size,
                         crop_size=crop_size, resize=resize, groups=groups, decoder_depth=decoder_depth, dropout=dropout, lr=lr,
                         final_lr=final_lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         hard_mining=hard_mining, hard_mining_factor=hard_mining_factor,
                         hard_mining_warmup=hard_mining_warmup, grad_clip=grad_clip, top_percent=top_percent,
                         sigma=sigma, epochs=epochs, max_steps=max_steps, max_time=max_time, batch_size=batch_size,
                         seed=seed, validate_every=validate_every, patience=patience, num_workers=num_workers)
