"""SADSeM: per-part banks and mask anomalies, the Otsu fallback and the Mask R-CNN segmenter end to end."""

import numpy as np
import pytest
import torch

import vadkit
from vadkit.data import load_split
from vadkit.errors import ParameterError
from vadkit.metrics.image import auroc
from vadkit.models.sadsem import SADSeM, mask_anomaly
from tests.conftest import make_part_annotations


@pytest.fixture(scope="module")
def split(mvtec_folder):
    return load_split("mvtec", mvtec_folder)


def test_the_mask_anomaly_is_the_scaled_difference_to_the_nearest_stored_mask_minus_the_normal_level():
    stored = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    mask = torch.tensor([[[0.0, 1.0], [1.0, 1.0]]])       # nearest: stored[0] (L1 0.25, against 0.25... tie -> 0)
    expected = (mask - stored[0]).abs() * 0.25 - 0.05
    torch.testing.assert_close(mask_anomaly(mask, stored, torch.tensor(0.05)), expected.clamp_min(0))
    assert SADSeM._mask_scale(stored) == pytest.approx(0.5)      # each against the other: |1| * 0.5 at most


def test_a_part_too_small_for_the_coarse_grid_gets_the_fine_layer():
    model = SADSeM(min_patches=4)
    rows8, rows16 = torch.randn(2 * 64, 8), torch.randn(2 * 16, 8)
    owners8 = torch.zeros(2 * 64, dtype=torch.long)
    owners8[:10] = 1                                       # part 1: 5 patches per image at stride 8
    owners16 = torch.zeros(2 * 16, dtype=torch.long)
    owners16[:2] = 1                                       # 1 per image at stride 16: too few
    layer = model._assign_layer(1, {"features.6": rows8, "features.13": rows16},
                                {"features.6": owners8, "features.13": owners16}, n_images=2)
    assert layer == "features.6"


def test_the_otsu_fallback_finds_the_planted_defects_and_an_untrained_control_does_not(split):
    model = SADSeM(image_size=64).fit(split.train, progress=False)
    labels = np.array([s.label for s in split.test])
    assert model.part_names_ == ["dark", "bright"] and len(model.banks_) == 2
    assert auroc(labels, model.predict(split.test, progress=False).scores) >= 0.9
    control = SADSeM(image_size=64).fit([s for s in split.test if s.label == 1], progress=False)
    assert auroc(labels, control.predict(split.test, progress=False).scores) < 0.9


def test_a_mask_rcnn_sadsem_fits_predicts_reloads_and_says_why_it_does_not_export(split, tmp_path):
    parts = make_part_annotations(tmp_path / "parts")
    model = vadkit.create_model("sadsem", image_size=64, segmenter="maskrcnn", parts=str(parts), segmenter_steps=2)
    model.fit(split.train, progress=False)
    assert model.part_names_ == ["background", "body", "cap"] and model.segmenter_info_["steps"] == 2
    prediction = model.predict(split.test, progress=False)
    assert prediction.maps.shape == (len(split.test), 64, 64) and np.isfinite(prediction.scores).all()
    loaded = vadkit.load(model.save(tmp_path / "sadsem.vad"))
    np.testing.assert_allclose(loaded.predict(split.test, progress=False).scores, prediction.scores, rtol=1e-5)
    from vadkit.edge import export_model

    with pytest.raises(ParameterError, match="Mask R-CNN"):
        export_model(model, tmp_path / "bundle")


def test_mask_rcnn_without_annotations_is_refused_at_construction():
    with pytest.raises(ParameterError, match="parts="):
        vadkit.create_model("sadsem", segmenter="maskrcnn")
