"""`vadkit eval`, `compare` and `report` on a real training run of the tiny generated dataset."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from click.testing import CliRunner

from vadkit.cli import main


@pytest.fixture(scope="module")
def run(mvtec_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluated_run")
    result = CliRunner().invoke(main, ["train", "--data", str(mvtec_folder), "--param", "image_size=64",
                                       "--param", "coreset_ratio=0.5", "--out", str(out), "--overlays", "2",
                                       "--val-ratio", "0.25", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


def test_train_saves_raw_predictions_and_the_new_metric_keys(run):
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "predictions.npz").is_file() and (run / "per_image.csv").is_file()
    assert {"pixel_aupro_005", "per_defect", "intervals", "operating_points", "image_recall"} <= metrics.keys()
    assert metrics["per_defect"]["spot"]["image_auroc"] == metrics["image_auroc"]  # one defect type
    # 4 normal test images of 64x64 cannot measure an FPR of 1e-5: AUPIMO is skipped with the reason
    assert "aupimo_mean" in metrics or "aupimo_mean" in metrics["skipped_metrics"]


def test_eval_recomputes_the_same_metrics_without_the_model(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "model.vad").unlink()  # eval must not need it
    before = json.loads((copy / "metrics.json").read_text())
    result = CliRunner().invoke(main, ["eval", str(copy)])
    assert result.exit_code == 0, result.output
    after = json.loads((copy / "metrics.json").read_text())
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "pixel_aupro_005", "image_recall", "fit_seconds"):
        assert after[key] == before[key], key
    assert after["intervals"] == before["intervals"] and after["per_defect"] == before["per_defect"]


def test_eval_of_a_folder_without_predictions_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path)])
    assert result.exit_code == 2 and "no raw predictions" in result.output


def test_compare_a_run_with_itself_shows_zero_differences(run):
    result = CliRunner().invoke(main, ["compare", str(run), str(run), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.strip().startswith("│ image_auroc")
               or "image_auroc" in line)
    assert re.search(r"[+-]0\.0000", row)


def test_report_writes_a_self_contained_html_file(run):
    result = CliRunner().invoke(main, ["report", str(run), "--resamples", "200"])
    assert result.exit_code == 0, result.output
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r"""(src|href)=["'](https?:)?//""", html)
    assert html.count('class="card') >= 8 or html.count("data-score=") == 8  # every test image fits the gallery
