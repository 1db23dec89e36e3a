"""STFPM, PaSTe and RD4AD on tiny inputs: their losses and maps against the formulas, and short real fits."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vadkit
from vadkit.data import load_split
from vadkit.errors import ParameterError
from vadkit.models.rd4ad import cosine_loss, cosine_map
from vadkit.models.stfpm import product_map, pyramid_loss
from tests.conftest import assert_detects_planted_defects


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def pyramid(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(2, 5, 8, 8, generator=generator), "b": torch.randn(2, 7, 4, 4, generator=generator)}


def test_stfpm_loss_and_map_follow_the_paper():
    teacher, student = pyramid(0), pyramid(1)
    expected_loss, expected_map = 0.0, torch.ones(2, 16, 16)
    for layer in teacher:
        t, s = teacher[layer].numpy(), student[layer].numpy()
        t, s = t / np.linalg.norm(t, axis=1, keepdims=True), s / np.linalg.norm(s, axis=1, keepdims=True)
        distance = ((t - s) ** 2).sum(1)                         # (B, h, w), per position
        expected_loss += distance.mean()                         # mean over batch and positions, layers summed
        layer_map = torch.from_numpy(0.5 * distance)[:, None]
        expected_map *= F.interpolate(layer_map, size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    assert float(pyramid_loss(teacher, student)) == pytest.approx(expected_loss, rel=1e-5)
    torch.testing.assert_close(product_map(teacher, student, (16, 16)), expected_map, rtol=1e-5, atol=1e-6)
    assert float(pyramid_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_rd4ad_loss_and_map_follow_the_authors_code():
    teacher, student = list(pyramid(2).values()), list(pyramid(3).values())
    expected = 0.0
    for t, s in zip((t.numpy() for t in teacher), (s.numpy() for s in student)):
        flat_t, flat_s = t.reshape(len(t), -1), s.reshape(len(s), -1)  # each image's whole map as one vector
        cosine = (flat_t * flat_s).sum(1) / np.linalg.norm(flat_t, axis=1) / np.linalg.norm(flat_s, axis=1)
        expected += float(np.mean(1 - cosine))
    assert float(cosine_loss(teacher, student)) == pytest.approx(expected, rel=1e-5)
    unsmoothed = cosine_map(teacher, student, (16, 16), sigma=0)
    manual = sum(F.interpolate((1 - F.cosine_similarity(t, s, dim=1))[:, None], size=(16, 16), mode="bilinear",
                               align_corners=True)[:, 0] for t, s in zip(teacher, student))
    torch.testing.assert_close(unsmoothed, manual)
    smoothed = cosine_map(teacher, student, (16, 16), sigma=4)
    assert smoothed.shape == (2, 16, 16) and float(smoothed.std()) < float(unsmoothed.std())
    assert float(cosine_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", ["stfpm", "paste", "rd4ad"])
def test_a_short_fit_learns_normal_and_planted_defects_score_higher(name, split):
    model = vadkit.create_model(name, image_size=64, batch_size=4, max_steps=40)
    model.fit(split.train, val=split.train[:4], progress=False)
    losses = [entry["loss"] for entry in model.history_ if "loss" in entry]
    assert losses[-1] < losses[0]  # the loss goes down
    test, prediction = assert_detects_planted_defects(model, split)


def test_paste_shares_the_early_layers_and_trains_only_the_later_ones():
    paste = vadkit.create_model("paste", image_size=64)
    assert paste.chosen_layers() == ["features.7", "features.10", "features.14"]
    assert paste.shared_layer_() == "features.6"
    paste.build_networks()
    assert paste.student_.names == [f"features.{i}" for i in range(7, 15)]
    stfpm = vadkit.create_model("stfpm", image_size=64, layers=["features.7", "features.10", "features.14"])
    stfpm.build_networks()
    shared = sum(p.numel() for name, p in stfpm.student_.named_parameters()
                 if int(name.split(".")[2]) <= 6)  # body.features.<i>...: the layers PaSTe does not train
    assert sum(p.numel() for p in paste.student_.parameters()) == \
        sum(p.numel() for p in stfpm.student_.parameters()) - shared
    x = torch.randn(2, 3, 64, 64)
    features = paste.extractor(x)
    assert set(features) == {"features.6", "features.7", "features.10", "features.14"}
    assert {k: v.shape for k, v in paste.student_(features["features.6"]).items()} == \
        {k: features[k].shape for k in ("features.7", "features.10", "features.14")}


@pytest.mark.parametrize("params, message", [
    ({"shared_layer": "features.9"}, "must come before every tapped layer"),
    ({"shared_layer": "features.99"}, "unknown shared_layer"),
    ({"layers": ["features.0", "features.3"]}, "first layer of mobilenet_v2"),
])
def test_paste_refuses_a_shared_part_it_cannot_share(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("paste", **params)


def test_paste_needs_a_chain_of_torchvision_layers():
    model = vadkit.create_model("paste", backbone="efficientnet_lite0", image_size=64)
    with pytest.raises(ParameterError, match="torchvision backbone"):
        model.build_networks()


def test_rd4ad_uses_the_authors_blocks_for_wide_resnet_and_basic_blocks_otherwise():
    from vadkit.models.rd4ad import BasicBlock, BottleneckBlock

    mobile = vadkit.create_model("rd4ad", image_size=64)
    mobile.build_networks()
    assert isinstance(mobile.decoder_.stages[0][0], BasicBlock) and len(mobile.decoder_.stages[0]) == 2
    embedding = mobile.bottleneck_([torch.randn(1, 24, 16, 16), torch.randn(1, 32, 8, 8), torch.randn(1, 96, 4, 4)])
    assert embedding.shape == (1, 192, 2, 2)
    assert [t.shape[1:] for t in mobile.decoder_(embedding)] == [(24, 16, 16), (32, 8, 8), (96, 4, 4)]
    wide = vadkit.create_model("rd4ad", backbone="wide_resnet50_2", image_size=64)
    wide.build_networks()
    assert isinstance(wide.decoder_.stages[0][0], BottleneckBlock)
    assert [len(stage) for stage in wide.decoder_.stages] == [3, 4, 6] and len(wide.bottleneck_.embedding) == 3
    with pytest.raises(ParameterError, match="exactly three layers"):
        vadkit.create_model("rd4ad", layers=["features.6", "features.13"])
