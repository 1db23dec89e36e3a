"""The model contract shared by every method: registry, parameters, calibration, persistence, errors."""

import zipfile

import numpy as np
import pytest
import torch

import vadkit
from vadkit.data import ImageDataset, load_split
from vadkit.errors import ModelFileError, VadkitError
from vadkit.models import NotFittedError, list_models
from vadkit.models.persistence import FORMAT_VERSION


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


@pytest.fixture(scope="module", params=["patchcore", "padim"])
def fitted(request, split):
    model = vadkit.create_model(request.param, image_size=64)
    return model.fit(split.train, progress=False)


def test_registry_lists_methods_and_rejects_unknown_names_and_parameters():
    assert {"patchcore", "padim"} <= set(list_models())
    with pytest.raises(VadkitError, match="Did you mean 'patchcore'"):
        vadkit.create_model("patchcor")
    with pytest.raises(VadkitError, match="coreset_ratio") as error:
        vadkit.create_model("patchcore", coreset_ration=0.1)
    assert "Valid parameters" in str(error.value)


def test_get_params_round_trips_the_constructor(fitted):
    params = fitted.get_params()
    assert params["image_size"] == 64
    assert type(fitted)(**params).get_params() == params


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


def test_save_and_load_give_identical_predictions_and_threshold(fitted, split, tmp_path):
    fitted.calibrate_from_scores(np.array([0.1, 0.9]), np.array([0, 1]))
    path = fitted.save(tmp_path / "m.vad")
    loaded = vadkit.load(path)
    assert type(loaded) is type(fitted) and loaded.get_params() == fitted.get_params()
    assert loaded.threshold == fitted.threshold and loaded.threshold_rule == fitted.threshold_rule
    a = fitted.predict(split.test, progress=False)
    b = loaded.predict(split.test, progress=False)
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
    np.testing.assert_allclose(a.maps, b.maps, rtol=1e-5, atol=1e-6)


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


def test_save_before_fit_is_a_clear_error(tmp_path):
    with pytest.raises(NotFittedError):
        vadkit.create_model("padim").save(tmp_path / "x.vad")


@pytest.mark.parametrize("params, message", [
    ({"layers": ["features.99"]}, "unknown layer"),
    ({"backbone": "no_such_net"}, "no_such_net"),
    ({"coreset_ratio": 2}, "coreset_ratio"),
    ({"num_neighbours": 0}, "num_neighbours"),
    ({"image_size": "abc"}, "image_size"),
    ({"sigma": -1}, "sigma"),
])
def test_bad_parameter_values_fail_at_construction_with_a_parameter_error(params, message):
    from vadkit.errors import ParameterError

    with pytest.raises(ParameterError, match=message):
        vadkit.create_model("patchcore", **params)


def test_a_single_layer_name_is_one_layer_and_resolved_layers_are_saved(split, tmp_path):
    model = vadkit.create_model("patchcore", layers="features.6", image_size=64)
    assert model.layers == ["features.6"]
    default = vadkit.create_model("padim", image_size=64).fit(split.train, progress=False)
    assert default.get_params()["layers"] == ["features.3", "features.6", "features.13"]
    assert vadkit.load(default.save(tmp_path / "p.vad")).layers == default.layers


def test_batch_size_must_be_positive(fitted):
    from vadkit.errors import ParameterError

    with pytest.raises(ParameterError, match="batch_size"):
        fitted.predict(torch.zeros(2, 3, 64, 64), batch_size=0)
