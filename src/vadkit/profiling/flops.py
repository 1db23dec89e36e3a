"""Multiply-accumulates (MACs) per image, counted by torch's own ``FlopCounterMode``.

``torch.utils.flop_counter.FlopCounterMode`` intercepts aten operators while the code really runs and
applies a formula per operator: matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``; so ``nn.Linear``,
``@`` and ``einsum``) and convolutions (grouped and depthwise included; bias ignored), with the convention
one multiply-add = 2 FLOPs; vadkit reports MACs = FLOPs / 2, the unit of published backbone figures
(torchvision's "GFLOPS": resnet18 1.81, mobilenet_v2 0.30, vit_b_16 17.56 at 224 px). The count is taken
at the aten level, before oneDNN dispatch, so it is the same for NCHW and channels-last.

Attention on CPU. ``F.scaled_dot_product_attention`` dispatches on CPU to an operator torch has no formula
for, and ``nn.MultiheadAttention`` in eval mode takes a fused fast path that hides even its projections.
While counting, the fast path is switched off (same arithmetic, unfused) and the CPU attention operator is
given torch's own SDPA formula, so ViT backbones are counted fully (vit_b_16: 17.56 GMACs).

Not counted (:data:`UNCOUNTED_TORCH_OPS`): operators without a formula in torch: element-wise arithmetic,
activations, normalisation (BatchNorm, LayerNorm), softmax, pooling, interpolation, ``torch.cdist``,
sort/top-k, indexing. They are cheap per element next to the convolutions of a backbone but not free.
Work done outside torch (a faiss nearest-neighbour search, numpy) is invisible to the counter: a model may
declare it with a method ``analytic_macs(n_images=1) -> dict[str, int]`` (e.g. ``{"knn_search": ...}``),
whose entries :func:`model_macs` adds and lists separately (an entry named ``total``, if present, is taken as
the sum of the others, not added to them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

UNCOUNTED_TORCH_OPS = ("element-wise ops", "activations", "BatchNorm/LayerNorm", "softmax", "pooling",
                       "interpolation", "torch.cdist", "sort/top-k", "indexing")


def _cpu_attention_mapping() -> dict:
    """Formula for the CPU flash-attention operator, which torch 2.x leaves uncounted."""
    from torch.utils.flop_counter import sdpa_flop_count

    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is None:
        return {}

    def cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    return {op: cpu_sdpa_flops}


@contextlib.contextmanager
def _unfused_attention():
    """Switch off nn.MultiheadAttention's fused inference path (which hides its projections) for a while."""
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "get_fastpath_enabled"):
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def count_macs(fn: Callable[..., Any], *args, **kwargs) -> int:
    """MACs torch counts while running ``fn(*args, **kwargs)`` (under ``inference_mode``), all inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    # display=False: the display path imports `tabulate`, which is not a vadkit dependency
    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_mapping())
    with _unfused_attention(), torch.inference_mode(), counter:
        fn(*args, **kwargs)
    return counter.get_total_flops() // 2


@dataclass
class ModelMacs:
    """MACs per image of a model's predict step.

    ``total`` = ``torch`` (counted by torch over the whole ``_predict_batch``) + ``analytic_total`` (the
    work the model declares with ``analytic_macs()``, itemised in ``analytic``; None when the model has no
    such method); ``backbone``: the feature extractor's forward alone (None for a model without one);
    ``uncounted``: a sentence saying what these figures leave out.
    """

    total: int
    torch: int
    backbone: int | None
    analytic_total: int | None = None
    analytic: dict[str, int] = field(default_factory=dict)
    uncounted: str = ""


def model_macs(model, image: torch.Tensor) -> ModelMacs:
    """Count the MACs of one predict step of a fitted model on one image ``(1, 3, H, W)``.

    A transductive model (MuSc: the images of a call score each other) is given a set ``(N, 3, H, W)`` instead, and
    its figures are per image of that set (its work per image grows with N)."""
    transductive = getattr(model, "transductive", False)
    if image.ndim != 4 or (image.shape[0] != 1 and not transductive) or image.shape[0] < 1 + transductive:
        raise ValueError(f"expected one normalised image (1, 3, H, W) (a set of at least 2 for a transductive "
                         f"model), got shape {tuple(image.shape)}")
    n = image.shape[0]
    counted = count_macs(model._predict_batch, image) // n
    extractor = getattr(model, "extractor", None)
    backbone = count_macs(extractor, image) // n if extractor is not None else None
    hook = getattr(model, "analytic_macs", None)
    not_counted = f"not counted: {', '.join(UNCOUNTED_TORCH_OPS)}"
    if transductive:
        not_counted = f"per image of a set of {n} scored together; {not_counted}"
    if not callable(hook):
        return ModelMacs(total=counted, torch=counted, backbone=backbone,
                         uncounted=f"{not_counted}; outside torch (faiss, numpy): search not counted "
                                   f"({type(model).__name__} defines no analytic_macs())")
    declared = {str(k): int(v) for k, v in hook(n_images=1).items()}
    # A "total" entry, when a model adds one, is the sum of its other entries: never added twice.
    analytic = {name: value for name, value in declared.items() if name != "total"}
    analytic_total = declared.get("total", sum(analytic.values()))
    outside = f"added analytically: {', '.join(analytic)}" if analytic else "the model declares no work outside torch"
    return ModelMacs(total=counted + analytic_total, torch=counted, backbone=backbone, analytic_total=analytic_total,
                     analytic=analytic, uncounted=f"{not_counted}; {outside}")
