"""The vadkit command line, run as a user runs it (subprocess for start-up behaviour, CliRunner otherwise)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vadkit import runs
from vadkit.cli import main, parse_assignments

METRIC_KEYS = {"image_auroc", "image_aupr", "image_f1_max", "pixel_auroc", "pixel_aupr", "pixel_f1_max",
               "pixel_aupro"}


def test_help_does_not_import_torch():
    code = "import sys; from vadkit.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_train_help_lists_every_registered_method():
    from vadkit.models import list_models

    help_text = CliRunner().invoke(main, ["train", "--help"], terminal_width=400).output
    listed = help_text.split("Method:")[1].split(".")[0]
    assert {name.strip() for name in listed.replace("\n", " ").split(",")} == set(list_models())


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
                                       "--val-ratio", "0.25", "--quiet"])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_writes_model_metrics_and_overlays(trained):
    out, output = trained
    assert (out / "model.vad").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["n_train"] == 9 and metrics["n_val"] == 3 and metrics["n_test"] == 8
    assert metrics["threshold_source"] == "validation_normals" and metrics["pixel_threshold"] is not None
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
    assert "image_auroc" in metrics
    assert not any(key.startswith("pixel_") for key in metrics if key not in runs.train_test.RUN_FACT_KEYS)


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
    threshold = json.loads((out / "metrics.json").read_text())["threshold"]  # 99% of 3 held-out normals' scores
    assert lines[0]["label"] == 1 and all(line["label"] == int(line["score"] >= threshold) for line in lines)
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


@pytest.mark.parametrize("extra, message", [
    (["--param", "coreset_ratio=2"], "coreset_ratio must be in (0, 1]"),
    (["--backbone", "nosuch"], "nosuch"),
    (["--param", "layers=features.99"], "unknown layer"),
])
def test_bad_parameter_values_are_one_line_and_exit_code_2(mvtec_folder, tmp_path, extra, message):
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--out", str(tmp_path), *extra])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_batch_size_zero_is_rejected_by_the_cli(mvtec_folder, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--out", str(tmp_path),
                                       "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output


def _folder_dataset(root, with_defects: bool):
    import shutil

    from tests.conftest import make_mvtec_folder

    source = make_mvtec_folder(root / "src", n_train=6, n_good=0, n_bad=3)
    shutil.copytree(source / "train" / "good", root / "data" / "good")
    if with_defects:
        shutil.copytree(source / "test" / "spot", root / "data" / "spot")
        shutil.copytree(source / "ground_truth", root / "data" / "ground_truth")
    return root / "data"


def test_folder_layout_finds_a_ground_truth_mask_folder(tmp_path):
    from vadkit.data import load_split

    split = load_split("folder", _folder_dataset(tmp_path, with_defects=True), test_ratio=0.5)
    anomalies = [s for s in split.test if s.label == 1]
    assert {s.defect_type for s in split.test} == {"good", "spot"}  # ground_truth is not a defect type
    assert len(anomalies) == 3 and all(s.mask_path is not None for s in anomalies)


def test_calibrating_on_a_test_split_without_normal_images_saves_an_uncalibrated_model(tmp_path):
    data = _folder_dataset(tmp_path, with_defects=True)
    with pytest.warns(UserWarning, match="no normal images"):
        metrics = runs.train(data=data, layout="folder", model_name="patchcore", out=tmp_path / "run",
                             params={"image_size": 64}, layout_options={"test_ratio": 0}, progress=False,
                             calibrate_on_test=True)
    assert metrics["threshold"] is None and metrics["n_train"] == 6 and "image_auroc" not in metrics
    assert (tmp_path / "run" / "model.vad").is_file()


def test_too_few_training_images_for_a_default_validation_part_say_so(tmp_path):
    data = _folder_dataset(tmp_path, with_defects=True)
    with pytest.warns(UserWarning, match="no validation images .* saved uncalibrated"):
        metrics = runs.train(data=data, layout="folder", model_name="padim", out=tmp_path / "run",
                             params={"image_size": 64}, layout_options={"test_ratio": 0}, progress=False)
    assert metrics["threshold"] is None and metrics["threshold_source"] is None and metrics["n_val"] == 0


def test_train_with_an_empty_test_split_still_saves_the_model(tmp_path):
    data = _folder_dataset(tmp_path, with_defects=False)
    with pytest.warns(UserWarning, match="test split is empty"):
        metrics = runs.train(data=data, layout="folder", model_name="padim", out=tmp_path / "run",
                             params={"image_size": 64}, layout_options={"test_ratio": 0}, progress=False)
    assert metrics["n_test"] == 0 and (tmp_path / "run" / "model.vad").is_file()


def test_rerun_into_the_same_folder_replaces_overlays(trained, mvtec_folder, tmp_path):
    import shutil

    out, _ = trained
    shutil.copytree(out, tmp_path / "run")
    (tmp_path / "run" / "overlays" / "old_run_leftover.png").write_bytes(b"x")
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--param", "image_size=64",
                                       "--out", str(tmp_path / "run"), "--overlays", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "run" / "overlays").glob("*.png"))) == 2


def test_train_runs_a_method_on_tiles_and_a_rectangular_fit_input(mvtec_folder, tmp_path):
    """--tile wraps the method (image_size is then the whole image's); --param image_size=HxW resize=fit keeps
    the aspect ratio; both reload as they were trained."""
    import vadkit

    out = tmp_path / "tiles"
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--model", "padim", "--param",
                                       "image_size=64x96", "--param", "resize=fit", "--tile", "32",
                                       "--overlap", "0.5", "--tile-ensemble", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "padim on 32 tiles (ensemble)" in result.output
    model = vadkit.load(out / "model.vad")
    assert model.name == "tiled" and model.method == "padim" and model.ensemble and model.overlap == 0.5
    assert model.transform.output_size == (64, 96) and model.transform.resize == "fit"
    assert len(model.models_) == len(model.positions) == 3 * 5   # stride 16 over 64 x 96 with 32-px tiles
    usage = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--tile-ensemble", "--out", str(out)])
    assert usage.exit_code != 0 and "--tile-ensemble needs --tile" in usage.output


def test_train_runs_sadsem_and_names_its_annotation_folder_when_it_is_missing(mvtec_folder, tmp_path):
    import vadkit

    out = tmp_path / "sadsem"
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--model", "sadsem", "--param",
                                       "image_size=64", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert vadkit.load(out / "model.vad").part_names_ == ["dark", "bright"]
    missing = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--model", "sadsem", "--param",
                                        "segmenter=maskrcnn", "--param", f"parts={tmp_path / 'none'}",
                                        "--param", "image_size=64", "--out", str(tmp_path / "x")])
    assert missing.exit_code != 0 and "does not exist" in missing.output and "parts.txt" in missing.output
