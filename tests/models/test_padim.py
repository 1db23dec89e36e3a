"""PaDiM: the Mahalanobis maps must equal an independent numpy computation of the paper's statistics."""

import numpy as np
import pytest
import torch

from vadkit.data import ImageDataset, load_split
from vadkit.errors import VadkitError
from vadkit.models.padim import PaDiM


@pytest.fixture(scope="module")
def data(mvtec_folder):
    split = load_split("mvtec", mvtec_folder)
    return split


@pytest.mark.parametrize("covariance", ["full", "diagonal"])
def test_distances_match_numpy_gaussian_per_position(data, covariance):
    model = PaDiM(image_size=64, n_features=20, covariance=covariance, seed=1)
    train = ImageDataset(data.train, model.transform)
    model.fit(train, progress=False)
    train_images = torch.stack([train[i]["image"] for i in range(len(train))])
    features = model.embed(train_images).numpy()               # (N, P, d)
    test_images = torch.stack([ImageDataset(data.test, model.transform)[i]["image"] for i in range(2)])
    test_features = model.embed(test_images).numpy()
    ours = model.distance_grid(test_images).flatten(1).numpy()      # (2, P)
    n, p, d = features.shape
    expected = np.empty((2, p))
    for position in range(p):
        x = features[:, position]
        mean = x.mean(0)
        if covariance == "full":
            cov = np.cov(x, rowvar=False) + 0.01 * np.eye(d)
            precision = np.linalg.inv(cov)
            delta = test_features[:, position] - mean
            expected[:, position] = np.sqrt(np.einsum("bi,ij,bj->b", delta, precision, delta))
        else:
            var = x.var(0, ddof=1) + 0.01
            expected[:, position] = np.sqrt((((test_features[:, position] - mean) ** 2) / var).sum(1))
    np.testing.assert_allclose(ours, expected, rtol=2e-3, atol=2e-3)
    assert model.precision_.shape == ((p, d, d) if covariance == "full" else (p, d))


def test_default_layers_are_three_stages_and_channel_subset_is_seeded(data):
    model = PaDiM(image_size=64, n_features=50)
    assert model.chosen_layers() == ["features.3", "features.6", "features.13"]
    model.fit(data.train, progress=False)
    other = PaDiM(image_size=64, n_features=50).fit(data.train, progress=False)
    assert torch.equal(model.channel_index_, other.channel_index_) and len(model.channel_index_) == 50


def test_padim_separates_defects(data):
    model = PaDiM(image_size=64).fit(data.train, progress=False)
    test = ImageDataset(data.test, model.transform)
    prediction = model.predict(test, progress=False)
    labels = test.labels
    assert prediction.scores[labels == 1].mean() > prediction.scores[labels == 0].max()
    np.testing.assert_allclose(prediction.scores, prediction.maps.reshape(len(test), -1).max(1), rtol=1e-6)


def test_invalid_covariance_and_too_few_images(data):
    with pytest.raises(ValueError, match="covariance"):
        PaDiM(covariance="spherical")
    with pytest.raises(VadkitError, match="at least 2"):
        PaDiM(image_size=64).fit(data.train[:1], progress=False)


def test_input_of_another_size_is_a_clear_error(data):
    model = PaDiM(image_size=64).fit(data.train, progress=False)
    with pytest.raises(VadkitError, match="fitted on 64x64 images but got 96x96"):
        model.predict(torch.zeros(1, 3, 96, 96))
    assert model.predict(torch.zeros(1, 3, 64, 64)).maps.shape == (1, 64, 64)  # the grid was not overwritten
