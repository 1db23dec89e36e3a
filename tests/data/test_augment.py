"""AugmentedDataset: seeded crops/flips of real images, same item format as ImageDataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vadkit.data import AugmentedDataset, ImageDataset, Sample, Transform
from vadkit.data.augment import CropFlip

#: no resize, no normalisation: items are the crop's pixels / 255, so geometry can be read back
IDENTITY_SIZE = (30, 40)


def coordinate_image(height: int = 30, width: int = 40) -> np.ndarray:
    """R = row, G = column, B = 7: every pixel says where it came from."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows * 5, cols * 5, np.full_like(rows, 7)], axis=-1).astype(np.uint8)


@pytest.fixture
def samples(tmp_path, write_image, write_mask):
    first = write_image(tmp_path / "a.png", coordinate_image())
    second = write_image(tmp_path / "b.png", 255 - coordinate_image())
    mask = np.zeros((30, 40), bool)
    mask[5:10, 20:30] = True
    return [Sample(first), Sample(second, 1, "spot", write_mask(tmp_path / "b_mask.png", mask))]


def test_items_are_deterministic_per_index_and_seed(samples):
    transform = Transform(image_size=16)
    one, two = AugmentedDataset(samples, transform, 10, seed=3), AugmentedDataset(samples, transform, 10, seed=3)
    for i in (0, 7, 3):  # any order, any instance: same pixels
        torch.testing.assert_close(one[i]["image"], two[i]["image"], rtol=0, atol=0)
    other = AugmentedDataset(samples, transform, 10, seed=4)
    differs = [not torch.equal(one[i]["image"], other[i]["image"]) for i in range(10)]
    assert sum(differs) >= 8
    assert not torch.equal(one[0]["image"], one[2]["image"])  # same source image, another crop


def test_item_i_is_a_crop_of_sample_i_mod_n_with_the_drawn_geometry(samples):
    data = AugmentedDataset(samples, Transform(image_size=IDENTITY_SIZE), 9, crop=(0.5, 0.9), seed=1)
    boxes = []
    for i in range(len(data)):
        item = data[i]
        assert item["index"] == i and item["path"] == str(samples[i % 2].image_path)
        assert item["label"] == samples[i % 2].label and item["defect_type"] == samples[i % 2].defect_type
        box = data.geometry(i, 30, 40)
        boxes.append(box)
        scale = box.height / 30
        assert 0.5 - 1 / 30 <= scale <= 0.9 + 1 / 30 and abs(box.width / 40 - scale) <= 1 / 30  # aspect kept
        assert 0 <= box.top <= 30 - box.height and 0 <= box.left <= 40 - box.width
        if i % 2 == 0:  # the coordinate image: read the crop's corner back from the pixels
            pixels = data.transform.display_array(data.apply(Image.fromarray(coordinate_image()), box))
            expected = coordinate_image()[box.top:box.top + box.height, box.left:box.left + box.width]
            if box.hflip:
                expected = expected[:, ::-1]
            if box.vflip:
                expected = expected[::-1]
            resized = np.asarray(Image.fromarray(np.ascontiguousarray(expected)).resize((40, 30), Image.BILINEAR))
            np.testing.assert_array_equal(pixels, resized)
    assert any(b.hflip for b in boxes) and any(not b.hflip for b in boxes)
    assert any(b.vflip for b in boxes) and any(not b.vflip for b in boxes)
    assert len({(b.top, b.left, b.height) for b in boxes}) > 5


def test_full_crop_without_flips_is_the_plain_image_dataset(samples):
    transform = Transform(image_size=24)
    augmented = AugmentedDataset(samples, transform, 4, crop=1.0, flips=False)
    plain = ImageDataset(samples, transform)
    for i in range(4):
        assert augmented.geometry(i, 30, 40) == CropFlip(0, 0, 30, 40, False, False)
        torch.testing.assert_close(augmented[i]["image"], plain[i % 2]["image"], rtol=0, atol=0)
        torch.testing.assert_close(augmented[i]["mask"], plain[i % 2]["mask"], rtol=0, atol=0)


def test_masks_take_the_same_crop_and_flips(samples):
    data = AugmentedDataset(samples, Transform(image_size=IDENTITY_SIZE), 21, crop=(0.6, 1.0), seed=2)
    full = np.zeros((30, 40), bool)
    full[5:10, 20:30] = True
    for i in range(1, 21, 2):  # the sample with a mask
        box = data.geometry(i, 30, 40)
        crop = full[box.top:box.top + box.height, box.left:box.left + box.width]
        crop = crop[:, ::-1] if box.hflip else crop
        crop = crop[::-1] if box.vflip else crop
        expected = Transform(image_size=IDENTITY_SIZE).mask_array(np.ascontiguousarray(crop))
        np.testing.assert_array_equal(data[i]["mask"].numpy().astype(bool), expected)


def test_dataset_views_and_errors(samples):
    data = AugmentedDataset(samples, Transform(image_size=16), 5)
    assert len(data) == 5 and data.labels.tolist() == [0, 1, 0, 1, 0] and len(data.samples) == 2
    assert data[-1]["index"] == 4
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=5)))
    assert batch["image"].shape == (5, 3, 16, 16) and batch["mask"].shape == (5, 16, 16)
    with pytest.raises(IndexError):
        data[5]
    for crop in (0.0, 1.5, (0.9, 0.5)):
        with pytest.raises(ValueError, match="crop"):
            AugmentedDataset(samples, crop=crop)
    with pytest.raises(ValueError, match="n_images"):
        AugmentedDataset(samples, n_images=0)


def test_a_model_takes_it_and_rewraps_it_with_its_own_transform(samples):
    from vadkit.models.patchcore import PatchCore

    model = PatchCore(image_size=32)
    data = AugmentedDataset(samples, Transform(image_size=16), 6, seed=5)
    wrapped = model.as_dataset(data)
    assert isinstance(wrapped, AugmentedDataset) and wrapped.transform == model.transform and len(wrapped) == 6
    assert [wrapped.geometry(i, 30, 40) for i in range(6)] == [data.geometry(i, 30, 40) for i in range(6)]
    same = AugmentedDataset(samples, model.transform, 6)
    assert model.as_dataset(same) is same
