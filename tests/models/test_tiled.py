"""The tiling wrapper: any method on tiles, one model or one per position, exact on a single tile."""

import numpy as np
import pytest

import vadkit
from vadkit.data import load_split
from vadkit.errors import ParameterError


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def test_one_tile_the_size_of_the_image_is_the_wrapped_method_itself(split):
    direct = vadkit.create_model("padim", image_size=64).fit(split.train, progress=False)
    tiled = vadkit.create_model("tiled", method="padim", image_size=64, tile=64).fit(split.train, progress=False)
    expected, found = direct.predict(split.test, progress=False), tiled.predict(split.test, progress=False)
    np.testing.assert_allclose(found.maps, expected.maps, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(found.scores, expected.maps.reshape(len(expected), -1).max(axis=1), rtol=1e-5)


def test_the_ensemble_learns_one_model_per_position_and_finds_the_planted_defects(split, tmp_path):
    """A negative control beside it: the same check on a model whose tiles never saw a normal image fails."""
    from vadkit.metrics.image import auroc as image_auroc

    model = vadkit.create_model("tiled", method="padim", image_size=64, tile=32, overlap=0.0, ensemble=True)
    model.fit(split.train, progress=False)
    assert len(model.models_) == 4 and len(model.positions) == 4
    labels = np.array([s.label for s in split.test])
    prediction = model.predict(split.test, progress=False)
    assert image_auroc(labels, prediction.scores) >= 0.9
    loaded = vadkit.load(model.save(tmp_path / "ensemble.vad"))
    np.testing.assert_allclose(loaded.predict(split.test, progress=False).scores, prediction.scores, rtol=1e-6)
    anomalous = [s for s in split.test if s.label == 1]
    control = vadkit.create_model("tiled", method="padim", image_size=64, tile=32, overlap=0.0, ensemble=True)
    control.fit(anomalous, progress=False)
    assert image_auroc(labels, control.predict(split.test, progress=False).scores) < 0.9


@pytest.mark.parametrize("params, message", [
    ({"tile": 128, "image_size": 64}, "larger than image_size"),
    ({"overlap": 1.0}, "overlap"),
    ({"method": "musc"}, "cannot be tiled"),
    ({"method": "tiled"}, "method must be one of"),
    ({"method_params": {"coreset_ration": 0.1}}, "coreset_ration"),
    ({"method_params": {"image_size": 64}}, "tile"),
])
def test_bad_tiling_parameters_fail_at_construction(params, message):
    with pytest.raises(Exception, match=message) as error:
        vadkit.create_model("tiled", **params)
    assert isinstance(error.value, (ParameterError, vadkit.errors.VadkitError))
