"""CFA: its loss, scores, descriptor and memory bank against independent computations, and short real fits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.errors import ParameterError, VadkitError
from vadkit.models.cfa import (add_coordinates, coupled_hypersphere_loss, nearest_squared_distances, patch_scores)
from tests.conftest import assert_detects_planted_defects, assert_reloads_identically

TINY = {"image_size": 64, "batch_size": 4}


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def brute_force_sorted_squared(queries: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Every squared distance, each row sorted ascending (float64)."""
    difference = queries[:, None, :].astype(np.float64) - centres[None, :, :].astype(np.float64)
    return np.sort((difference ** 2).sum(-1), axis=1)


def test_the_loss_matches_a_brute_force_computation_on_a_hand_made_example():
    # 4 patches, 7 centres in 2-D: distances around the radius, so that both terms act on some neighbours
    queries = np.array([[0.0, 0.0], [1.0, 0.2], [0.3, -0.4], [2.0, 2.0]], np.float32)
    centres = np.array([[0.1, 0.0], [0.0, 0.5], [-0.6, 0.1], [1.0, 0.0], [0.9, 0.6], [0.4, -0.5], [2.5, 1.5]],
                       np.float32)
    k, j, radius, alpha = 2, 3, 0.8, 0.1
    distances = brute_force_sorted_squared(queries, centres)
    attraction = np.maximum(0.0, distances[:, :k] - radius ** 2).mean()
    repulsion = np.maximum(0.0, radius ** 2 - distances[:, k:k + j] - alpha).mean()
    assert attraction > 0 and repulsion > 0  # the example exercises both terms
    expected = 1000.0 * (attraction + repulsion)  # the authors' 1 / nu
    q = torch.from_numpy(queries).requires_grad_(True)
    squared = nearest_squared_distances(q, torch.from_numpy(centres), k + j)
    np.testing.assert_allclose(squared.detach().numpy(), distances[:, :k + j], rtol=1e-5, atol=1e-6)
    loss = coupled_hypersphere_loss(squared, torch.tensor([radius]), k, j, alpha)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()  # gradients reach the descriptors through the recomputed distances
    assert q.grad is not None and q.grad.abs().sum() > 0
    # without hard negatives only attraction remains
    no_repulsion = coupled_hypersphere_loss(squared, torch.tensor([radius]), k, 0, alpha)
    assert float(no_repulsion.detach()) == pytest.approx(1000.0 * attraction, rel=1e-5)


def test_the_nearest_centres_are_exact_on_random_data_larger_than_a_search_chunk(monkeypatch):
    import vadkit.models.cfa as cfa

    monkeypatch.setattr(cfa, "SEARCH_BUDGET", 64)  # chunks of a few queries: the chunking is exercised
    generator = torch.Generator().manual_seed(0)
    queries, centres = torch.randn(50, 6, generator=generator), torch.randn(20, 6, generator=generator)
    expected = brute_force_sorted_squared(queries.numpy(), centres.numpy())[:, :4]
    np.testing.assert_allclose(nearest_squared_distances(queries, centres, 4).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_the_patch_score_is_the_softmin_weighted_nearest_distance():
    generator = torch.Generator().manual_seed(1)
    queries, centres = torch.randn(9, 5, generator=generator), torch.randn(12, 5, generator=generator)
    distances = np.sqrt(brute_force_sorted_squared(queries.numpy(), centres.numpy())[:, :3])
    weights = np.exp(-distances) / np.exp(-distances).sum(1, keepdims=True)  # softmin over the 3 nearest
    expected = weights[:, 0] * distances[:, 0]
    scores = patch_scores(nearest_squared_distances(queries, centres, 3))
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-5)


def test_coordconv_appends_row_and_column_positions_from_minus_one_to_one():
    x = torch.zeros(2, 3, 4, 5)
    out = add_coordinates(x)
    assert out.shape == (2, 5, 4, 5) and torch.equal(out[:, :3], x)
    np.testing.assert_allclose(out[0, 3, :, 0].numpy(), [-1, -1 / 3, 1 / 3, 1], rtol=1e-6)  # rows
    np.testing.assert_allclose(out[1, 4, 0, :].numpy(), [-1, -0.5, 0, 0.5, 1], rtol=1e-6)   # columns
    assert torch.equal(out[:, 3], out[:, 3, :, :1].expand(-1, -1, 5))  # constant along each row


def test_the_descriptor_averages_3x3_neighbourhoods_with_zero_padding_then_concatenates():
    model = vadkit.create_model("cfa", **TINY, layers=["features.3", "features.6"])
    model.build_networks()
    descriptor = model.descriptor_
    assert descriptor.conv.in_channels == 24 + 32 + 2 and descriptor.conv.out_channels == 24 + 32
    features = {"features.3": torch.ones(1, 24, 8, 8), "features.6": torch.ones(1, 32, 4, 4)}
    with torch.no_grad():
        descriptor.conv.weight.zero_()
        descriptor.conv.bias.zero_()
        descriptor.conv.weight[0, 0] = 1.0  # output 0 = first feature channel
        out = descriptor(features)
    assert out.shape == (1, 56, 8, 8)
    assert float(out[0, 0, 0, 0]) == pytest.approx(4 / 9) and float(out[0, 0, 3, 3]) == pytest.approx(1.0)
    halved = vadkit.create_model("cfa", **TINY, gamma_d=2)
    halved.build_networks()
    assert halved.descriptor_.conv.out_channels == (24 + 32 + 96) // 2


def initial_descriptor_mean(model, dataset) -> np.ndarray:
    """The per-position mean, over the images, of the descriptor as the seed initialises it: (H * W, D)."""
    torch.manual_seed(model.seed)
    model.build_networks()
    with torch.no_grad():
        outputs = [model.descriptor_(model.extractor(dataset[i]["image"][None]))[0].double().numpy()
                   for i in range(len(dataset))]
    mean = np.mean(outputs, axis=0)  # (D, H, W)
    return mean.reshape(mean.shape[0], -1).T


def test_the_memory_is_the_per_position_mean_of_the_initial_descriptor_and_stays_fixed(split):
    model = vadkit.create_model("cfa", **TINY, max_steps=3).fit(split.train, progress=False)
    reference = vadkit.create_model("cfa", **TINY)
    expected = initial_descriptor_mean(reference, ImageDataset(split.train, reference.transform))
    assert model.centres_.shape == (16 * 16, 152)  # 64 px: a 16 x 16 stride-4 grid, 24 + 32 + 96 channels
    np.testing.assert_allclose(model.centres_.numpy(), expected, rtol=1e-4, atol=1e-5)
    assert not torch.equal(model.descriptor_.conv.weight, reference.descriptor_.conv.weight)  # trained


def test_gamma_c_clusters_the_memory_deterministically_for_a_seed(split):
    a = vadkit.create_model("cfa", **TINY, gamma_c=4, max_steps=1).fit(split.train, progress=False)
    b = vadkit.create_model("cfa", **TINY, gamma_c=4, max_steps=1).fit(split.train, progress=False)
    assert a.centres_.shape == (16 * 16 // 4, 152)
    assert torch.equal(a.centres_, b.centres_)
    with pytest.raises(VadkitError, match="fewer than num_nearest"):
        vadkit.create_model("cfa", **TINY, gamma_c=64, max_steps=1).fit(split.train, progress=False)


def test_a_resumed_training_rebuilds_the_same_memory_and_weights(split, tmp_path):
    whole = vadkit.create_model("cfa", **TINY, max_steps=4).fit(split.train, progress=False)
    checkpoint = tmp_path / "cfa.ckpt"
    vadkit.create_model("cfa", **TINY, max_steps=2).fit(split.train, progress=False, checkpoint=checkpoint)
    resumed = vadkit.create_model("cfa", **TINY, max_steps=4).fit(split.train, progress=False,
                                                                   checkpoint=checkpoint, resume=True)
    assert torch.equal(resumed.centres_, whole.centres_)
    for key, value in whole.descriptor_.state_dict().items():
        torch.testing.assert_close(resumed.descriptor_.state_dict()[key], value, rtol=0, atol=0)


def test_a_short_fit_learns_normal_and_planted_defects_score_higher_and_survives_save_load(split, tmp_path):
    model = vadkit.create_model("cfa", **TINY, max_steps=40)
    model.fit(split.train, val=split.train[:4], progress=False)
    losses = [entry["loss"] for entry in model.history_ if "loss" in entry]
    assert losses[-1] < 0.7 * losses[0]  # the loss goes down
    assert float(model.descriptor_.radius.detach()) > 1e-5  # the radius is learned, as in the authors' code
    test, prediction = assert_detects_planted_defects(model, split)
    np.testing.assert_allclose(prediction.scores, prediction.maps.reshape(len(test), -1).max(1), rtol=1e-6)
    assert_reloads_identically(model, test, prediction, tmp_path / "cfa.vad")


@pytest.mark.parametrize("params, message", [
    ({"gamma_c": 0}, "gamma_c must be an integer >= 1"),
    ({"gamma_d": 1.5}, "gamma_d must be an integer >= 1"),
    ({"gamma_d": 1000}, "leaves no descriptor channel"),
    ({"num_nearest": 0}, "num_nearest must be an integer >= 1"),
    ({"num_hard_negatives": -1}, "num_hard_negatives must be an integer >= 0"),
    ({"radius": 0}, "radius must be a positive number"),
    ({"alpha": -0.1}, "alpha must be a non-negative number"),
    ({"lr": 0}, "lr must be a positive number"),
    ({"sigma": -1}, "sigma must be a number >= 0"),
])
def test_bad_parameters_are_refused_at_construction(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("cfa", **params)


def test_the_map_is_upsampled_bilinearly_then_smoothed():
    from vadkit.ops.smoothing import gaussian_blur

    generator = torch.Generator().manual_seed(2)
    model = vadkit.create_model("cfa", **TINY, sigma=4)
    model.build_networks()
    model.centres_ = torch.randn(40, 152, generator=generator)
    model.fitted, model.layers_ = True, model.chosen_layers()
    images = torch.randn(2, 3, 64, 64, generator=generator)
    scores, maps = model.predict(images).scores, model.predict(images).maps
    with torch.no_grad():
        descriptors = model.descriptor_(model.extractor(images))
        flat = descriptors.permute(0, 2, 3, 1).reshape(-1, descriptors.shape[1])
        patches = patch_scores(nearest_squared_distances(flat, model.centres_, 3)).view(2, 16, 16)
        expected = gaussian_blur(F.interpolate(patches[:, None], size=(64, 64), mode="bilinear",
                                               align_corners=False)[:, 0], 4)
    np.testing.assert_allclose(maps, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, expected.flatten(1).amax(1).numpy(), rtol=1e-5)
