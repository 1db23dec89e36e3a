"""Benchmark configs: the grid they expand to, and one clear error per kind of mistake."""

from pathlib import Path

import pytest

from vadkit.bench.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def config(**overrides):
    raw = {"name": "study",
           "datasets": [{"name": "weld", "path": "data/weld"},
                        {"name": "tiles", "path": "/abs/tiles", "layout": "mtd"}],
           "methods": [{"name": "patchcore", "params": {"coreset_ratio": 0.1}},
                       {"name": "padim", "label": "padim_diag", "params": {"covariance": "diagonal"},
                        "backbones": ["mobilenet_v2"]}],
           "backbones": ["mobilenet_v2", "efficientnet_lite0"], "seeds": [0, 1]}
    raw.update(overrides)
    return raw


def test_grid_order_ids_and_per_method_backbones(tmp_path):
    loaded = parse_config(config(), tmp_path / "study.yaml")
    ids = [cell.id for cell in loaded.cells()]
    # datasets x methods x backbones x seeds, in config order; padim keeps its own backbone list
    assert ids == [
        "weld-patchcore-mobilenet_v2-s0", "weld-patchcore-mobilenet_v2-s1",
        "weld-patchcore-efficientnet_lite0-s0", "weld-patchcore-efficientnet_lite0-s1",
        "weld-padim_diag-mobilenet_v2-s0", "weld-padim_diag-mobilenet_v2-s1",
        "tiles-patchcore-mobilenet_v2-s0", "tiles-patchcore-mobilenet_v2-s1",
        "tiles-patchcore-efficientnet_lite0-s0", "tiles-patchcore-efficientnet_lite0-s1",
        "tiles-padim_diag-mobilenet_v2-s0", "tiles-padim_diag-mobilenet_v2-s1"]
    cell = loaded.cells()[3]
    assert cell.params == {"coreset_ratio": 0.1, "seed": 1, "backbone": "efficientnet_lite0"}
    assert cell.dataset.layout == "mvtec" and cell.dataset.options == {}
    assert loaded.profile is None and loaded.threads is None


def test_a_methods_own_seeds_replace_the_global_ones(tmp_path):
    raw = config(datasets=[{"name": "weld", "path": "data/weld"}], backbones=["mobilenet_v2"])
    raw["methods"][1]["seeds"] = [3, 4, 5]
    ids = [cell.id for cell in parse_config(raw, tmp_path / "study.yaml").cells()]
    assert ids == ["weld-patchcore-mobilenet_v2-s0", "weld-patchcore-mobilenet_v2-s1",
                   "weld-padim_diag-mobilenet_v2-s3", "weld-padim_diag-mobilenet_v2-s4",
                   "weld-padim_diag-mobilenet_v2-s5"]


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    loaded = parse_config(config(), tmp_path / "configs" / "study.yaml")
    assert loaded.datasets[0].path == str((tmp_path / "configs" / "data" / "weld").resolve())
    assert loaded.datasets[1].path == str(Path("/abs/tiles").resolve())


def test_without_backbones_each_method_keeps_its_default(tmp_path):
    raw = config()
    del raw["backbones"]
    cells = parse_config(raw, tmp_path / "c.yaml").cells()
    assert cells[0].id == "weld-patchcore-default-s0" and "backbone" not in cells[0].params


def test_profile_settings(tmp_path):
    assert parse_config(config(profile=True), tmp_path / "c.yaml").profile.repeats == 20
    spec = parse_config(config(profile={"batch_size": 4, "repeats": 5}), tmp_path / "c.yaml").profile
    assert (spec.batch_size, spec.repeats, spec.warmup) == (4, 5, 3)


def test_fingerprint_follows_what_is_computed_not_threads(tmp_path):
    base = parse_config(config(), tmp_path / "c.yaml").cells()[0]
    threaded = parse_config(config(threads=1), tmp_path / "c.yaml").cells()[0]
    raw = config()
    raw["methods"][0]["params"]["coreset_ratio"] = 0.2
    changed = parse_config(raw, tmp_path / "c.yaml").cells()[0]
    assert base.id == threaded.id == changed.id
    assert base.fingerprint() == threaded.fingerprint() != changed.fingerprint()


@pytest.mark.parametrize("change, message", [
    ({"colour": 1}, "unknown key(s) colour"),
    ({"name": ""}, "`name:` is required"),
    ({"datasets": []}, "`datasets:` must be a non-empty list"),
    ({"datasets": [{"name": "weld"}]}, "`path:` is required for layout 'mvtec'"),
    ({"datasets": [{"name": "weld", "path": "x", "layout": "voc"}]}, "unknown layout 'voc'"),
    ({"datasets": [{"name": "a b", "path": "x"}]}, "it names folders"),
    ({"datasets": [{"name": "w", "path": "x"}, {"name": "w", "path": "y"}]}, "'w' appears twice"),
    ({"methods": [{"name": "patchcorr"}]}, "unknown method 'patchcorr'"),
    ({"methods": [{"name": "padim", "params": {"coreset_ratio": 0.1}}]}, "unknown parameter(s) for padim"),
    ({"methods": [{"name": "padim", "params": {"backbone": "resnet18"}}]}, "config's `backbones:`"),
    ({"methods": [{"name": "padim"}, {"name": "padim"}]}, "give each entry of one method its own `label:`"),
    ({"seeds": [0, "one"]}, "`seeds:` must be a list of integers"),
    ({"seeds": 3}, "`seeds:` must be a list of integers, got 3"),
    ({"methods": [{"name": "padim", "seeds": [1, 1]}]}, "methods[0]: `seeds:`: 1 appears twice"),
    ({"threads": 0}, "`threads:` must be an integer >= 1"),
    ({"profile": {"repeats": 0}}, "repeats must be an integer >= 1"),
    ({"profile": {"rounds": 3}}, "unknown key(s) rounds"),
    ({"backbones": []}, "non-empty list of backbone names"),
])
def test_mistakes_are_named(tmp_path, change, message):
    with pytest.raises(ConfigError) as error:
        parse_config(config(**change), tmp_path / "study.yaml")
    assert message in str(error.value)
    assert "study.yaml" in str(error.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(listed)


@pytest.mark.parametrize("name", ["edge.yaml", "sem_methods.yaml"])
def test_example_configs_load_and_point_at_the_shared_datasets(name):
    loaded = load_config(REPO / "benchmarks" / "configs" / name)
    assert loaded.cells() and loaded.profile is not None
    for dataset in loaded.datasets:
        assert Path(dataset.path).parts[-3:-1] in (("datasets", "battery_weld"), ("datasets", "mvtec_bottle"))
    if name == "sem_methods.yaml":  # the method study runs every method in the library, and one on tiles
        from vadkit.models.registry import list_models

        assert {m.name for m in loaded.methods} | {"tiled"} == set(list_models())
        assert any(m.tile for m in loaded.methods)


def test_the_readme_schema_example_is_a_valid_config(tmp_path):
    import re

    import yaml

    block = re.search(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    loaded = parse_config(yaml.safe_load(block), tmp_path / "study.yaml")
    assert [d.layout for d in loaded.datasets] == ["mvtec", "mtd", "elpv"] and loaded.datasets[2].path is None
    # paste runs on its own backbone list only: 3 datasets x (2 + 2 + 1) backbone cells
    assert len(loaded.cells()) == 15 and loaded.threads == 2 and loaded.profile is not None


def test_a_tiled_entry_builds_the_wrapper_around_the_method(tmp_path):
    raw = config(methods=[{"name": "patchcore", "label": "pc_tiles", "params": {"image_size": 512, "coreset_ratio": 0.1},
                           "tile": {"size": 256, "overlap": 0.5, "ensemble": True}}], backbones=["mobilenet_v2"],
                 seeds=[3])
    cell = parse_config(raw, tmp_path / "study.yaml").cells()[0]
    assert cell.model_name == "tiled"
    assert cell.params == {"method": "patchcore", "tile": 256, "overlap": 0.5, "ensemble": True, "image_size": 512,
                           "method_params": {"coreset_ratio": 0.1, "seed": 3, "backbone": "mobilenet_v2"}}
    bad = config(methods=[{"name": "patchcore", "params": {"image_size": 128}, "tile": {"size": 256}}])
    with pytest.raises(ConfigError, match="tile.*larger than image_size"):
        parse_config(bad, tmp_path / "study.yaml")
    with pytest.raises(ConfigError, match="size"):
        parse_config(config(methods=[{"name": "patchcore", "tile": {"overlap": 0.1}}]), tmp_path / "study.yaml")
