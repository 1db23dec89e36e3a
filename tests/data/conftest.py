"""Shared fixtures for the data-layer tests: tiny image writers and the location of the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def shared_datasets_dir() -> Path:
    """``../shared/datasets`` next to the repository, or ``$VADKIT_SHARED_DATASETS``."""
    override = os.environ.get("VADKIT_SHARED_DATASETS")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.fixture
def shared_dataset():
    """``shared_dataset("mvtec_bottle")`` -> its folder, or skip the test when it is absent."""

    def get(name: str) -> Path:
        folder = shared_datasets_dir() / name
        if not folder.is_dir():
            pytest.skip(f"real dataset {folder} is not available")
        return folder

    return get


@pytest.fixture
def write_image():
    """``write_image(path, array=None, size=(16, 16), value=128)`` -> path.

    With an array, saves ``Image.fromarray(array)``; otherwise a uniform RGB image of ``value`` and ``size``
    (W, H). Parent folders are created; the format follows the suffix.
    """

    def write(path: Path, array: np.ndarray | None = None, *, size=(16, 16), value=128) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if array is None:
            array = np.full((size[1], size[0], 3), value, dtype=np.uint8)
        Image.fromarray(array).save(path)
        return path

    return write


@pytest.fixture
def write_mask():
    """``write_mask(path, bool_array)`` -> path, saved as an 8-bit 0/255 PNG."""

    def write(path: Path, mask: np.ndarray) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).save(path)
        return path

    return write


@pytest.fixture
def write_corrupt():
    """``write_corrupt(path, kind)`` writes a bad file: ``"truncated_png"``, ``"truncated_jpg"``, ``"text"``,
    ``"empty"``."""

    def write(path: Path, kind: str) -> Path:
        import io

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        noise = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        buffer = io.BytesIO()
        if kind == "truncated_png":
            noise.save(buffer, "PNG")
            data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        elif kind == "truncated_jpg":
            noise.save(buffer, "JPEG")
            data = buffer.getvalue()[: len(buffer.getvalue()) // 2]
        elif kind == "text":
            data = b"this is a text file, not an image\n"
        elif kind == "empty":
            data = b""
        else:
            raise ValueError(kind)
        path.write_bytes(data)
        return path

    return write
