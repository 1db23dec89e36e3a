"""Dinomaly (vadkit.models.dinomaly) on tiny generated images with the offline DINOv2 ViT-S/14: its pieces against
their formulas, training, the frozen-feature cache, multi-class training, a planted-defect check with its negative
control."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.metrics import auroc
from vadkit.models.dinomaly import LinearAttention, default_taps, global_cosine_loss, hard_mined
from vadkit.models.stable_adamw import StableAdamW, warm_cosine

from tests.conftest import assert_detects_planted_defects, assert_reloads_identically, make_mvtec_folder

SMALL = {"image_size": 56, "batch_size": 4, "decoder_depth": 4}


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def dinomaly(**params):
    return vadkit.create_model("dinomaly", **{**SMALL, **params})


def test_linear_attention_is_the_kernel_formula():
    torch.manual_seed(0)
    attention = LinearAttention(8, heads=2)
    x = torch.randn(2, 5, 8)
    q, k, v = attention.qkv(x).view(2, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
    phi_q, phi_k = F.elu(q) + 1, F.elu(k) + 1
    out = torch.empty(2, 2, 5, 4)
    for s in range(5):  # out_s = sum_t (phi(q_s) . phi(k_t)) v_t / sum_t phi(q_s) . phi(k_t)
        weights = (phi_q[:, :, s:s + 1] * phi_k).sum(-1)                      # (B, h, N)
        out[:, :, s] = (weights[..., None] * v).sum(2) / weights.sum(-1, keepdim=True)
    expected = attention.proj(out.transpose(1, 2).reshape(2, 5, 8))
    torch.testing.assert_close(attention(x), expected, rtol=1e-5, atol=1e-6)


def test_hard_mining_keeps_the_loss_and_scales_the_easy_points_gradient():
    torch.manual_seed(0)
    encoded = torch.randn(2, 10, 6)
    decoded = (encoded + 0.3 * torch.randn(2, 10, 6)).requires_grad_()
    mined = hard_mined(decoded, encoded, keep=0.75, factor=0.1)
    torch.testing.assert_close(mined, decoded)                                  # the same value forward
    mined.sum().backward()
    distance = 1 - F.cosine_similarity(encoded, decoded.detach(), dim=-1)
    hardest = distance.flatten().topk(5).indices                                # 25% of the 20 points keep 1
    expected = torch.full((20,), 0.1)
    expected[hardest] = 1.0
    torch.testing.assert_close(decoded.grad[..., 0].flatten(), expected)
    # the loss itself: 1 - cosine of whole flattened maps, averaged over images and groups
    enc, dec = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    expected_loss = np.mean([1 - F.cosine_similarity(enc[i, g].flatten(), dec[i, g].flatten(), dim=0).item()
                             for i in range(3) for g in range(2)])
    assert float(global_cosine_loss(enc, dec, keep=0.9, factor=0.1)) == pytest.approx(expected_loss, rel=1e-5)


def test_stable_adamw_is_adamw_while_gradients_are_expected_and_slows_down_on_a_spike():
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(5)), None
    b = torch.nn.Parameter(a.detach().clone())
    ours = StableAdamW([a], lr=0.01, weight_decay=0.1, clip_threshold=1e9)
    reference = torch.optim.AdamW([b], lr=0.01, weight_decay=0.1)
    for step in range(5):
        gradient = torch.randn(5)
        a.grad, b.grad = gradient.clone(), gradient.clone()
        ours.step()
        reference.step()
    torch.testing.assert_close(a, b)
    steps = []
    for threshold in (1.0, 1e9):  # a spike after a calm step: the update is cut by the gradient's RMS ratio
        p = torch.nn.Parameter(torch.zeros(5))
        optimizer = StableAdamW([p], lr=1.0, weight_decay=0.0, clip_threshold=threshold)
        p.grad = torch.full((5,), 1e-3)
        optimizer.step()
        before = p.detach().clone()
        p.grad = torch.full((5,), 1e3)
        optimizer.step()
        steps.append(float((p.detach() - before).abs().max()))
    # RMS = g / sqrt(v_hat) = 1e3 / sqrt((1e-3 * 1e6 + 0.999 * 1e-6) / (1 - 0.999 ** 2)) = 1.414
    assert steps[0] == pytest.approx(steps[1] / 1.41386, rel=1e-3)
    factor = warm_cosine(10, 110, 0.1)
    assert factor(0) == 0 and factor(5) == 0.5 and factor(10) == 1.0 and factor(110) == pytest.approx(0.1)
    assert warm_cosine(10, None, 0.1)(500) == 1.0


def test_default_taps_are_the_papers():
    assert default_taps(12) == [f"blocks.{i}" for i in range(2, 10)]
    assert default_taps(24) == [f"blocks.{i}" for i in range(4, 19, 2)]


def relative_gap(model, test) -> float:
    """How far above the normal images' mean score the defective images' mean score lies, relative to it."""
    scores = model.predict(test, progress=False).scores
    normal, defective = scores[test.labels == 0].mean(), scores[test.labels == 1].mean()
    return float((defective - normal) / normal)


def test_training_lowers_the_loss_finds_planted_defects_and_reloads_identically(split, tmp_path):
    model = dinomaly(max_steps=40).fit(split.train, progress=False)
    losses = [entry["loss"] for entry in model.history_ if "loss" in entry]
    assert losses[-1] < 0.7 * losses[0]
    test, prediction = assert_detects_planted_defects(model, split)
    assert relative_gap(model, test) > 0.5  # reconstructed normals score near 0, the defects far above
    assert_reloads_identically(model, test, prediction, tmp_path / "dinomaly.vad")


def test_negative_control_an_untrained_decoder_does_not_separate_them(split):
    """The gap check above on the model before training. A random decoder's output is nearly one vector, so the
    map is 1 - cos(features, that vector): saturated red squares still rank above normal stripes (AUROC stays
    high, which is why the AUROC floor alone is no test), but every image scores about 1, normal or not."""
    model = dinomaly(max_steps=1, lr=1e-12, final_lr=1e-12).fit(split.train, progress=False)
    assert relative_gap(model, ImageDataset(split.test, model.transform)) < 0.2


def test_the_frozen_feature_cache_trains_exactly_as_the_encoder_would(split, monkeypatch):
    from vadkit.models.dinomaly import Dinomaly

    cached = dinomaly(max_steps=3, dropout=0.0).fit(split.train, progress=False)
    monkeypatch.setattr(Dinomaly, "caches_frozen_features", False)
    direct = dinomaly(max_steps=3, dropout=0.0).fit(split.train, progress=False)
    for (name, a), b in zip(cached.decoder_.state_dict().items(), direct.decoder_.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


def test_one_model_learns_two_classes(tmp_path):
    """The multi-class setting: one model on the union of two products' normal images; each product's defects
    are found. The second product is the first one's texture in another colour scheme."""
    first = load_split("mvtec", make_mvtec_folder(tmp_path / "a", seed=1))
    second_root = make_mvtec_folder(tmp_path / "b", seed=2)
    from PIL import Image

    for path in second_root.rglob("*.png"):
        if "ground_truth" not in path.parts:
            pixels = np.asarray(Image.open(path))
            Image.fromarray(np.ascontiguousarray(255 - pixels[..., ::-1])).save(path)
    second = load_split("mvtec", second_root)
    model = dinomaly(max_steps=40).fit(first.train + second.train, progress=False)
    for product in (first, second):
        test = ImageDataset(product.test, model.transform)
        assert auroc(test.labels, model.predict(test, progress=False).scores) >= 0.9


@pytest.mark.parametrize("params, message", [
    ({"backbone": "mobilenet_v2", "image_size": 64}, "not a vision transformer"),
    ({"decoder_depth": 6, "groups": 4}, "multiple of groups"),
    ({"dropout": 1.0}, "dropout"),
    ({"warmup_steps": -1}, "warmup_steps"),
])
def test_bad_parameters_fail_at_construction(params, message):
    with pytest.raises(vadkit.errors.ParameterError, match=message):
        vadkit.create_model("dinomaly", **{"image_size": 56, **params})
