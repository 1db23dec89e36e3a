"""Integration tests on real datasets: ../shared/datasets (skipped when absent) and the elpv-dataset package."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from vadkit.data import ImageDataset, Transform, load_split
from vadkit.data.io import load_image, load_mask

SMALL = Transform(image_size=64)


def test_mtd_counts_and_split_rule(shared_dataset):
    root = shared_dataset("magnetic_tile")
    split = load_split("mtd", root)
    test_labels = Counter(s.label for s in split.test)
    assert (len(split.train), test_labels[0], test_labels[1]) == (761, 191, 392)
    # Independent re-implementation of the documented rule.
    names = sorted(p.name for p in (root / "MT_Free" / "Imgs").glob("*.jpg"))
    random.Random(0).shuffle(names)
    assert [s.image_path.name for s in split.train] == names[: int(0.8 * len(names))]
    assert {s.image_path.name for s in split.test if s.label == 0} == set(names[int(0.8 * len(names)) :])
    anomalous = [s for s in split.test if s.label == 1]
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in anomalous)
    expected = {"Blowhole": 115, "Break": 85, "Crack": 57, "Fray": 32, "Uneven": 103}
    assert Counter(s.defect_type for s in anomalous) == expected


def test_mtd_soft_masks_binarise_and_match_image_size(shared_dataset):
    split = load_split("mtd", shared_dataset("magnetic_tile"))
    sample = next(s for s in split.test if s.label == 1)
    mask = load_mask(sample.mask_path)
    assert mask.dtype == bool and mask.any() and not mask.all()
    assert mask.shape == load_image(sample.image_path).size[::-1]
    dataset = ImageDataset([s for s in split.test if s.label == 1][:20], SMALL)
    assert dataset.has_masks and dataset.masks_array().any(axis=(1, 2)).all()


def test_battery_weld_counts_and_orphan_masks(shared_dataset):
    with pytest.warns(UserWarning, match="40 mask"):
        split = load_split("mvtec", shared_dataset("battery_weld"))  # root holding the single category
    assert len(split.train) == 37
    good = [s for s in split.test if s.label == 0]
    defective = [s for s in split.test if s.label == 1]
    assert len(good) == 35 and len(defective) == 93
    assert all(s.mask_path is not None and s.mask_path.stem == s.image_path.stem for s in defective)
    dataset = ImageDataset(split.test, SMALL)
    assert dataset.has_masks and len(dataset) == 128


def test_mvtec_bottle_counts_without_masks(shared_dataset):
    split = load_split("mvtec", shared_dataset("mvtec_bottle"), category="bottle")
    labels = Counter(s.label for s in split.test)
    assert (len(split.train), labels[0], labels[1]) == (209, 20, 63)
    expected = {"good": 20, "broken_large": 20, "broken_small": 22, "contamination": 21}
    assert Counter(s.defect_type for s in split.test) == expected
    dataset = ImageDataset(split.test, SMALL)
    assert dataset.has_masks is False and not dataset.masks_array().any()


def test_elpv_package_counts():
    pytest.importorskip("elpv_dataset")
    split = load_split("elpv")
    labels = Counter(s.label for s in split.test)
    n_normal = len(split.train) + labels[0]
    assert len(split.train) == int(0.75 * n_normal) and labels[0] == n_normal - len(split.train)
    assert (len(split.train), labels[0], labels[1]) == (1131, 377, 715)
    assert {s.defect_type for s in split.test} == {"good", "defective"}  # no uncertain cells by default
    paths = [s.image_path for s in split.train + split.test]
    assert len(set(paths)) == len(paths) and all(p.is_file() for p in paths[:50])
    with_uncertain = load_split("elpv", include_uncertain=True)
    assert sum(s.label for s in with_uncertain.test) == 715 + 401
    assert [s.image_path for s in with_uncertain.train] == [s.image_path for s in split.train]
    img = load_image(split.test[-1].image_path)
    assert img.mode == "RGB" and img.size == (300, 300)


def test_elpv_cell_type_filter():
    pytest.importorskip("elpv_dataset")
    mono, poly = load_split("elpv", cell_type="mono"), load_split("elpv", cell_type="poly")
    assert sum(s.label for s in mono.test) == 313 and sum(s.label for s in poly.test) == 402
    assert len(mono.train) + len(poly.train) + sum(1 - s.label for s in mono.test + poly.test) == 1508
