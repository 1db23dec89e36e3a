"""Any timm model: spec from feature_info, the default-pair rule, NCHW outputs, truncation."""

import pytest
import torch

from vadkit.backbones import create_extractor, get_spec
from vadkit.backbones.extractor import timm_feature_net
from vadkit.backbones.registry import default_pair

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "vadkit_home"))


def test_spec_from_feature_info():
    spec = get_spec("timm:convnext_atto")
    assert spec.library == "timm" and spec.arch == "convnext_atto"
    assert spec.layers == {"stages.0": 4, "stages.1": 8, "stages.2": 16, "stages.3": 32}
    assert spec.channels == {"stages.0": 40, "stages.1": 80, "stages.2": 160, "stages.3": 320}
    assert spec.default_layers == ("stages.1", "stages.2")
    assert get_spec("convnext_atto") == spec  # bare name that timm knows


def test_convnext_extractor_shapes_and_truncation():
    ex = create_extractor("timm:convnext_atto", pretrained=False)
    with torch.inference_mode():
        feats = ex(torch.randn(2, 3, 64, 96))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {"stages.1": (2, 80, 8, 12), "stages.2": (2, 160, 4, 6)}
    names = {n.removeprefix("model.") for n, _ in ex.body.named_parameters()}
    assert any(n.startswith("stages.2.") for n in names)
    assert not any(n.startswith(("stages.3", "head")) for n in names)


def test_vit_blocks_come_back_as_maps():
    ex = create_extractor("timm:vit_tiny_patch16_224", pretrained=False)
    assert ex.layers == ("blocks.5", "blocks.8")  # uniform stride: half and three quarters of the depth
    with torch.inference_mode():
        feats = ex(torch.randn(1, 3, 224, 224))
    assert feats["blocks.8"].shape == (1, 192, 14, 14)
    assert sum(p.numel() for p in ex.parameters()) < sum(
        p.numel() for p in get_spec("timm:vit_tiny_patch16_224").build(meta=True).parameters()
    ) * 0.8  # blocks 9-11 and the head are gone


def test_feature_list_fallback_truncates():
    model = timm.create_model("resnet18", pretrained=False).eval()
    net = timm_feature_net(model, ["layer2", "layer1"], prefer_getter=False)
    with torch.inference_mode():
        out = net(torch.randn(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 64, 16, 16), (1, 128, 8, 8)]
    assert not any(n.startswith(("layer3", "layer4", "fc")) for n, _ in net.named_modules())


@pytest.mark.parametrize(
    "layers, expected",
    [
        ({"a": 2, "b": 4, "c": 8, "d": 8, "e": 16, "f": 32}, ("d", "e")),  # last of each stride
        ({"s0": 16, "s1": 32, "s2": 64}, ("s0", "s1")),  # no stride 8 (EfficientViT-M): closest, then deeper
        ({f"blocks.{i}": 14 for i in range(12)}, ("blocks.5", "blocks.8")),  # ViT-S/14
        ({"x": 2, "y": 4}, ("x", "y")),  # shallow net: the two levels
        ({"only": 8}, ("only",)),
    ],
)
def test_default_pair_rule(layers, expected):
    assert default_pair(layers) == expected


def test_pretrained_cfg_mean_std():
    assert get_spec("timm:tf_efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    assert get_spec("timm:resnet18").mean == (0.485, 0.456, 0.406)
