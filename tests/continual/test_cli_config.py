"""``vadkit continual run`` end to end on a 2-task tiny stream, and the config's errors."""

import json
import math

import pytest
import yaml
from click.testing import CliRunner

from vadkit.bench.config import ConfigError
from vadkit.cli import main
from vadkit.continual.config import parse_config


def write(tmp_path, raw, name="stream.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def stream_config(two_tasks, tmp_path, **overrides):
    # relative task paths: resolved against the config's folder, as in a bench config
    raw = {"name": "two-products",
           "tasks": [{"name": "stripes", "path": str(two_tasks[0])},
                     {"name": "turned", "path": str(two_tasks[1]), "layout": "mvtec"}],
           "method": "patchcore", "method_params": {"image_size": 64, "coreset_ratio": 0.25},
           "strategy": "task_banks", "params": {"budget_patches": 200, "selection": "min_score"}}
    raw.update(overrides)
    return raw


def test_cli_writes_results_json_markdown_and_heatmap(two_tasks, tmp_path):
    config = write(tmp_path, stream_config(two_tasks, tmp_path))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["continual", "run", str(config), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "task_banks over 2 tasks" in result.output
    payload = json.loads((out / "results.json").read_text())
    assert payload["tasks"] == ["stripes", "turned"] and payload["metric"] == ["image_auroc", "pixel_auroc", "pixel_aupro"]
    for metric in payload["metric"]:
        matrix = payload["R"][metric]
        assert matrix[0][1] is None and all(0.5 < value <= 1.0 for value in (matrix[0][0], matrix[1][0], matrix[1][1]))
        assert math.isclose(payload["bwt"][metric], matrix[1][0] - matrix[0][0], abs_tol=1e-12)
    assert payload["task_id_accuracy"]["min_score"]["matrix"] == [[1.0, None], [1.0, 1.0]]
    assert len(payload["memory_bytes"]) == 2 and len(payload["train_seconds"]) == 2
    assert payload["strategy_params"] == {"budget_patches": 200, "selection": "min_score", "batch_size": 8}
    assert "| turned |" in (out / "results.md").read_text()
    assert (out / "r_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_runs_a_trained_method_with_replay(two_tasks, tmp_path):
    raw = stream_config(two_tasks, tmp_path, method="stfpm",
                        method_params={"image_size": 64, "max_steps": 2, "batch_size": 4},
                        strategy="compressed_replay", params={"budget_bytes": 20000}, metrics=["image_auroc"])
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["continual", "run", str(write(tmp_path, raw)), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    payload = json.loads((out / "results.json").read_text())
    assert payload["metric"] == ["image_auroc"] and payload["task_id_accuracy"] == {}
    assert payload["memory_detail"]["buffer"][1] <= 20000


@pytest.mark.parametrize("change, message", [
    ({"strategy": "ewc"}, "`strategy:` must be one of finetune, joint, replay, compressed_replay, task_banks"),
    ({"params": {"budget": 5}}, "params: unknown parameter(s) for strategy task_banks: budget; valid: budget_patches"),
    ({"method": "patchcorr"}, "`method:` must be one of"),
    ({"method_params": {"coreset": 0.1}}, "method_params: unknown parameter(s) for patchcore: coreset"),
    ({"method": "stfpm", "method_params": {}}, "set `method: patchcore`"),
    ({"strategy": "adapters", "params": {}}, "strategy adapters trains AdapTS adapters per task on one frozen "
                                             "backbone: set `method: adapts` (got patchcore)"),
    ({"tasks": []}, "`tasks:` must be a non-empty list"),
    ({"tasks": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}, "'a' appears twice"),
    ({"tasks": [{"name": "a"}]}, "tasks[0]: `path:` is required"),
    ({"metrics": ["image_aurok"]}, "unknown metric(s) image_aurok"),
    ({"budget": 3}, "unknown key(s) budget"),
    ({"device": "gpu"}, "`device:` must be cpu, cuda, cuda:N or auto"),
])
def test_bad_configs_name_the_file_and_the_fix(two_tasks, tmp_path, change, message):
    path = tmp_path / "bad.yaml"
    with pytest.raises(ConfigError) as error:
        parse_config(stream_config(two_tasks, tmp_path, **change), path)
    assert str(path) in str(error.value) and message in str(error.value)


def test_cli_bad_config_is_one_line_and_exit_code_2(tmp_path):
    missing = CliRunner().invoke(main, ["continual", "run", str(tmp_path / "none.yaml"), "--out", str(tmp_path)])
    assert missing.exit_code == 2 and "continual config not found" in missing.output
    config = write(tmp_path, {"tasks": [{"name": "a", "path": "a"}], "method": "patchcore", "strategy": "replay",
                              "params": {"budget_images": 4, "budgte": 1}})
    result = CliRunner().invoke(main, ["continual", "run", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "budgte" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_missing_task_folder_fails_before_any_training_and_names_the_task(two_tasks, tmp_path):
    raw = stream_config(two_tasks, tmp_path)
    raw["tasks"][1]["path"] = "nowhere"
    result = CliRunner().invoke(main, ["continual", "run", str(write(tmp_path, raw)), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "task 'turned'" in result.output and "nowhere" in result.output
    assert not (tmp_path / "out").exists()


def test_relative_task_paths_resolve_against_the_config_folder(tmp_path):
    loaded = parse_config({"tasks": [{"name": "a", "path": "data/a"}], "method": "patchcore", "strategy": "joint"},
                          tmp_path / "sub" / "stream.yaml")
    assert loaded.tasks[0].path == str((tmp_path / "sub" / "data" / "a").resolve())
    assert loaded.metrics == ("image_auroc", "pixel_auroc", "pixel_aupro") and loaded.params == {}
