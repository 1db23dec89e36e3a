"""The search work models declare for `vadkit profile` (torch's flop counter cannot see faiss or element-wise ops)."""

import torch

from vadkit.models import create_model


def _images(n=4, size=64, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_patchcore_declares_one_distance_per_patch_and_bank_feature():
    model = create_model("patchcore", image_size=64, coreset_ratio=0.5).fit(_images(), progress=False)
    patches = model.embed(_images(1)).shape[-2] * model.embed(_images(1)).shape[-1]
    bank, width = model.memory_bank_.shape
    macs = model.analytic_macs(n_images=2)
    assert macs["knn_search"] == 2 * patches * bank * width
    assert macs["reweighting_search"] == 2 * bank * width


def test_padim_declares_the_diagonal_distance_only():
    diagonal = create_model("padim", image_size=64, covariance="diagonal").fit(_images(), progress=False)
    positions, features = diagonal.mean_.shape
    assert diagonal.analytic_macs(n_images=3) == {"diagonal_mahalanobis": 3 * positions * features}
    full = create_model("padim", image_size=64).fit(_images(), progress=False)
    assert full.analytic_macs() == {}  # its bmm is counted by torch itself
