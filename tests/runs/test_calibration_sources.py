"""Where `vadkit train` calibrates its thresholds: a validation part, never the test labels (unless asked)."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

import vadkit
from vadkit import runs
from vadkit.data import ImageDataset, load_split, with_validation
from vadkit.errors import ParameterError

PARAMS = {"image_size": 64, "coreset_ratio": 0.5}


def train(data, out, **options):
    return runs.train(data=data, layout="mvtec", model_name="patchcore", params=PARAMS, out=out, progress=False,
                      overlays=2, **options)


def test_the_threshold_comes_from_held_out_normals_and_never_from_the_test_labels(mvtec_folder, tmp_path):
    metrics = train(mvtec_folder, tmp_path / "a", val_ratio=0.25)
    assert metrics["threshold_source"] == "validation_normals" and metrics["n_val"] == 3
    assert "held-out training normals" in metrics["threshold_rule"]
    # independent check: the 99% quantile of the validation images' scores under the saved model
    model = vadkit.load(tmp_path / "a" / "model.vad")
    val = with_validation(load_split("mvtec", mvtec_folder), val_ratio=0.25).val
    scores = model.predict(val, progress=False).scores
    assert metrics["threshold"] == pytest.approx(float(np.quantile(scores, 0.99)))
    # the same run with other test labels (the defect folder removed) chooses the same thresholds
    other = tmp_path / "other"
    shutil.copytree(mvtec_folder, other)
    shutil.rmtree(other / "test" / "spot")
    shutil.rmtree(other / "ground_truth")
    again = train(other, tmp_path / "b", val_ratio=0.25)
    assert again["threshold"] == metrics["threshold"] and again["pixel_threshold"] == metrics["pixel_threshold"]
    assert "image_f1_max" in metrics  # F1 at the test set's own best threshold: kept, as an oracle figure


def test_a_validation_folder_with_defects_gives_f1_optimal_thresholds(mvtec_folder, tmp_path):
    from vadkit.metrics import f1_max_threshold

    val = tmp_path / "val"
    shutil.copytree(mvtec_folder / "test" / "good", val / "good")
    shutil.copytree(mvtec_folder / "test" / "spot", val / "spot")
    shutil.copytree(mvtec_folder / "ground_truth", val / "ground_truth")
    metrics = train(mvtec_folder, tmp_path / "run", val=val)
    assert metrics["threshold_source"] == "validation" and metrics["n_val"] == 8 and metrics["n_train"] == 12
    model = vadkit.load(tmp_path / "run" / "model.vad")
    dataset = ImageDataset(vadkit.data.validation_folder(val), model.transform)
    prediction = model.predict(dataset, progress=False)
    assert metrics["threshold"] == pytest.approx(f1_max_threshold(dataset.labels, prediction.scores)[1])
    pixel = f1_max_threshold(dataset.masks_array().ravel(), prediction.maps.ravel())[1]
    assert metrics["pixel_threshold"] == pytest.approx(pixel)
    assert "pixel F1-optimal" in metrics["pixel_threshold_rule"]


def test_calibrating_on_the_test_split_is_asked_for_and_named(mvtec_folder, tmp_path):
    metrics = train(mvtec_folder, tmp_path / "run", calibrate_on_test=True)
    assert metrics["threshold_source"] == "test" and metrics["n_val"] == 0 and metrics["n_train"] == 12
    assert "the test split" in metrics["threshold_rule"]
    assert vadkit.load(tmp_path / "run" / "model.vad").threshold_source == "test"
    with pytest.raises(ParameterError, match="without val or val_ratio"):
        train(mvtec_folder, tmp_path / "x", calibrate_on_test=True, val_ratio=0.2)


def test_overlays_draw_defect_pixels_only_in_images_judged_anomalous(mvtec_folder, tmp_path):
    """The image threshold used to be applied to the maps: images judged normal still showed red pixels."""
    train(mvtec_folder, tmp_path / "run", val_ratio=0.25)
    model = vadkit.load(tmp_path / "run" / "model.vad")
    model.threshold = 1e9  # every image judged normal...
    model.pixel_threshold = -1e9  # ...although every pixel is above the pixel threshold
    model.save(tmp_path / "run" / "normal.vad")
    target = runs.predict(model_path=tmp_path / "run" / "normal.vad", inputs=[mvtec_folder / "test" / "spot"],
                          out=tmp_path / "pred", progress=False)
    for line in map(json.loads, target.read_text().splitlines()):
        panels = np.asarray(Image.open(line["overlay"]))
        width = panels.shape[1] // 3
        assert line["label"] == 0
        np.testing.assert_array_equal(panels[20:, 2 * width:], panels[20:, :width])  # below the caption
    model.threshold = -1e9  # now judged anomalous: the predicted-defect panel is tinted
    model.save(tmp_path / "run" / "anomalous.vad")
    target = runs.predict(model_path=tmp_path / "run" / "anomalous.vad", inputs=[mvtec_folder / "test" / "spot"],
                          out=tmp_path / "pred2", progress=False)
    line = json.loads(target.read_text().splitlines()[0])
    panels = np.asarray(Image.open(line["overlay"]))
    width = panels.shape[1] // 3
    assert line["label"] == 1 and not np.array_equal(panels[20:, 2 * width:], panels[20:, :width])
