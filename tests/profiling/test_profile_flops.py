"""MACs counted by torch's FlopCounterMode, checked against published backbone figures and hand counts."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from vadkit.profiling.flops import UNCOUNTED_TORCH_OPS, count_macs, model_macs


@pytest.mark.parametrize(("name", "gmacs"), [("mobilenet_v2", 0.301), ("resnet18", 1.814)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_published_backbone_macs_at_224(name, gmacs, channels_last):
    # torchvision's model cards: mobilenet_v2 0.30, resnet18 1.81 "GFLOPS" (= multiply-adds)
    network = getattr(torchvision.models, name)(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    if channels_last:
        network, x = network.to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    assert count_macs(network, x) / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_macs_scale_with_the_batch():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    one, four = count_macs(conv, torch.randn(1, 3, 8, 8)), count_macs(conv, torch.randn(4, 3, 8, 8))
    assert one == 8 * 8 * 8 * 3 * 9 and four == 4 * one


def test_cpu_attention_is_counted_fully():
    length, dim, heads = 16, 64, 4
    attention = nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    x = torch.randn(1, length, dim)
    # q, k, v and output projections + scores (L x L x dim) + weighted sum (L x L x dim)
    expected = 4 * length * dim * dim + 2 * length * length * dim
    assert count_macs(lambda: attention(x, x, x, need_weights=False)) == expected
    assert torch.backends.mha.get_fastpath_enabled()  # the fused path is switched back on afterwards
    q = torch.randn(2, heads, length, dim // heads)
    assert count_macs(F.scaled_dot_product_attention, q, q, q) == 2 * 2 * heads * length * length * (dim // heads)


def test_uncounted_operators_are_really_uncounted():
    x = torch.randn(1, 8, 16, 16)
    assert count_macs(lambda: F.interpolate(F.max_pool2d(torch.relu(x), 2), scale_factor=2)) == 0
    assert count_macs(torch.cdist, x.flatten(1), x.flatten(1)) == 0
    assert count_macs(torch.mm, x.flatten(1), x.flatten(1).T) == 8 * 16 * 16


class Stub:
    """A model-shaped object: a conv 'backbone', then a matrix product in torch and a search in numpy."""

    def __init__(self, analytic=None) -> None:
        self.extractor = nn.Conv2d(3, 8, 3, padding=1)
        self.bank = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
        if analytic is not None:
            self.analytic_macs = lambda n_images=1: {"knn_search": n_images * analytic}

    def _predict_batch(self, images):
        features = self.extractor(images)                          # 8*8*8*27 MACs
        patches = features.flatten(2).transpose(1, 2)[0]          # (64, 8)
        mixed = patches @ torch.ones(8, 8)                         # 64*8*8 MACs, counted
        distances = ((mixed.numpy()[:, None] - self.bank[None]) ** 2).sum(-1)  # numpy: invisible to torch
        return torch.tensor([distances.min()]), torch.zeros(1, 8, 8)


def test_model_macs_adds_the_declared_analytic_work_and_says_what_is_missing():
    image = torch.randn(1, 3, 8, 8)
    backbone, torch_part = 8 * 8 * 8 * 27, 8 * 8 * 8 * 27 + 64 * 8 * 8
    plain = model_macs(Stub(), image)
    assert (plain.total, plain.torch, plain.backbone, plain.analytic_total) == (torch_part, torch_part, backbone, None)
    assert "search not counted" in plain.uncounted and "analytic_macs" in plain.uncounted
    assert all(op in plain.uncounted for op in UNCOUNTED_TORCH_OPS)
    declared = model_macs(Stub(analytic=64 * 50 * 8), image)
    assert declared.analytic == {"knn_search": 64 * 50 * 8} and declared.analytic_total == 64 * 50 * 8
    assert declared.total == torch_part + 64 * 50 * 8
    assert "search not counted" not in declared.uncounted and "knn_search" in declared.uncounted
    summed = Stub()
    summed.analytic_macs = lambda n_images=1: {"tables": 100, "scan": 20, "total": 120}
    summed = model_macs(summed, image)
    assert summed.total == torch_part + 120 and summed.analytic == {"tables": 100, "scan": 20}  # total not added twice
    nothing = Stub()
    nothing.analytic_macs = lambda n_images=1: {}
    assert model_macs(nothing, image).analytic_total == 0
    assert "declares no work outside torch" in model_macs(nothing, image).uncounted
    with pytest.raises(ValueError, match="one normalised image"):
        model_macs(Stub(), torch.randn(2, 3, 8, 8))
