"""MuSc (vadkit.models.musc): its pieces against brute-force computations, and zero-shot detection of planted defects
among unlabelled images, with a negative control (a defect every image shares is not anomalous any more)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.errors import VadkitError
from vadkit.metrics import auroc
from vadkit.models.musc import aggregate_neighbourhood, default_layers_of, mutual_scores, rescore

from tests.conftest import make_mvtec_folder


def test_neighbourhood_aggregation_is_a_normalised_local_mean():
    grid = torch.randn(2, 4, 5, 6)
    out = aggregate_neighbourhood(grid, 3)                                         # (2, 30, 4)
    normed = (grid - grid.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(grid.var(dim=(1, 2, 3), unbiased=False,
                                                                                  keepdim=True) + 1e-5)
    padded = F.pad(normed, (1, 1, 1, 1))
    for y, x in ((0, 0), (2, 3), (4, 5)):                                         # zero padding counts (9 cells)
        expected = padded[:, :, y:y + 3, x:x + 3].sum(dim=(2, 3)) / 9
        torch.testing.assert_close(out[:, y * 6 + x], F.normalize(expected, dim=1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aggregate_neighbourhood(grid, 1).norm(dim=2), torch.ones(2, 30))


def test_mutual_scores_against_brute_force():
    torch.manual_seed(0)
    n, p, c = 6, 5, 3
    patches = F.normalize(torch.randn(n, p, c), dim=-1)
    interval = 0.5
    keep = int(interval * (n - 1))
    expected = torch.empty(n, p)
    for i in range(n):
        for m in range(p):
            nearest = sorted(min(float((patches[i, m] - patches[j, q]).norm()) for q in range(p))
                             for j in range(n) if j != i)
            expected[i, m] = sum(nearest[:keep]) / keep
    got = mutual_scores(patches, interval, [torch.arange(n)], chunk=4)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # two subsets: each image only meets the other images of its own subset
    halves = [torch.tensor([0, 2, 4]), torch.tensor([1, 3, 5])]
    split = mutual_scores(patches, 1.0, halves)
    alone = mutual_scores(patches[[0, 2, 4]], 1.0, [torch.arange(3)])
    torch.testing.assert_close(split[[0, 2, 4]], alone)
    with pytest.raises(VadkitError, match="at least 2 images"):
        mutual_scores(patches[:1], 0.3, [torch.arange(1)])


def test_rescoring_averages_each_images_nearest_images_scores():
    scores = torch.tensor([0.0, 1.0, 2.0, 4.0])
    tokens = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    unit = F.normalize(tokens, dim=1)
    similarity = unit @ unit.T
    normalised = scores / 4
    expected = []
    for i in range(4):
        per_window = []
        for k in (1, 2):
            values, index = similarity[i].topk(k)
            per_window.append(float((values * normalised[index]).sum() / values.sum()))
        expected.append(np.mean(per_window))
    torch.testing.assert_close(rescore(scores, tokens, [1, 2]), torch.tensor(expected, dtype=torch.float32))
    assert default_layers_of(12) == ["blocks.2", "blocks.5", "blocks.8", "blocks.11"]
    assert default_layers_of(24) == ["blocks.5", "blocks.11", "blocks.17", "blocks.23"]


def musc(**params):
    return vadkit.create_model("musc", **{"image_size": 56, **params})


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    """12 normal images and 3 with a planted red square, scored together without any training image."""
    root = make_mvtec_folder(tmp_path_factory.mktemp("musc"), n_train=1, n_good=12, n_bad=3, seed=3)
    return load_split("mvtec", root)


def test_zero_shot_it_finds_the_rare_defects_among_unlabelled_images(unlabelled):
    model = musc()
    assert not model.requires_fit and model.transductive
    test = ImageDataset(unlabelled.test, model.transform)
    prediction = model.predict(test, batch_size=4, progress=False)      # features in batches, scored jointly
    assert auroc(test.labels, prediction.scores) >= 0.9
    masks = test.masks_array()
    inside = np.mean([m[mask].mean() for m, mask in zip(prediction.maps, masks) if mask.any()])
    outside = np.mean([m[~mask].mean() for m, mask in zip(prediction.maps, masks) if mask.any()])
    assert inside > outside
    # the same images in another batching give the same scores: the whole set is scored at once
    np.testing.assert_allclose(model.predict(test, batch_size=15, progress=False).scores, prediction.scores,
                               rtol=1e-4)


def test_negative_control_a_defect_most_images_share_is_not_anomalous(tmp_path):
    """MuSc's premise is that anomalies are rare. Put the same red square at the same place in 12 of 15 images: its
    patches find twins in most other images, and the same check fails."""
    from PIL import Image

    from tests.conftest import texture, with_defect

    rng = np.random.default_rng(4)
    samples = []
    for i in range(15):
        image, label = texture(rng), int(i >= 3)
        if label:
            image, _ = with_defect(image, 14, 14)
        Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
        samples.append(vadkit.data.Sample(tmp_path / f"{i:02d}.png", label))
    labels = np.array([sample.label for sample in samples])
    assert auroc(labels, musc().predict(samples, progress=False).scores) < 0.9


def test_each_pair_of_images_computed_once_gives_the_all_pairs_distances():
    from vadkit.models.musc import nearest_distances

    patches = F.normalize(torch.randn(7, 5, 3, dtype=torch.float64), dim=-1)  # float64: exact zeros on the diagonal
    expected = torch.cdist(patches.reshape(35, 3), patches.reshape(35, 3)).view(7, 5, 7, 5).amin(dim=3)
    for chunk in (1, 3, 7):
        torch.testing.assert_close(nearest_distances(patches, chunk), expected, rtol=1e-6, atol=1e-6)
