"""StableAdamW: AdamW whose step shrinks when a gradient is large against its running second moment.

Wortsman, Dettmers, Zettlemoyer, Morcos, Farhadi, Schmidt. "Stable and low-precision training for
large-scale vision-language models", NeurIPS 2023, algorithm 2 (AdamW with update clipping, as in AdaFactor).
Dinomaly (Guo et al., CVPR 2025) trains its decoder with it, with AMSGrad's running maximum of the second
moment. Per parameter tensor, with the bias-corrected moments m, v of AdamW:

    rms = sqrt(mean(g^2 / (sqrt(v) + eps)^2))       the gradient against what the optimiser expects
    lr_t = lr / max(1, rms / clip_threshold)
    p <- p * (1 - lr_t * weight_decay) - lr_t * m / (sqrt(v) + eps)
"""

from __future__ import annotations

import math

import torch


class StableAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, clip_threshold: float = 1.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                                      clip_threshold=clip_threshold))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = float(state["step"])
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                second = state["exp_avg_sq"]
                if group["amsgrad"]:
                    torch.maximum(state["max_exp_avg_sq"], second, out=state["max_exp_avg_sq"])
                    second = state["max_exp_avg_sq"]
                denom = (second / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
                rms = float((grad / denom).pow(2).mean().sqrt())
                lr = group["lr"] / max(1.0, rms / group["clip_threshold"])
                p.mul_(1 - lr * group["weight_decay"])
                p.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** step))
        return loss


def warm_cosine(warmup_steps: int, total_steps: int | None, final_ratio: float):
    """The learning-rate factor of step s for ``LambdaLR``: a linear warm-up from 0 over ``warmup_steps``, then a
    cosine from 1 down to ``final_ratio`` at ``total_steps`` (a constant 1 after the warm-up when the number of
    steps is unknown, e.g. under a time budget alone)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        if total_steps is None or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
