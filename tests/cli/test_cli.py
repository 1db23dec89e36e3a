"""The vadkit command line, run as a user runs it (subprocess for start-up behaviour, CliRunner otherwise)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vadkit.cli import main, parse_assignments

METRIC_KEYS = {"image_auroc", "image_aupr", "image_f1_max", "pixel_auroc", "pixel_aupr", "pixel_f1_max",
               "pixel_aupro"}


def test_help_does_not_import_torch():
    code = "import sys; from vadkit.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_parse_assignments_types_values():
    parsed = parse_assignments(("coreset_ratio=0.01", "layers=features.6,features.13", "crop_size=None",
                                "seed=3", "covariance=diagonal", "flag=true"), "--param")
    assert parsed == {"coreset_ratio": 0.01, "layers": ["features.6", "features.13"], "crop_size": None,
                      "seed": 3, "covariance": "diagonal", "flag": True}


@pytest.fixture(scope="module")
def trained(mvtec_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--layout", "mvtec", "--model",
                                       "patchcore", "--backbone", "mobilenet_v2", "--param", "image_size=64",
                                       "--param", "coreset_ratio=0.5", "--out", str(out), "--overlays", "3",
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_model_metrics_and_overlays(trained):
    out, output = trained
    assert (out / "model.vad").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["n_train"] == 12 and metrics["n_test"] == 8
    assert metrics["model"] == "patchcore" and metrics["backbone"] == "mobilenet_v2"
    assert metrics["params"]["coreset_ratio"] == 0.5 and metrics["fit_seconds"] > 0
    assert metrics["image_auroc"] == 1.0  # the generated defects are obvious
    assert len(list((out / "overlays").glob("*.png"))) == 3
    assert "image_auroc" in output


def test_metrics_omit_pixel_keys_without_masks(mvtec_folder, tmp_path):
    import shutil

    data = tmp_path / "nomasks"
    shutil.copytree(mvtec_folder, data)
    shutil.rmtree(data / "ground_truth")
    result = CliRunner().invoke(main, ["train", "--data", str(data), "--model", "padim", "--param",
                                       "image_size=64", "--out", str(tmp_path / "run"), "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "image_auroc" in metrics and not any(key.startswith("pixel_") for key in metrics)


def test_test_command_reproduces_training_metrics(trained, mvtec_folder, tmp_path):
    out, _ = trained
    result = CliRunner().invoke(main, ["test", "--model", str(out / "model.vad"), "--data", str(mvtec_folder),
                                       "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    tested = json.loads((tmp_path / "metrics.json").read_text())
    trained_metrics = json.loads((out / "metrics.json").read_text())
    for key in METRIC_KEYS:
        assert tested[key] == pytest.approx(trained_metrics[key])


def test_predict_writes_one_line_per_image_with_absolute_paths(trained, mvtec_folder, tmp_path):
    out, _ = trained
    image = mvtec_folder / "test" / "spot" / "000.png"
    folder = mvtec_folder / "test" / "good"
    result = CliRunner().invoke(main, ["predict", "--model", str(out / "model.vad"), str(image), str(folder),
                                       "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 1 + 4
    assert lines[0]["path"] == str(image.resolve()) and Path(lines[0]["overlay"]).is_file()
    assert lines[0]["label"] == 1 and all(line["label"] == 0 for line in lines[1:])
    assert lines[0]["score"] > max(line["score"] for line in lines[1:])


def test_unknown_parameter_is_one_clear_line_and_exit_code_2(mvtec_folder, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--param", "coreset=0.1",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown parameter(s) for patchcore: coreset" in result.output
    assert "Traceback" not in result.output


def test_bad_inputs_give_clear_errors(trained, tmp_path):
    out, _ = trained
    missing = CliRunner().invoke(main, ["predict", "--model", str(out / "model.vad"), str(tmp_path / "nope.png"),
                                        "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "input not found" in missing.output
    broken = tmp_path / "broken.png"
    broken.write_text("not an image")
    bad = CliRunner().invoke(main, ["predict", "--model", str(out / "model.vad"), str(broken), "--out",
                                    str(tmp_path)])
    assert bad.exit_code == 2 and "broken.png" in bad.output
    no_model = CliRunner().invoke(main, ["test", "--model", str(tmp_path / "x.vad"), "--data", str(tmp_path)])
    assert no_model.exit_code == 2 and "model file not found" in no_model.output
    bad_pair = CliRunner().invoke(main, ["train", "--data", str(tmp_path), "--param", "oops", "--out", str(tmp_path)])
    assert bad_pair.exit_code == 2 and "NAME=VALUE" in bad_pair.output
