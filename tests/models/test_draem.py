"""DRAEM: its losses and score against independent computations, its networks, a short fit, persistence."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import vadkit
from vadkit.data import load_split
from vadkit.errors import ParameterError
from vadkit.models.draem import (DRAEM, DiscriminativeNetwork, ReconstructiveNetwork, focal_loss, image_score,
                                 ssim_loss)
from tests.conftest import assert_detects_planted_defects, assert_reloads_identically


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def test_focal_loss_is_the_authors_smoothed_focal_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 5, 4) * 3
    mask = (torch.rand(2, 1, 5, 4) > 0.5).float()
    expected = []
    p = torch.softmax(logits, 1).numpy().astype(np.float64)
    for b in range(2):
        for y in range(5):
            for x in range(4):
                target = int(mask[b, 0, y, x])
                one_hot = [1e-5, 1e-5]
                one_hot[target] = 1 - 1e-5
                pt = one_hot[0] * p[b, 0, y, x] + one_hot[1] * p[b, 1, y, x] + 1e-5
                expected.append(-(1 - pt) ** 2 * math.log(pt))
    assert float(focal_loss(logits, mask)) == pytest.approx(np.mean(expected), rel=1e-5)
    # without the smoothing it is the textbook focal loss -(1 - p_t)^2 log p_t of the true class
    p_true = np.where(mask[:, 0].numpy() == 1, p[:, 1], p[:, 0])
    textbook = np.mean(-(1 - p_true) ** 2 * np.log(p_true))
    assert float(focal_loss(logits, mask, smooth=0.0)) == pytest.approx(textbook, rel=1e-5)
    # gamma 0 is the cross-entropy
    assert float(focal_loss(logits, mask, gamma=0.0, smooth=0.0)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, mask[:, 0].long())), rel=1e-5)


def test_ssim_loss_matches_a_gaussian_window_computation():
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, 20, 24))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    x = np.arange(11) - 5
    g = np.exp(-x ** 2 / (2 * 1.5 ** 2))
    window = np.outer(g, g) / np.outer(g, g).sum()

    def filt(image):  # zero padding, the window centred on the pixel
        return ndimage.correlate(image, window, mode="constant", cval=0.0)

    values = []
    for i in range(2):
        for c in range(3):
            u, v = a[i, c], b[i, c]
            mu_u, mu_v = filt(u), filt(v)
            var_u, var_v = filt(u * u) - mu_u ** 2, filt(v * v) - mu_v ** 2
            cov = filt(u * v) - mu_u * mu_v
            c1, c2 = 0.01 ** 2, 0.03 ** 2
            numerator = (2 * mu_u * mu_v + c1) * (2 * cov + c2)
            values.append(numerator / ((mu_u ** 2 + mu_v ** 2 + c1) * (var_u + var_v + c2)))
    expected = 1 - np.mean(values)
    got = float(ssim_loss(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)))
    assert got == pytest.approx(expected, abs=1e-5)
    same = torch.tensor(a, dtype=torch.float32)
    assert float(ssim_loss(same, same)) == pytest.approx(0.0, abs=1e-5)


def test_image_score_is_the_maximum_of_the_21x21_mean_with_zero_borders():
    rng = np.random.default_rng(1)
    maps = rng.random((3, 40, 36)).astype(np.float32)
    maps[1, 5:9, 30:34] = 5.0  # a spot near the border: the zeros outside count in the mean
    expected = [ndimage.uniform_filter(m.astype(np.float64), size=21, mode="constant", cval=0.0).max() for m in maps]
    np.testing.assert_allclose(image_score(torch.from_numpy(maps)).numpy(), expected, rtol=1e-5)


def test_the_networks_have_the_papers_shapes_and_widths():
    rec, disc = ReconstructiveNetwork(8), DiscriminativeNetwork(4)
    bottlenecks = []
    rec.encoder[4].register_forward_hook(lambda module, inputs, output: bottlenecks.append(output.shape))
    disc.encoder[5].register_forward_hook(lambda module, inputs, output: bottlenecks.append(output.shape))
    x = torch.rand(2, 3, 64, 96)
    out = rec(x)
    assert out.shape == x.shape
    assert disc(torch.cat([out, x], 1)).shape == (2, 2, 64, 96)
    # the reconstructive bottleneck at stride 16, the U-Net's at stride 32
    assert bottlenecks == [(2, 64, 4, 6), (2, 32, 2, 3)]
    convs = [m for m in rec.modules() if isinstance(m, torch.nn.Conv2d)]
    assert max(c.out_channels for c in convs) == 8 * 8  # 8w at the bottleneck
    assert len(convs) == 10 + 12 + 1  # 5 encoder stages x 2, 4 decoder stages x 3, the head
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 12 + 15 + 1 and convs[0].in_channels == 6 and convs[-1].out_channels == 2
    assert max(c.out_channels for c in convs) == 8 * 4
    # the paper's widths are one parameter each away
    assert DRAEM(base_width=128, disc_base_width=64).base_width == 128


def test_the_learning_rate_drops_by_5_at_80_and_90_percent_of_the_steps():
    model = DRAEM(image_size=64, lr=1e-3)
    model.build_networks()
    optimizer, scheduler = model.configure_optimizer(100)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[79] == pytest.approx(1e-3) and lrs[80] == pytest.approx(2e-4) and lrs[90] == pytest.approx(4e-5)
    assert model.configure_optimizer(None)[1] is None  # a time budget alone: no schedule


def test_images_are_fed_in_0_1_without_normalisation():
    transform = DRAEM(image_size=64).transform
    assert transform.mean == (0.0, 0.0, 0.0) and transform.std == (1.0, 1.0, 1.0)
    assert transform.resize_size == (64, 64)


@pytest.mark.parametrize("params, message", [
    ({"image_size": 100}, "multiple of 32"),
    ({"image_size": (64, 48)}, "multiple of 32"),
    ({"base_width": 0}, "base_width"),
    ({"disc_base_width": 2.5}, "disc_base_width"),
    ({"lr": 0}, "lr"),
    ({"texture_dir": 3}, "texture_dir"),
    ({"max_steps": None}, "budget"),
])
def test_bad_parameters_fail_at_construction(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("draem", **params)


def test_a_missing_texture_folder_fails_when_training_starts(split, tmp_path):
    model = vadkit.create_model("draem", image_size=64, max_steps=1, texture_dir=str(tmp_path / "nope"))
    with pytest.raises(ParameterError, match="texture_dir"):
        model.fit(split.train, progress=False)


def test_a_seed_reproduces_a_training_anomalies_included(split):
    def trained(seed):
        model = vadkit.create_model("draem", image_size=64, batch_size=4, max_steps=3, seed=seed,
                                    base_width=4, disc_base_width=4)
        model.fit(split.train, progress=False)
        return torch.cat([p.flatten() for p in model.reconstructive_.parameters()])

    first = trained(0)
    torch.manual_seed(123)  # the global RNG's state before fit does not matter: the loop seeds it
    assert torch.equal(first, trained(0))
    assert not torch.equal(first, trained(1))


def test_a_short_fit_learns_normal_and_planted_defects_score_higher(split, tmp_path):
    # narrow networks and a 10x learning rate so that 40 steps suffice on the tiny images
    model = vadkit.create_model("draem", image_size=64, batch_size=4, max_steps=40, base_width=8,
                                disc_base_width=8, lr=1e-3)
    model.fit(split.train, progress=False)
    losses = [entry["loss"] for entry in model.history_ if "loss" in entry]
    assert losses[-1] < losses[0]  # the loss goes down
    test, prediction = assert_detects_planted_defects(model, split)
    assert prediction.maps.min() >= 0 and prediction.maps.max() <= 1  # a probability
    assert_reloads_identically(model, test, prediction, tmp_path / "draem.vad")
