"""`vadkit bench run` end to end on tiny generated images: cell folders, tables, resume, failures, executors."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.bench.conftest import TINY, write_config
from vadkit.bench import load_config, plan_bench, run_bench
from vadkit.bench.results import columns, metric_columns
from vadkit.cli import main

CELL_FILES = {"cell.json", "status.json", "log.txt", "model.vad", "metrics.json", "predictions.npz",
              "per_image.csv", "report.html", "profile.json"}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cells_run_and_a_broken_dataset_fails_alone(study):
    _, out, result = study
    rows = {(row["dataset"], row["method"]): row for row in result.rows}
    assert [(r["dataset"], r["method"], r["status"]) for r in result.rows] == [
        ("tiny", "patchcore", "done"), ("tiny", "padim_diag", "done"),
        ("broken", "patchcore", "failed"), ("broken", "padim_diag", "failed")]
    error = rows["broken", "patchcore"]["error"]
    assert error.startswith("DataError:") and "no/such/folder" in error
    assert "Traceback" in (out / "cells" / "broken-patchcore-mobilenet_v2-s0" / "log.txt").read_text()
    # a cell's warnings go to its log (12 training images: too few for a validation part)
    assert "warning: UserWarning: no validation images" in (out / "cells" / "tiny-patchcore-mobilenet_v2-s0" /
                                                            "log.txt").read_text()
    for method in ("patchcore", "padim_diag"):
        folder = out / "cells" / f"tiny-{method}-mobilenet_v2-s0"
        assert CELL_FILES <= {p.name for p in folder.iterdir()}
        metrics = json.loads((folder / "metrics.json").read_text())
        profile = json.loads((folder / "profile.json").read_text())
        row = rows["tiny", method]
        for key in metric_columns():
            assert row[key] == metrics.get(key)  # None where the metric is undefined here
        assert row["fit_s"] == metrics["fit_seconds"] and row["latency_ms_b1"] == profile["latency_ms_b1"] > 0
        assert row["macs"] == profile["macs"] > 0 and row["params"] == profile["params"] > 0
        assert row["peak_rss_mb"] >= row["peak_rss_train_mb"] > 0
        assert row["seconds"] >= row["train_s"] + row["report_s"] + row["profile_s"] > row["fit_s"] > 0
        cell = json.loads((folder / "cell.json").read_text())
        assert cell["params"]["seed"] == 0 and cell["params"]["backbone"] == "mobilenet_v2"
        assert cell["threads"] == 1 and cell["versions"]["torch"]


def test_results_files(study):
    _, out, result = study
    table = read_csv(out / "results.csv")
    assert list(table[0]) == list(columns())
    assert list(columns()[:5]) == ["dataset", "method", "backbone", "seed", "status"]
    assert [r["status"] for r in table] == ["done", "done", "failed", "failed"]
    assert float(table[0]["image_auroc"]) == result.rows[0]["image_auroc"]
    assert table[2]["image_auroc"] == "" and table[2]["error"].startswith("DataError")
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = pq.read_table(out / "results.parquet").to_pylist()
    assert [r["image_auroc"] for r in parquet] == [r["image_auroc"] for r in result.rows]
    assert parquet[2]["error"] == result.rows[2]["error"]
    text = (out / "results.md").read_text()
    assert "## tiny" in text and "## broken" in text and "## Mean over datasets" in text
    assert (out / "index.html").is_file() and json.loads((out / "bench.json").read_text())["name"] == "study"


def test_a_rerun_runs_only_what_is_not_done(study):
    config, out, _ = study
    done = [out / "cells" / f"tiny-{m}-mobilenet_v2-s0" / "status.json" for m in ("patchcore", "padim_diag")]
    stamps = [p.stat().st_mtime_ns for p in done]
    again = run_bench(config, out, progress=False)
    assert again.ran == ["broken-patchcore-mobilenet_v2-s0", "broken-padim_diag-mobilenet_v2-s0"]  # failed: retried
    assert [p.stat().st_mtime_ns for p in done] == stamps
    assert [r["image_auroc"] for r in again.rows] == [r["image_auroc"] for r in study[2].rows]


def test_a_changed_cell_config_runs_again(study, tmp_path):
    config, out, _ = study
    raw = yaml.safe_load(config.read_text())
    raw["methods"][1]["params"]["sigma"] = 2.0  # padim_diag changes, patchcore does not
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(raw))
    states = {cell.id: state for cell, state in plan_bench(changed, out)}
    assert states["tiny-padim_diag-mobilenet_v2-s0"] == "changed"
    assert states["tiny-patchcore-mobilenet_v2-s0"] == "done"


def test_plan_and_run_commands(study, tmp_path):
    config, out, _ = study
    planned = CliRunner().invoke(main, ["bench", "plan", str(config), "--out", str(out)])
    assert planned.exit_code == 0, planned.output
    lines = planned.output.splitlines()
    assert lines[0].split()[:2] == ["done", "tiny-patchcore-mobilenet_v2-s0"]
    assert lines[-1] == "study: 4 cells (2 done, 2 failed)"
    ran = CliRunner().invoke(main, ["bench", "run", str(config), "--out", str(out), "--quiet"])
    assert ran.exit_code == 1  # a failed cell: the command says so in its exit code
    assert "2 done, 2 failed, 0 pending" in ran.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndatasets: [{name: a, path: a}]\nmethods: [{name: patchcorr}]\n")
    refused = CliRunner().invoke(main, ["bench", "run", str(bad), "--out", str(tmp_path / "o")])
    assert refused.exit_code == 2 and "unknown method 'patchcorr'" in refused.output


def test_killed_mid_grid_resumes_without_redoing_finished_cells(tmp_path, mvtec_folder):
    config = write_config(tmp_path, mvtec_folder, seeds=(0, 1, 2, 3), broken=False, profile=False,
                          methods=[{"name": "padim", "params": {**TINY, "covariance": "diagonal"}}])
    out = tmp_path / "out"
    env = {**os.environ, "VADKIT_PROGRESS": "0"}
    process = subprocess.Popen([sys.executable, "-m", "vadkit.cli", "bench", "run", str(config), "--out", str(out)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list(out.glob("cells/*/status.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)  # no clean-up of any kind: as a crash or a lost machine
    process.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/status.json")}
    assert 1 <= len(finished) < 4, "the kill must land mid-grid"
    result = run_bench(config, out, progress=False)
    assert set(result.ran) == {cell.id for cell in load_config(config).cells()} - set(finished)
    assert {name: (out / "cells" / name / "status.json").stat().st_mtime_ns for name in finished} == finished
    assert [r["status"] for r in result.rows] == ["done"] * 4
    # an interrupted cell's half-written folder was cleared and rerun: one run's log, one model
    for name in result.ran:
        assert (out / "cells" / name / "log.txt").read_text().count("] cell ") == 2


def _metric_columns(path: Path) -> list[dict[str, str]]:
    return [{k: row[k] for k in ("dataset", "method", "status", *metric_columns())} for row in read_csv(path)]


def test_process_executor_gives_the_same_metrics(study, tmp_path):
    config, out, _ = study
    result = run_bench(config, tmp_path / "process", executor="process", workers=2, progress=False)
    assert result.count("done") == 2
    assert _metric_columns(tmp_path / "process" / "results.csv") == _metric_columns(out / "results.csv")


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="the Ray executor needs ray: pip install 'vadkit[ray]'")
    # a private instance on loopback, started here: never a remote address
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_same_results_csv(study, tmp_path, local_ray):
    config, out, _ = study
    result = run_bench(config, tmp_path / "ray", executor="ray", progress=False)
    assert result.count("done") == 2 and result.count("failed") == 2
    assert _metric_columns(tmp_path / "ray" / "results.csv") == _metric_columns(out / "results.csv")
    cell = json.loads((tmp_path / "ray" / "cells" / "tiny-patchcore-mobilenet_v2-s0" / "cell.json").read_text())
    assert cell["threads"] == 1
    assert local_ray.is_initialized()  # the caller's Ray is left running


def test_ray_refuses_cells_larger_than_any_node(study, tmp_path, local_ray):
    from vadkit.errors import ParameterError

    with pytest.raises(ParameterError, match="largest Ray node has 2: give --threads 2 or fewer"):
        run_bench(study[0], tmp_path / "ray3", executor="ray", threads=3, progress=False)
