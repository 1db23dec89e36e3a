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
    assert fitted.memory_bank_.shape == (round(0.25 * n_patches), 128)


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


def reference_scores(bank: np.ndarray, embedding: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """PatchCore's patch scores and eq. 7 image scores written from the paper, brute force in float64.

    ``bank`` (n, C), ``embedding`` (B, C, h, w) -> patch scores (B, h, w), image scores (B,). For b = 1 (or a
    bank of one row) eq. 7 is degenerate (weight 0 for every image) and the image score is s* itself.
    """
    patch_scores, image_scores = [], []
    for features in embedding:
        patches = features.reshape(features.shape[0], -1).T                     # (h*w, C)
        distances = np.linalg.norm(patches[:, None] - bank[None], axis=2)       # (h*w, n)
        nearest = distances.min(1)
        patch_scores.append(nearest.reshape(features.shape[1:]))
        worst = nearest.argmax()
        s_star = nearest[worst]
        m_star = bank[distances[worst].argmin()]
        b_eff = min(b, len(bank))
        if b_eff == 1:
            image_scores.append(s_star)
            continue
        neighbourhood = np.argsort(np.linalg.norm(bank - m_star, axis=1), kind="stable")[:b_eff]
        to_neighbours = np.linalg.norm(bank[neighbourhood] - patches[worst], axis=1)
        image_scores.append((1 - np.exp(s_star) / np.exp(to_neighbours).sum()) * s_star)
    return np.stack(patch_scores), np.array(image_scores)


def fixed_model(bank: np.ndarray, num_neighbours: int = 9) -> PatchCore:
    model = PatchCore(image_size=32, num_neighbours=num_neighbours, sigma=0)
    model.memory_bank_ = torch.from_numpy(bank.astype(np.float32))
    model.fitted = True
    return model


@pytest.mark.parametrize("b", [9, 3, 1])
def test_patch_and_image_scores_follow_the_papers_formulas_on_fixed_features(b):
    rng = np.random.default_rng(7)
    bank = rng.normal(size=(60, 16)) * 3.0
    # test features: near-copies of bank rows (normal patches) and two far outliers (defects)
    embedding = bank[rng.integers(0, 60, size=2 * 25)] + rng.normal(scale=0.05, size=(50, 16))
    embedding = embedding.reshape(2, 5, 5, 16).transpose(0, 3, 1, 2).copy()
    embedding[0, :, 2, 3] += 4.0
    embedding[1, :, 0, 0] -= 2.5
    bank, embedding = bank.astype(np.float32).astype(np.float64), embedding.astype(np.float32).astype(np.float64)
    scores, maps, patch_scores = fixed_model(bank, b).score_embedding(torch.from_numpy(embedding).float(), (5, 5))
    expected_patches, expected_images = reference_scores(bank, embedding, b)
    # every distance exact (float32 differences), not faiss' expanded ||a||^2 - 2 a.b + ||b||^2
    np.testing.assert_allclose(patch_scores.numpy(), expected_patches, rtol=1e-6)
    np.testing.assert_allclose(maps.numpy(), expected_patches, rtol=1e-6)  # sigma 0, same size
    np.testing.assert_allclose(scores.numpy(), expected_images, rtol=1e-6)
    assert np.all(scores.numpy() > 0.5)


def test_one_neighbour_or_a_one_row_bank_gives_s_star_not_zero():
    """Eq. 7 with N_b(m*) = {m*} weighs every image by 1 - exp(s*)/exp(s*) = 0: the image scores collapsed
    to about 0 (battery_weld image AUROC 0.578 instead of 0.963). The score is then s* itself."""
    rng = np.random.default_rng(1)
    embedding = torch.from_numpy(rng.normal(size=(3, 8, 4, 4)).astype(np.float32))
    embedding[2, :, 1, 1] += 6.0
    for bank in (rng.normal(size=(40, 8)), rng.normal(size=(1, 8))):
        for b in (1, 9):
            if b == 9 and len(bank) > 1:
                continue
            scores, _, patch_scores = fixed_model(bank, b).score_embedding(embedding, (4, 4))
            np.testing.assert_allclose(scores.numpy(), patch_scores.flatten(1).max(1).values.numpy(), rtol=1e-5)
            assert scores[2] > scores[:2].max() > 0.5


def test_one_neighbour_still_separates_defects_on_images(split):
    model = PatchCore(image_size=64, coreset_ratio=0.25, num_neighbours=1).fit(split.train, progress=False)
    test = ImageDataset(split.test, model.transform)
    prediction = model.predict(test, progress=False)
    labels = test.labels
    assert prediction.scores.min() > 0.1
    assert prediction.scores[labels == 1].min() > prediction.scores[labels == 0].max()


def test_image_score_is_the_papers_reweighted_nearest_distance(fitted, split):
    images = torch.stack([ImageDataset(split.test, fitted.transform)[i]["image"] for i in range(3)])
    scores, _ = fitted._predict_batch(images)
    bank = fitted.memory_bank_.double().numpy()
    embedding = fitted.embed(images).double().numpy()
    _, expected = reference_scores(bank, embedding, fitted.num_neighbours)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-6)


def test_full_coreset_keeps_every_patch(split):
    model = PatchCore(image_size=64, coreset_ratio=1.0).fit(split.train[:3], progress=False)
    assert model.memory_bank_.shape[0] == 3 * 64


def test_fit_is_deterministic_for_a_seed(split):
    a = PatchCore(image_size=64, coreset_ratio=0.1, seed=3).fit(split.train, progress=False)
    b = PatchCore(image_size=64, coreset_ratio=0.1, seed=3).fit(split.train, progress=False)
    torch.testing.assert_close(a.memory_bank_, b.memory_bank_)


def test_invalid_parameters_are_rejected():
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCore(coreset_ratio=0.0)
    with pytest.raises(ValueError):
        PatchCore(num_neighbours=0)


def test_with_memory_bank_scores_against_the_given_bank_and_leaves_the_model_alone(fitted, split):
    test = ImageDataset(split.test, fitted.transform)
    from vadkit.errors import ParameterError

    own = fitted.predict(test, progress=False)
    same = fitted.with_memory_bank(fitted.memory_bank_.clone())
    np.testing.assert_array_equal(same.predict(test, progress=False).scores, own.scores)
    half = fitted.with_memory_bank(fitted.memory_bank_[: len(fitted.memory_bank_) // 2])
    assert half.extractor is fitted.extractor and len(half.memory_bank_) == len(fitted.memory_bank_) // 2
    # a subset of the bank: every patch is at least as far from its nearest row (maps are non-negative blends)
    assert (half.predict(test, progress=False).maps >= own.maps - 1e-4).all()
    np.testing.assert_array_equal(fitted.predict(test, progress=False).scores, own.scores)  # the model is unchanged
    with pytest.raises(ParameterError, match="memory bank"):
        fitted.with_memory_bank(torch.zeros(3, 5))
