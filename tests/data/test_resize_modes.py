"""Input geometry: rectangular sizes and the four resize modes, and the evaluation grid where padding never scores."""

import numpy as np
import pytest
from PIL import Image

from vadkit.data import ImageDataset, Sample, Transform
from vadkit.data.transforms import parse_size


@pytest.mark.parametrize("text, expected", [("640x256", (640, 256)), ("640×256", (640, 256)), (" 64 X 32 ", (64, 32)),
                                            ("128", (128, 128)), (96, (96, 96)), ([32, 48], (32, 48))])
def test_sizes_are_read_from_ints_pairs_and_text(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["abc", "0x10", "10x", -3, (1, 2, 3), True])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="image_size"):
        parse_size(bad)


def test_a_text_size_is_stored_as_the_pair_it_means():
    assert Transform(image_size="64x128") == Transform(image_size=(64, 128))


def test_unknown_resize_mode_is_refused():
    with pytest.raises(ValueError, match="resize must be one of"):
        Transform(resize="squash")


def picture(height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("resize", ["stretch", "fit", "fit_pad", "short_side"])
@pytest.mark.parametrize("original", [(50, 200), (200, 50), (64, 128), (77, 77)])
def test_every_mode_gives_the_output_size(resize, original):
    transform = Transform(image_size=(64, 128), resize=resize)
    assert transform.array(picture(*original)).shape == (3, 64, 128)
    assert transform.mask_array(np.ones(original)).shape == (64, 128)


def test_fit_keeps_the_aspect_ratio_and_centres_the_image():
    transform = Transform(image_size=(64, 128), resize="fit")
    assert transform.placement((50, 200)) == (16, 0, 32, 128)   # 4:1 in a 2:1 canvas: bands above and below
    assert transform.placement((100, 100)) == (0, 32, 64, 64)   # a square: bands left and right
    assert transform.placement((32, 64)) == (0, 0, 64, 128)     # the canvas' own aspect: no padding


def test_fit_pads_with_the_border_and_fit_pad_with_the_mean():
    image = np.zeros((100, 100, 3), dtype=np.uint8)
    image[:, :50] = 200  # left half bright: the left padding repeats it
    fit = Transform(image_size=(64, 128), resize="fit").display_array(Image.fromarray(image))
    assert (fit[:, :32] == 200).all() and (fit[:, -32:] == 0).all()
    padded = Transform(image_size=(64, 128), resize="fit_pad").display_array(Image.fromarray(image))
    mean = np.round(np.asarray(Transform().mean) * 255).astype(np.uint8)
    assert (padded[:, :32] == mean).all() and (padded[:, -32:] == mean).all()
    normalised = Transform(image_size=(64, 128), resize="fit_pad").array(Image.fromarray(image))
    assert np.abs(normalised[:, :, :32]).max() < 0.01  # the mean normalises to (about) zero


def test_short_side_covers_the_canvas_and_crops_the_rest():
    transform = Transform(image_size=(64, 64), resize="short_side")
    assert transform.placement((100, 200)) == (0, -32, 64, 128)
    image = np.zeros((100, 200, 3), dtype=np.uint8)
    image[:, 50:150] = 255  # the centre half: all that short_side keeps
    kept = transform.display_array(Image.fromarray(image))
    assert (kept[:, 1:-1] == 255).all() and kept[:, [0, -1]].min() > 200  # the edges blend a little (antialiasing)


def test_the_evaluation_grid_cuts_the_padding_away_exactly():
    transform = Transform(image_size=(64, 128), resize="fit")
    top, left, height, width = transform.content_box((100, 100))
    anomaly_map = np.full((64, 128), 1e6, dtype=np.float32)   # the padding scores absurdly high
    anomaly_map[top:top + height, left:left + width] = 3.0    # the image itself: a constant
    grid = transform.to_evaluation_grid(anomaly_map, (100, 100))
    assert grid.shape == (64, 128)
    np.testing.assert_array_equal(grid, 3.0)                  # no padded value leaks, a constant stays constant


def test_an_impulse_in_the_content_lands_where_the_image_has_it():
    transform = Transform(image_size=(64, 128), resize="fit_pad")
    top, left, height, width = transform.content_box((100, 100))   # 64 x 64 content at column 32
    anomaly_map = np.zeros((64, 128), dtype=np.float32)
    anomaly_map[top + 16, left + 48] = 1.0                    # at (1/4, 3/4) of the image
    grid = transform.to_evaluation_grid(anomaly_map, (100, 100))
    row, column = np.unravel_index(np.argmax(grid), grid.shape)
    assert abs(row - 16.25) <= 1 and abs(column - 96.5) <= 2  # (1/4, 3/4) of the stretched grid


def test_masks_on_the_evaluation_grid_are_the_stretched_ones(tmp_path):
    """Pixel metrics of a fit model are computed on the same ground truth as a stretched model's."""
    mask = np.zeros((100, 300), dtype=np.uint8)
    mask[40:60, 200:260] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    picture(100, 300).save(tmp_path / "image.png")
    sample = Sample(tmp_path / "image.png", 1, "scratch", tmp_path / "mask.png")
    fit = ImageDataset([sample], Transform(image_size=(64, 128), resize="fit"))
    stretch = ImageDataset([sample], Transform(image_size=(64, 128)))
    np.testing.assert_array_equal(fit.masks_array(), stretch.masks_array())
    assert fit[0]["original_size"].tolist() == [100, 300]


@pytest.mark.parametrize("resize", ["stretch", "fit", "short_side"])
def test_a_map_goes_back_to_the_original_pixels(resize):
    """An impulse at the original image's (60%, 70%) comes back there, whatever the mode (short_side: inside
    the window it kept, NaN outside)."""
    transform = Transform(image_size=(64, 64), resize=resize)
    original = (100, 200)
    grid = np.zeros((64, 64), dtype=np.float32)
    if resize == "short_side":
        top, left, height, width = transform.placement(original)   # (0, -32, 64, 128)
        grid[round(0.6 * height + top), round(0.6 * width + left)] = 1.0
        back = transform.map_to_original(grid, original)
        assert np.isnan(back[:, :40]).all() and np.isnan(back[:, 160:]).all()
        row, column = np.unravel_index(np.nanargmax(back), back.shape)
        assert abs(row - 60) <= 2 and abs(column - 120) <= 2
        return
    grid[round(0.6 * 64), round(0.7 * 64)] = 1.0  # the evaluation grid is the whole image, stretched
    back = transform.map_to_original(grid, original)
    assert back.shape == original and np.isfinite(back).all()
    row, column = np.unravel_index(np.argmax(back), back.shape)
    assert abs(row - 60) <= 2 and abs(column - 140) <= 4


def test_images_of_one_tall_shape_get_advice_that_keeps_it(tmp_path):
    from vadkit.data.aspect import aspect_advice

    samples = []
    for i in range(10):
        path = tmp_path / f"{i}.png"
        picture(250, 100).save(path)  # 100 wide, 250 tall
        samples.append(Sample(path))
    advice = aspect_advice(Transform(image_size=256), samples)
    assert "100x250" in advice and "image_size=416x160" in advice    # 256^2 pixels at aspect 0.4, multiples of 32
    assert aspect_advice(Transform(image_size=(416, 160)), samples) is None   # already its shape
    assert aspect_advice(Transform(image_size=256, resize="fit_pad"), samples) is None
    mixed = samples + [Sample(tmp_path / "wide.png")]
    picture(100, 250).save(tmp_path / "wide.png")
    assert aspect_advice(Transform(image_size=256), mixed[:5] + [mixed[-1]] * 5) is None  # no one shape
