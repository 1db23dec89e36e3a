"""ImageDataset: item dicts, batching, the up-front bad-file check, masks and label views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vadkit.data import ImageDataset, Sample, Transform
from vadkit.errors import DataError

SMALL = Transform(image_size=8)


@pytest.fixture
def samples(tmp_path, write_image, write_mask):
    """Two normal images and two anomalous ones, the first anomalous with a 16x16 mask (one 8x8 quadrant)."""
    quadrant = np.zeros((16, 16), dtype=bool)
    quadrant[:8, 8:] = True  # top-right
    return [
        Sample(write_image(tmp_path / "good" / "g0.png", value=10)),
        Sample(write_image(tmp_path / "good" / "g1.jpg", value=20)),
        Sample(
            write_image(tmp_path / "bad" / "b0.png"), 1, "scratch", write_mask(tmp_path / "gt" / "b0_mask.png", quadrant)
        ),
        Sample(write_image(tmp_path / "bad" / "b1.png"), 1, "dent", None),
    ]


def test_item_is_a_dict_of_tensors_and_plain_values(samples):
    item = ImageDataset(samples, SMALL)[2]
    assert item["image"].dtype == torch.float32 and tuple(item["image"].shape) == (3, 8, 8)
    assert item["mask"].dtype == torch.uint8 and tuple(item["mask"].shape) == (8, 8)
    expected = np.zeros((8, 8), dtype=np.uint8)
    expected[:4, 4:] = 1
    np.testing.assert_array_equal(item["mask"].numpy(), expected)
    assert item["label"] == 1 and item["index"] == 2 and item["path"] == str(samples[2].image_path)
    assert item["defect_type"] == "scratch"


def test_sample_without_mask_gets_zero_mask(samples):
    dataset = ImageDataset(samples, SMALL)
    for index in (0, 3):
        mask = dataset[index]["mask"]
        assert mask.dtype == torch.uint8 and tuple(mask.shape) == (8, 8) and int(mask.sum()) == 0


def test_default_collate_batches_items(samples):
    batch = next(iter(DataLoader(ImageDataset(samples, SMALL), batch_size=4)))
    assert tuple(batch["image"].shape) == (4, 3, 8, 8)
    assert tuple(batch["mask"].shape) == (4, 8, 8) and batch["mask"].dtype == torch.uint8
    assert batch["label"].tolist() == [0, 0, 1, 1]
    assert batch["index"].tolist() == [0, 1, 2, 3]
    assert batch["path"] == [str(s.image_path) for s in samples]


def test_default_transform_is_256(samples):
    dataset = ImageDataset(samples[:1])
    assert dataset.transform == Transform() and tuple(dataset[0]["image"].shape) == (3, 256, 256)


def test_image_values_come_from_the_file(samples):
    item = ImageDataset(samples, Transform(image_size=8, mean=(0, 0, 0), std=(1, 1, 1)))[0]
    torch.testing.assert_close(item["image"], torch.full((3, 8, 8), 10 / 255), atol=1e-6, rtol=0)


def test_views_labels_has_masks_and_masks_array(samples):
    dataset = ImageDataset(samples, SMALL)
    assert dataset.labels.tolist() == [0, 0, 1, 1] and np.issubdtype(dataset.labels.dtype, np.integer)
    assert dataset.has_masks is False  # b1 is anomalous without a mask
    assert ImageDataset(samples[:3], SMALL).has_masks is True
    assert ImageDataset(samples[:2], SMALL).has_masks is False  # no anomalous sample at all
    masks = dataset.masks_array()
    assert masks.dtype == bool and masks.shape == (4, 8, 8)
    for i in range(4):
        np.testing.assert_array_equal(masks[i], dataset[i]["mask"].numpy().astype(bool))
    assert masks[2].sum() == 16 and masks[[0, 1, 3]].sum() == 0


def test_samples_with_str_paths_are_accepted(samples):
    as_str = [
        Sample(str(s.image_path), s.label, s.defect_type, str(s.mask_path) if s.mask_path else None) for s in samples
    ]
    dataset = ImageDataset(as_str, SMALL)
    assert dataset[2]["mask"].sum() == 16
    assert all(isinstance(s.image_path, Path) and s.image_path == t.image_path for s, t in zip(dataset.samples, samples))


def test_index_bounds(samples):
    dataset = ImageDataset(samples, SMALL)
    assert dataset[-1]["index"] == 3
    with pytest.raises(IndexError):
        dataset[4]


@pytest.mark.parametrize("kind", ["truncated_png", "text"])
def test_bad_image_stops_before_training_naming_the_file(samples, tmp_path, write_corrupt, kind):
    bad = write_corrupt(tmp_path / "good" / "broken.png", kind)
    with pytest.raises(DataError) as info:
        ImageDataset([*samples, Sample(bad)], SMALL)
    assert str(bad) in str(info.value) and "skip_bad_images=True" in str(info.value)


def test_truncated_jpeg_is_caught(samples, tmp_path, write_corrupt):
    bad = write_corrupt(tmp_path / "good" / "cut.jpg", "truncated_jpg")
    with pytest.raises(DataError, match="cut.jpg"):
        ImageDataset([Sample(bad), *samples], SMALL)


def test_error_mentions_how_many_more_are_bad(samples, tmp_path, write_corrupt):
    bad = [write_corrupt(tmp_path / f"x{i}.png", "text") for i in range(3)]
    with pytest.raises(DataError, match="2 more unreadable") as info:
        ImageDataset([*samples, *(Sample(p) for p in bad)], SMALL)
    assert str(bad[0]) in str(info.value)


def test_skip_bad_images_warns_counts_and_keeps_the_rest(samples, tmp_path, write_corrupt):
    bad = [write_corrupt(tmp_path / "t.png", "text"), write_corrupt(tmp_path / "c.jpg", "truncated_jpg")]
    mixed = [samples[0], Sample(bad[0]), samples[1], Sample(bad[1], 1, "x"), samples[2]]
    with pytest.warns(UserWarning) as record:
        dataset = ImageDataset(mixed, SMALL, skip_bad_images=True)
    messages = " ".join(str(w.message) for w in record)
    assert str(bad[0]) in messages and str(bad[1]) in messages
    assert dataset.skipped == bad
    assert [s.image_path for s in dataset.samples] == [samples[i].image_path for i in range(3)]
    assert len(dataset) == 3 and dataset[2]["label"] == 1 and dataset[2]["mask"].sum() == 16


def test_bad_mask_is_caught_and_named(samples, tmp_path, write_corrupt):
    bad_mask = write_corrupt(tmp_path / "gt" / "broken_mask.png", "truncated_png")
    sample = Sample(samples[3].image_path, 1, "dent", bad_mask)
    with pytest.raises(DataError, match="mask") as info:
        ImageDataset([samples[0], sample], SMALL)
    assert str(bad_mask) in str(info.value)
    with pytest.warns(UserWarning, match="broken_mask"):
        dataset = ImageDataset([samples[0], sample], SMALL, skip_bad_images=True)
    assert dataset.skipped == [samples[3].image_path] and len(dataset) == 1


def test_empty_dataset_is_an_error():
    with pytest.raises(DataError, match="no images"):
        ImageDataset([], SMALL)


def test_all_bad_with_skip_is_an_error_naming_the_folder(tmp_path, write_corrupt):
    bad = [write_corrupt(tmp_path / "only" / f"{i}.png", "empty") for i in range(2)]
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no images in") as info:
        ImageDataset([Sample(p) for p in bad], SMALL, skip_bad_images=True)
    assert str(tmp_path / "only") in str(info.value)
