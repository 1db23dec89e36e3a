"""`vadkit train --model anomalydino|dinomaly|tiny_dinomaly|musc` end to end on tiny generated images: metrics,
the saved model predicting exactly what the run measured, and MuSc's zero-shot, transductive run."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

import vadkit
from vadkit.cli import main
from vadkit.data import ImageDataset, load_split

SMALL = {"anomalydino": ["--param", "shots=4"],
         "dinomaly": ["--param", "max_steps=3", "--param", "batch_size=4", "--param", "decoder_depth=2"],
         "tiny_dinomaly": ["--param", "max_steps=3", "--param", "batch_size=4"]}


def train(data, out, method, *extra):
    return CliRunner().invoke(main, ["train", "--data", str(data), "--layout", "mvtec", "--model", method,
                                     "--param", "image_size=56", "--out", str(out), "--overlays", "1", "--quiet",
                                     "--threads", "1", *SMALL.get(method, []), *extra])


@pytest.mark.parametrize("method", ["anomalydino", "dinomaly", "tiny_dinomaly"])
def test_train_saves_a_model_that_predicts_what_the_run_measured(method, mvtec_folder, tmp_path):
    result = train(mvtec_folder, tmp_path / "run", method, "--val-ratio", "0.25")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == method and metrics["n_train"] == 9 and not metrics["transductive"]
    record = np.load(tmp_path / "run" / "predictions.npz")
    model = vadkit.load(tmp_path / "run" / "model.vad")
    test = ImageDataset(load_split("mvtec", mvtec_folder).test, model.transform)
    np.testing.assert_allclose(model.predict(test, progress=False).scores, record["scores"], rtol=1e-5)
    assert model.threshold_source == "validation_normals"


def test_musc_scores_the_test_split_without_training_images_and_says_so(mvtec_folder, tmp_path):
    with pytest.warns(UserWarning, match="transductive.*saved uncalibrated"):
        result = train(mvtec_folder, tmp_path / "run", "musc")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["zero_shot"] and metrics["transductive"] and metrics["n_train"] == 0 and metrics["n_val"] == 0
    assert metrics["threshold"] is None and metrics["image_auroc"] >= 0.9
    assert CliRunner().invoke(main, ["report", str(tmp_path / "run")]).exit_code == 0
    assert "scored against each other" in (tmp_path / "run" / "report.html").read_text()
    predicted = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "run" / "model.vad"),
                                          str(mvtec_folder / "test"), "--out", str(tmp_path / "p"), "--quiet"])
    assert predicted.exit_code == 0, predicted.output
    lines = [json.loads(line) for line in (tmp_path / "p" / "predictions.jsonl").read_text().splitlines()]
    record = np.load(tmp_path / "run" / "predictions.npz")
    # the same 8 test images scored together again: the same scores, in the same (sorted) order
    by_file = dict(zip(map(str, record["paths"]), record["scores"]))
    assert [line["score"] for line in lines] == pytest.approx([by_file[line["file"]] for line in lines], rel=1e-5)
