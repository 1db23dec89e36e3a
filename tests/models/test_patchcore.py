"""PatchCore on tiny generated images, with the real pretrained mobilenet_v2 (offline weights)."""

import numpy as np
import pytest
import torch

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.models.patchcore import PatchCore


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


@pytest.fixture(scope="module")
def fitted(split):
    model = vadkit.create_model("patchcore", image_size=64, coreset_ratio=0.25)
    return model.fit(split.train, progress=False)


def test_memory_bank_is_the_requested_fraction_of_training_patches(fitted, split):
    # mobilenet_v2 features.6 is stride 8: 64 px -> 8 x 8 patches per image, 32 + 96 channels
    n_patches = len(split.train) * 8 * 8
    assert fitted.memory_bank.shape == (round(0.25 * n_patches), 128)


def test_defects_score_higher_and_maps_peak_on_the_defect(fitted, split):
    test = ImageDataset(split.test, fitted.transform)
    prediction = fitted.predict(test, progress=False)
    assert prediction.scores.shape == (len(test),) and prediction.maps.shape == (len(test), 64, 64)
    labels = test.labels
    assert prediction.scores[labels == 1].min() > prediction.scores[labels == 0].max()
    masks = test.masks_array()
    for anomaly_map, mask in zip(prediction.maps[labels == 1], masks[labels == 1]):
        peak = np.unravel_index(anomaly_map.argmax(), anomaly_map.shape)
        ys, xs = np.nonzero(mask)
        assert abs(peak[0] - ys.mean()) < 12 and abs(peak[1] - xs.mean()) < 12


def test_image_score_is_the_papers_reweighted_nearest_distance(fitted, split):
    images = torch.stack([ImageDataset(split.test, fitted.transform)[i]["image"] for i in range(3)])
    scores, _ = fitted._predict_batch(images)
    bank = fitted.memory_bank.double().numpy()
    embedding = fitted.embed(images).double()
    for b in range(3):
        test_patches = embedding[b].flatten(1).T.numpy()                      # (h*w, C)
        distances = np.linalg.norm(test_patches[:, None] - bank[None], axis=2)
        worst = distances.min(1).argmax()
        s_star = distances[worst].min()
        m_star = bank[distances[worst].argmin()]
        neighbourhood = np.argsort(np.linalg.norm(bank - m_star, axis=1))[:fitted.num_neighbours]
        to_neighbours = np.linalg.norm(bank[neighbourhood] - test_patches[worst], axis=1)
        expected = (1 - np.exp(s_star) / np.exp(to_neighbours).sum()) * s_star
        assert scores[b].item() == pytest.approx(expected, rel=1e-3)


def test_full_coreset_keeps_every_patch(split):
    model = PatchCore(image_size=64, coreset_ratio=1.0).fit(split.train[:3], progress=False)
    assert model.memory_bank.shape[0] == 3 * 64


def test_fit_is_deterministic_for_a_seed(split):
    a = PatchCore(image_size=64, coreset_ratio=0.1, seed=3).fit(split.train, progress=False)
    b = PatchCore(image_size=64, coreset_ratio=0.1, seed=3).fit(split.train, progress=False)
    torch.testing.assert_close(a.memory_bank, b.memory_bank)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore(coreset_ratio=0.0)
    with pytest.raises(ValueError):
        PatchCore(num_neighbours=0)
