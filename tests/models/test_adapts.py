"""AdapTS: the student is the teacher's own frozen graph with adapters inserted, its losses against the formulas,
its prototype against an independent mean, and a short real fit."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.errors import ParameterError
from vadkit.models.adapts import Adapter, AdaptedBackbone, adapter_key, difference_stack, focal_l1_loss, pooled
from tests.conftest import assert_detects_planted_defects, assert_reloads_identically


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


@pytest.fixture(scope="module")
def fitted(split):
    model = vadkit.create_model("adapts", image_size=64, batch_size=4, max_steps=40)
    return model.fit(split.train, val=split.train[:4], progress=False)


def images(n: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_the_student_shares_the_teachers_modules_and_learns_only_the_adapters(fitted):
    teacher, student = fitted.extractor, fitted.student()
    teacher_ids = {id(p) for p in teacher.parameters()}
    student_params = list(student.parameters())
    shared = [p for p in student_params if id(p) in teacher_ids]
    assert len(shared) == len(teacher_ids)  # the whole backbone, by reference: no copy
    own = {id(p) for p in fitted.adapters_.parameters()}
    assert {id(p) for p in student_params} - teacher_ids == own
    assert all(not p.requires_grad for p in teacher.parameters())
    assert {id(p) for p in fitted.trainable_parameters()} == own | {id(p) for p in fitted.head_.parameters()}
    # MobileNetV2 features.3 / .6 / .13: 24, 32 and 96 channels; per adapter 2 C^2 weights, 2 C biases, 2 C BN
    assert sum(p.numel() for p in fitted.adapters_.parameters()) == sum(2 * c * c + 4 * c for c in (24, 32, 96))


def test_identity_adapters_give_the_teachers_features_and_an_adapter_feeds_the_next_layers(fitted):
    teacher = fitted.extractor
    identity = torch.nn.ModuleDict({adapter_key(layer): Adapter(c) for layer, c in teacher.channels.items()}).eval()
    for adapter in identity.values():
        torch.nn.init.zeros_(adapter.up.weight)  # the residual branch adds exactly zero
    x = images()
    with torch.no_grad():
        expected = teacher(x)
        same = AdaptedBackbone(teacher, identity)(x)
        for layer in teacher.layers:
            torch.testing.assert_close(same[layer], expected[layer])
        first = teacher.layers[0]
        torch.nn.init.normal_(identity[adapter_key(first)].up.weight, std=0.5)
        changed = AdaptedBackbone(teacher, identity)(x)
    torch.testing.assert_close(changed[first], identity[adapter_key(first)](expected[first]))
    for layer in teacher.layers[1:]:  # deeper layers see the adapted feature, not the teacher's
        assert not torch.allclose(changed[layer], expected[layer])


def test_segmentation_terms_follow_the_formulas():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 1, 8, 8, generator=generator)
    masks = (torch.rand(2, 1, 8, 8, generator=generator) > 0.7).float()
    p, m = torch.sigmoid(logits).numpy().astype(np.float64), masks.numpy()
    cross_entropy = -(m * np.log(p) + (1 - m) * np.log(1 - p))
    p_true = p * m + (1 - p) * (1 - m)
    expected = (cross_entropy * (1 - p_true) ** 4).mean() + np.abs(p - m).mean()
    assert float(focal_l1_loss(logits, masks)) == pytest.approx(expected, rel=1e-5)

    teacher = {"a": torch.randn(2, 3, 8, 8, generator=generator), "b": torch.randn(2, 5, 4, 4, generator=generator)}
    student = {"a": torch.randn(2, 3, 8, 8, generator=generator), "b": torch.randn(2, 5, 4, 4, generator=generator)}
    stack = difference_stack(teacher, student)
    assert stack.shape == (2, 8, 8, 8)
    torch.testing.assert_close(stack[:, :3], (F.normalize(teacher["a"], dim=1) - F.normalize(student["a"], dim=1)) ** 2)
    up = F.interpolate((F.normalize(teacher["b"], dim=1) - F.normalize(student["b"], dim=1)) ** 2, size=(8, 8),
                       mode="bilinear", align_corners=False)
    torch.testing.assert_close(stack[:, 3:], up)


def test_a_short_fit_learns_normal_and_planted_defects_score_higher(fitted, split, tmp_path):
    losses = [entry["loss"] for entry in fitted.history_ if "loss" in entry]
    assert losses[-1] < losses[0]
    test, prediction = assert_detects_planted_defects(fitted, split)
    assert_reloads_identically(fitted, test, prediction, tmp_path / "adapts.vad")


def test_the_prototype_is_the_mean_pooled_teacher_feature_of_the_training_images(fitted, split):
    data = ImageDataset(split.train, fitted.transform)
    with torch.no_grad():
        features = [pooled(fitted.extractor(data[i]["image"][None])) for i in range(len(data))]
    expected = torch.cat(features).double().mean(0).float()
    torch.testing.assert_close(fitted.prototype_, expected, rtol=1e-5, atol=1e-6)
    assert fitted.prototype_.shape == (24 + 32 + 96,)


def test_without_the_segmentation_objective_the_head_is_not_trained(split):
    model = vadkit.create_model("adapts", image_size=64, batch_size=4, max_steps=3, segmentation=False)
    model.fit(split.train, progress=False)
    head_before = model.head_.weight.detach().clone()
    model.fit(split.train, progress=False, warm_start=True)  # more steps: adapters move, the head cannot
    torch.testing.assert_close(model.head_.weight, head_before)


@pytest.mark.parametrize("params, message", [
    ({"adapter_width": 0}, "adapter_width"),
    ({"segmentation": "yes"}, "segmentation"),
    ({"min_lr": -1}, "min_lr"),
])
def test_bad_parameters(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("adapts", **params)


def test_a_timm_backbone_is_refused_with_the_fix(split):
    model = vadkit.create_model("adapts", backbone="efficientnet_lite0", image_size=64, max_steps=1, batch_size=4)
    with pytest.raises(ParameterError, match="torchvision backbone"):
        model.fit(split.train, progress=False)
