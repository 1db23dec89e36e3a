"""One small study, run once per test session and shared by the bench tests that only read it."""

from pathlib import Path

import pytest
import yaml

from vadkit.bench import run_bench

TINY = {"image_size": 64}


def write_config(folder: Path, data: Path, *, methods=None, seeds=(0,), broken=True, profile=True, name="study"):
    datasets = [{"name": "tiny", "path": str(data)}]
    if broken:
        datasets.append({"name": "broken", "path": "no/such/folder"})
    raw = {"name": name, "datasets": datasets,
           "methods": methods or [{"name": "patchcore", "params": {**TINY, "coreset_ratio": 0.5}},
                                  {"name": "padim", "label": "padim_diag",
                                   "params": {**TINY, "covariance": "diagonal"}}],
           "backbones": ["mobilenet_v2"], "seeds": list(seeds), "threads": 1}
    if profile:
        raw["profile"] = {"batch_size": 2, "repeats": 2, "warmup": 0}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="session")
def study(tmp_path_factory, mvtec_folder):
    """(config file, out folder, BenchRun): patchcore and diagonal padim on a tiny generated dataset (done) and on
    a dataset path that does not exist (failed), profiled, one thread per cell."""
    root = tmp_path_factory.mktemp("study")
    config = write_config(root, mvtec_folder)
    return config, root / "out", run_bench(config, root / "out", progress=False)
