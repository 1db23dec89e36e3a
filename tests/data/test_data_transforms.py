"""Transform: shapes, crop geometry, normalisation values, mask alignment and the denormalise round trip."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vadkit.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Transform

PLAIN = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # no normalisation: tensor == pixels / 255


def _pattern(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("size, expected", [(32, (32, 32)), ((24, 40), (24, 40))])
def test_image_shape_follows_image_size_as_height_width(size, expected):
    tensor = Transform(image_size=size).image(Image.fromarray(_pattern(16, 20)))
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (3, *expected)
    assert Transform(image_size=size).output_size == expected


def test_crop_gives_output_size_and_centre_pixels():
    pixels = _pattern(8, 10)
    transform = Transform(image_size=(8, 10), crop_size=(4, 6), **PLAIN)  # no resize: crop only
    tensor = transform.image(Image.fromarray(pixels))
    assert transform.output_size == (4, 6) and tuple(tensor.shape) == (3, 4, 6)
    expected = pixels[2:6, 2:8].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(tensor.numpy(), expected, atol=1e-6)


def test_odd_margin_crop_rounds_like_torchvision():
    center_crop = pytest.importorskip("torchvision.transforms.functional").center_crop

    pixels = _pattern(9, 9)
    ours = Transform(image_size=9, crop_size=4, **PLAIN).image(Image.fromarray(pixels))
    theirs = center_crop(torch.from_numpy(pixels).permute(2, 0, 1), [4, 4]).float() / 255.0
    torch.testing.assert_close(ours, theirs)


def test_normalisation_values():
    colour = (124, 116, 104)
    img = Image.new("RGB", (8, 8), colour)
    tensor = Transform(image_size=8).image(img)
    for c in range(3):
        expected = (colour[c] / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        torch.testing.assert_close(tensor[c], torch.full((8, 8), expected), atol=1e-6, rtol=0)


def test_custom_mean_std():
    transform = Transform(image_size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    tensor = transform.image(Image.new("RGB", (4, 4), (255, 0, 51)))
    torch.testing.assert_close(tensor[:, 0, 0], torch.tensor([1.0, -1.0, -0.6]), atol=1e-6, rtol=0)


def test_resize_is_antialiased_bilinear():
    # A fine checkerboard averaged down must turn mid-gray (aliasing would keep 0/255 values).
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    tensor = Transform(image_size=8, **PLAIN).image(Image.fromarray(board, mode="L"))
    assert torch.all((tensor - 0.5).abs() < 0.05)


def test_non_rgb_input_is_converted():
    tensor = Transform(image_size=4, **PLAIN).image(Image.new("L", (4, 4), 51))
    torch.testing.assert_close(tensor, torch.full((3, 4, 4), 0.2), atol=1e-6, rtol=0)


def test_mask_nearest_resize_and_crop_align():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 2] = True
    up = Transform(image_size=8).mask(mask)
    assert up.dtype == torch.bool and tuple(up.shape) == (8, 8)
    np.testing.assert_array_equal(Transform(image_size=8).mask_array(mask), up.numpy())
    np.testing.assert_array_equal(up.numpy(), np.kron(mask, np.ones((2, 2), dtype=bool)))
    cropped = Transform(image_size=8, crop_size=4).mask(mask)
    np.testing.assert_array_equal(cropped.numpy(), up.numpy()[2:6, 2:6])


def test_mask_and_image_share_geometry():
    # A white square in the image and the same square in the mask must land on the same output pixels.
    pixels = np.zeros((20, 20, 3), dtype=np.uint8)
    pixels[8:16, 4:12] = 255
    transform = Transform(image_size=40, crop_size=30, **PLAIN)
    image = transform.image(Image.fromarray(pixels))[0] > 0.5
    mask = transform.mask(pixels[..., 0] > 0)
    assert torch.equal(image, mask)


def test_mask_accepts_0_255_arrays_and_rejects_3d():
    mask = Transform(image_size=2).mask(np.array([[0, 255], [0, 0]], np.uint8))
    np.testing.assert_array_equal(mask.numpy(), [[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="2-D"):
        Transform(image_size=2).mask(np.zeros((2, 2, 3)))


def test_denormalise_round_trip_is_exact():
    pixels = _pattern(12, 10)
    transform = Transform(image_size=(12, 10))
    back = transform.denormalise(transform.image(Image.fromarray(pixels)))
    assert back.dtype == np.uint8 and back.shape == (12, 10, 3)
    np.testing.assert_array_equal(back, pixels)


def test_denormalise_clips_out_of_range_values():
    out = Transform(image_size=2).denormalise(torch.full((3, 2, 2), 100.0))
    assert (out == 255).all()
    with pytest.raises(ValueError, match="3, H, W"):
        Transform(image_size=2).denormalise(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("kwargs", [
    dict(image_size=0), dict(image_size=(4,)), dict(image_size=4.5), dict(image_size=8, crop_size=9),
    dict(std=(1, 0, 1)), dict(mean=(0, 0)),
])
def test_invalid_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Transform(**kwargs)


def test_json_round_trip_gives_an_equal_hashable_transform():
    transform = Transform(image_size=(224, 256), crop_size=200)
    restored = Transform(**json.loads(json.dumps(dataclasses.asdict(transform))))
    assert restored == transform and hash(restored) == hash(transform)
    assert restored.output_size == (200, 200)
