"""`vadkit train --model stfpm|paste|rd4ad` end to end, as a user runs it: train, predict with the saved model,
resume an interrupted training with a raised budget (tiny generated images, a few steps)."""

import json

import pytest
import torch
from click.testing import CliRunner

import vadkit
from vadkit import runs
from vadkit.cli import main

TINY = ["--param", "image_size=64", "--param", "batch_size=4", "--val-ratio", "0.25", "--overlays", "1", "--quiet"]


def _train(data, out, method, steps, *extra):
    return CliRunner().invoke(main, ["train", "--data", str(data), "--layout", "mvtec", "--model", method,
                                     "--param", f"max_steps={steps}", "--out", str(out), *TINY, *extra])


@pytest.mark.parametrize("method", ["stfpm", "paste", "rd4ad"])
def test_train_then_predict_with_the_saved_model(method, mvtec_folder, tmp_path):
    result = _train(mvtec_folder, tmp_path / "run", method, 2)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["model"] == method and metrics["params"]["max_steps"] == 2
    assert metrics["n_train"] == 9 and metrics["n_val"] == 3 and 0.0 <= metrics["image_auroc"] <= 1.0
    assert (tmp_path / "run" / "training.ckpt").is_file()
    model = vadkit.load(tmp_path / "run" / "model.vad")
    assert model.history_[-1]["step"] == 2  # the loop's record travels with the model file

    result = CliRunner().invoke(main, ["predict", "--model", str(tmp_path / "run" / "model.vad"),
                                       str(mvtec_folder / "test"), "--out", str(tmp_path / "pred")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "pred" / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 8 and all(isinstance(line["score"], float) for line in lines)


def test_resume_with_a_raised_budget_equals_one_uninterrupted_training(mvtec_folder, tmp_path):
    assert _train(mvtec_folder, tmp_path / "interrupted", "paste", 2).exit_code == 0
    result = _train(mvtec_folder, tmp_path / "interrupted", "paste", 4, "--resume")
    assert result.exit_code == 0, result.output
    assert _train(mvtec_folder, tmp_path / "straight", "paste", 4).exit_code == 0

    resumed = vadkit.load(tmp_path / "interrupted" / "model.vad")
    straight = vadkit.load(tmp_path / "straight" / "model.vad")
    assert resumed.history_[-1]["step"] == straight.history_[-1]["step"] == 4
    for (name, a), (_, b) in zip(resumed.student_.state_dict().items(), straight.student_.state_dict().items()):
        assert torch.equal(a, b), name


def test_resume_without_a_checkpoint_trains_from_the_start_and_says_so(mvtec_folder, tmp_path):
    with pytest.warns(UserWarning, match="no checkpoint .*training.ckpt yet, so training starts from the beginning"):
        metrics = runs.train(data=mvtec_folder, layout="mvtec", model_name="stfpm", out=tmp_path / "fresh",
                             params={"image_size": 64, "batch_size": 4, "max_steps": 1}, val_ratio=0.25,
                             overlays=0, resume=True, progress=False)
    assert metrics["n_train"] == 9


def test_resume_on_a_one_pass_method_says_there_is_nothing_to_resume(mvtec_folder, tmp_path):
    with pytest.warns(UserWarning, match="padim fits in one pass"):
        runs.train(data=mvtec_folder, layout="mvtec", model_name="padim", out=tmp_path / "run",
                   params={"image_size": 64}, val_ratio=0.25, overlays=0, resume=True, progress=False)
