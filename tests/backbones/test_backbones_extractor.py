"""FeatureExtractor: layer names, channels, strides, truncation, frozen eval mode, registry consistency."""

import pytest
import torch

from vadkit.backbones import BackboneSpec, FeatureExtractor, create_extractor, get_spec, list_backbones

H, W = 64, 96  # non-square, so a swapped H/W would show


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "vadkit_home"))


@pytest.fixture(scope="module")
def wrn() -> FeatureExtractor:
    return create_extractor("wide_resnet50_2", layers=["layer1", "layer2", "layer3", "layer4"], pretrained=False)


def test_list_backbones():
    assert list_backbones() == ["mobilenet_v2", "resnet18", "wide_resnet50_2", "efficientnet_lite0",
                                "efficientnet_lite1", "efficientnet_lite2", "dinov2_vits14_imgfocus", "dinov2_vits14"]


CNNS = [name for name in list_backbones() if not get_spec(name).vit]


@pytest.mark.parametrize("name", [n for n in list_backbones() if n != "wide_resnet50_2"])
def test_every_layer_has_declared_channels_and_stride(name):
    spec = get_spec(name)
    height, width = (56, 98) if spec.vit else (H, W)  # a ViT's sides are whole patches (14 px)
    extractor = create_extractor(name, layers=list(spec.layers), pretrained=False)
    with torch.inference_mode():
        feats = extractor(torch.randn(2, 3, height, width))
    assert list(feats) == list(spec.layers)
    for layer, f in feats.items():
        assert f.shape == (2, spec.channels[layer], height // spec.layers[layer], width // spec.layers[layer]), layer


def test_wide_resnet_layers(wrn):
    with torch.inference_mode():
        feats = wrn(torch.randn(1, 3, H, W))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        "layer1": (1, 256, 16, 24), "layer2": (1, 512, 8, 12), "layer3": (1, 1024, 4, 6), "layer4": (1, 2048, 2, 3),
    }


@pytest.mark.parametrize("name", CNNS)
def test_default_layers_are_the_stride_8_and_16_stage_ends(name):
    spec = get_spec(name)
    assert [spec.layers[layer] for layer in spec.default_layers] == [8, 16]
    # and each is the deepest layer exposed at its stride
    for layer in spec.default_layers:
        same = [n for n, s in spec.layers.items() if s == spec.layers[layer]]
        assert same[-1] == layer


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_lite_table_matches_timm_feature_info(name):
    """The hand-written table in registry.py agrees with timm's own feature_info."""
    builtin, generic = get_spec(name), get_spec("timm:" + get_spec(name).arch)
    assert builtin.layers == generic.layers and builtin.channels == generic.channels
    assert builtin.default_layers == generic.default_layers
    assert builtin.mean == generic.mean == (0.5, 0.5, 0.5)
    assert generic.packages == builtin.packages  # timm:tf_efficientnet_lite0 also finds the offline weights


def test_mobilenet_stage_ends_by_running_the_network():
    """features.6 is the last block at stride 8 and features.13 the last at stride 16."""
    model = get_spec("mobilenet_v2").build()
    x, strides = torch.randn(1, 3, 64, 64), []
    with torch.inference_mode():
        for block in model.features:
            x = block(x)
            strides.append(64 // x.shape[-1])
    assert max(i for i, s in enumerate(strides) if s == 8) == 6
    assert max(i for i, s in enumerate(strides) if s == 16) == 13


def test_attributes_and_requested_order():
    ex = create_extractor("resnet18", layers=["layer3", "layer1"], pretrained=False)
    assert ex.name == "resnet18" and ex.layers == ("layer3", "layer1")
    assert ex.channels == {"layer3": 256, "layer1": 64} and ex.strides == {"layer3": 16, "layer1": 4}
    assert ex.mean == (0.485, 0.456, 0.406) and ex.std == (0.229, 0.224, 0.225)
    assert "random" in ex.weights_source
    with torch.inference_mode():
        assert list(ex(torch.randn(1, 3, H, W))) == ["layer3", "layer1"]


def test_unknown_layer_lists_valid_names():
    with pytest.raises(ValueError, match=r"layer5.*valid: layer1 \(stride 4\), layer2"):
        create_extractor("resnet18", layers=["layer5"], pretrained=False)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="mobilenet_v2.*timm:<model name>"):
        get_spec("no_such_net_xyz")


def test_bad_input_shape():
    ex = create_extractor("resnet18", pretrained=False)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        ex(torch.randn(3, H, W))


def module_names(extractor: FeatureExtractor) -> set[str]:
    return {n for n, _ in extractor.body.named_modules()}


def test_truncated_after_deepest_requested_layer_torchvision():
    ex = create_extractor("wide_resnet50_2", layers=["layer2"], pretrained=False)
    names = module_names(ex)
    assert "layer2" in names and not {"layer3", "layer4", "fc"} & names
    n_params = sum(p.numel() for p in ex.parameters())
    assert n_params < 0.1 * sum(p.numel() for p in get_spec("wide_resnet50_2").build(meta=True).parameters())

    mnv2 = create_extractor("mobilenet_v2", layers=["features.6"], pretrained=False)
    assert "features.6" in module_names(mnv2) and "features.7" not in module_names(mnv2)


def param_names(extractor: FeatureExtractor) -> set[str]:
    return {n.removeprefix("model.") for n, _ in extractor.body.named_parameters()}


def test_truncated_after_deepest_requested_layer_timm():
    ex = create_extractor("efficientnet_lite0", layers=["blocks.2"], pretrained=False)
    names = param_names(ex)
    assert any(n.startswith("blocks.2.") for n in names)
    assert not any(n.startswith(("blocks.3", "blocks.6", "conv_head", "bn2", "classifier")) for n in names)


def test_truncated_network_never_runs_deeper_modules():
    """Hook every module of the full network; only those up to layer2 may fire."""
    ex = create_extractor("resnet18", layers=["layer1", "layer2"], pretrained=False)
    fired = []
    for name, module in ex.body.named_modules():
        if name:
            module.register_forward_hook(lambda *_, name=name: fired.append(name))
    with torch.inference_mode():
        ex(torch.randn(1, 3, H, W))
    assert any(n.startswith("layer2.") for n in fired)  # fx keeps leaf modules: layer2.0.conv1, ...
    assert not any(n.startswith(("layer3", "layer4", "fc", "avgpool")) for n in fired)


def test_frozen_and_always_eval():
    ex = create_extractor("resnet18", pretrained=False)
    parent = torch.nn.Sequential(ex)
    parent.train()
    assert not ex.training and not any(m.training for m in ex.modules())
    assert not any(p.requires_grad for p in ex.parameters())
    x = torch.randn(2, 3, H, W)
    a = ex(x)["layer2"]
    assert not a.requires_grad and a.grad_fn is None  # no autograd graph
    b = ex(x)["layer2"]
    torch.testing.assert_close(a, b)  # BatchNorm used running stats, did not update them
    with torch.inference_mode():
        torch.testing.assert_close(ex(x)["layer2"], a)


def test_channels_last_gives_same_features():
    x = torch.randn(2, 3, H, W)
    ex = create_extractor("mobilenet_v2", channels_last=False, pretrained=False)
    with torch.inference_mode():
        a = ex(x)
        ex.to_channels_last()
        b = ex(x)
    assert ex.memory_format == torch.channels_last
    assert b["features.13"].is_contiguous(memory_format=torch.channels_last)
    for layer in a:
        torch.testing.assert_close(a[layer], b[layer], rtol=1e-4, atol=1e-5)


def test_spec_is_frozen():
    spec = get_spec("resnet18")
    assert isinstance(spec, BackboneSpec)
    with pytest.raises(AttributeError):
        spec.name = "x"


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_folded_batchnorm_gives_the_published_networks_features(name):
    """Folding a frozen BatchNorm into its convolution changes nothing but float rounding."""
    from vadkit.backbones.extractor import fold_batchnorm

    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in create_extractor(name, pretrained=False).body.modules())
    published = create_extractor(name, pretrained=False, fuse_batchnorm=False)
    generator = torch.Generator().manual_seed(1)
    norms = [m for m in published.body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms
    for norm in norms:  # statistics far from a fresh BatchNorm's identity map, so the folding has work to do
        for tensor, low, high in ((norm.running_mean, -1.0, 1.0), (norm.running_var, 0.2, 3.0),
                                  (norm.weight, 0.5, 2.0), (norm.bias, -0.5, 0.5)):
            tensor.data.copy_(low + (high - low) * torch.rand(tensor.shape, generator=generator))
    twin = create_extractor(name, pretrained=False, fuse_batchnorm=False)
    twin.body.load_state_dict(published.body.state_dict())  # the same (random) weights, then folded
    twin.body = fold_batchnorm(twin.body)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = published(x), twin(x)
    for layer in expected:
        scale = float(expected[layer].abs().max())
        torch.testing.assert_close(got[layer], expected[layer], rtol=1e-4, atol=1e-5 * scale)
