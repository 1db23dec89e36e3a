"""Two clearly different tiny tasks: the shared stripe texture, and the same texture turned a quarter and tinted
(vertical blue-ish stripes against horizontal grey ones), so that task identification has a right answer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import make_mvtec_folder


def make_turned_folder(root: Path, seed: int = 1, **counts) -> Path:
    """A generated MVTec folder whose every image is turned 90 degrees and tinted (masks turned alike)."""
    make_mvtec_folder(root, seed=seed, **counts)
    for path in sorted(root.rglob("*.png")):
        array = np.asarray(Image.open(path))
        turned = np.ascontiguousarray(np.rot90(array))
        if "ground_truth" not in path.parts:
            turned = np.clip(turned.astype(np.int16) * np.array([0.5, 0.8, 1.3]), 0, 255).astype(np.uint8)
        Image.fromarray(turned).save(path)
    return root


@pytest.fixture(scope="session")
def two_tasks(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("continual_tasks")
    return (make_mvtec_folder(base / "stripes", n_train=8, n_good=3, n_bad=3, seed=0),
            make_turned_folder(base / "turned", n_train=8, n_good=3, n_bad=3, seed=1))
