"""AnomalyDINO (vadkit.models.anomalydino) on tiny generated images with the offline DINOv2 ViT-S/14."""

import numpy as np
import pytest
import torch

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.metrics import auroc
from vadkit.models.anomalydino import ROTATIONS

from tests.conftest import assert_detects_planted_defects, assert_reloads_identically

SMALL = {"image_size": 56}


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def anomalydino(**params):
    return vadkit.create_model("anomalydino", **{**SMALL, **params})


def test_it_finds_planted_defects_from_every_training_image_and_reloads_identically(split, tmp_path):
    model = anomalydino().fit(split.train, progress=False)
    assert model.reference_images_ == 12 and model.rotated_          # 12 <= 16 references: rotated
    assert model.memory_bank_.shape == (12 * len(ROTATIONS) * 16, 384)  # 4 x 4 patches of 14 px each
    torch.testing.assert_close(model.memory_bank_.norm(dim=1), torch.ones(len(model.memory_bank_)))
    test, prediction = assert_detects_planted_defects(model, split)
    assert_reloads_identically(model, test, prediction, tmp_path / "adino.vad")


def test_negative_control_a_memory_holding_the_defects_no_longer_finds_them(split):
    """The same check with the defective test images in the memory: their red squares now have near neighbours,
    and the detection the positive test asserts is gone."""
    defective = [sample for sample in split.test if sample.label == 1]
    model = anomalydino().fit(split.train + defective, progress=False)
    test = ImageDataset(split.test, model.transform)
    assert auroc(test.labels, model.predict(test, progress=False).scores) < 0.9


def test_one_shot_works_and_shots_are_drawn_by_the_seed(split):
    one = anomalydino(shots=1).fit(split.train, progress=False)
    assert one.reference_images_ == 1 and one.memory_bank_.shape[0] == len(ROTATIONS) * 16
    assert np.isfinite(one.predict(split.test, progress=False).scores).all()
    banks = [anomalydino(shots=2, seed=seed, rotations=False).fit(split.train, progress=False).memory_bank_
             for seed in (0, 0, 1)]
    torch.testing.assert_close(banks[0], banks[1], rtol=0, atol=0)
    assert not torch.equal(banks[0], banks[2])


def test_rotations_auto_stop_above_sixteen_references(split):
    many = split.train * 2  # 24 references
    assert not anomalydino().fit(many, progress=False).rotated_
    assert anomalydino(rotations=True).fit(many, progress=False).rotated_
    assert not anomalydino(rotations=False, shots=1).fit(many, progress=False).rotated_


def test_the_image_score_is_the_mean_of_the_top_percent_of_patch_distances(split):
    model = anomalydino(top_percent=25).fit(split.train, progress=False)
    images = torch.stack([ImageDataset(split.test, model.transform)[i]["image"] for i in range(4)])
    graph = model.inference_module()
    with torch.inference_mode():
        distances = graph.patch_distances(images).flatten(1)           # (4, 16)
        expected = distances.sort(dim=1, descending=True).values[:, :4].mean(dim=1)
        # brute force: cosine distance to every memory row, the nearest kept
        features = torch.nn.functional.normalize(model.embed(images).flatten(2).transpose(1, 2), dim=-1)
        brute = (1 - features @ model.memory_bank_.T).amin(dim=2).clamp_min(0)
    torch.testing.assert_close(distances, brute, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.predict(images).scores, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_foreground_masking_zeroes_the_background_patches(split):
    model = anomalydino(foreground_mask=True, mask_threshold=1e9).fit(split.train, progress=False)
    prediction = model.predict(split.test[:2], progress=False)  # nothing passes the threshold: all background
    assert np.all(prediction.scores == 0) and np.all(prediction.maps == 0)


@pytest.mark.parametrize("params, message", [
    ({"shots": 0}, "shots must be an integer >= 1"),
    ({"rotations": "always"}, "rotations must be"),
    ({"top_percent": 0}, "top_percent"),
    ({"image_size": 64}, "patch size 14"),
])
def test_bad_parameters_fail_at_construction(params, message):
    with pytest.raises(vadkit.errors.ParameterError, match=message):
        vadkit.create_model("anomalydino", **params)
