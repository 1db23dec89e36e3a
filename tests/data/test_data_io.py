"""Image and mask reading: mode conversion by pixel value, corrupt files, mask binarisation and resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vadkit.data.io import IMAGE_EXTENSIONS, check_image, list_images, load_image, load_mask, to_rgb
from vadkit.errors import DataError


def _save(img: Image.Image, path):
    img.save(path)
    return path


# -- image modes -----------------------------------------------------------------------------------------


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = load_image(_save(Image.fromarray(gray, mode="L"), tmp_path / "g.png"))
    assert img.mode == "RGB" and img.size == (16, 16)
    rgb = np.asarray(img)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[..., channel], gray)


def test_rgba_drops_alpha_without_compositing(tmp_path):
    # A fully transparent pixel keeps its stored colour (no blend onto black or white).
    rgba = np.zeros((16, 16, 4), dtype=np.uint8)
    rgba[...] = (10, 20, 30, 0)
    rgba[0, 0] = (200, 150, 100, 255)
    rgb = np.asarray(load_image(_save(Image.fromarray(rgba, mode="RGBA"), tmp_path / "a.png")))
    assert rgb.shape == (16, 16, 3)
    assert tuple(rgb[5, 5]) == (10, 20, 30)
    assert tuple(rgb[0, 0]) == (200, 150, 100)


def test_la_mode_keeps_gray_level(tmp_path):
    img = Image.new("LA", (4, 4), (100, 0))
    assert tuple(np.asarray(load_image(_save(img, tmp_path / "la.png")))[1, 1]) == (100, 100, 100)


def test_palette_image_looks_up_colours(tmp_path):
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 10, 20, 30, 250, 5, 6])
    img.putpixel((1, 2), 1)
    img.putpixel((3, 0), 2)
    rgb = np.asarray(load_image(_save(img, tmp_path / "p.png")))
    assert tuple(rgb[2, 1]) == (10, 20, 30)
    assert tuple(rgb[0, 3]) == (250, 5, 6)
    assert tuple(rgb[0, 0]) == (0, 0, 0)


def test_palette_with_transparency_does_not_warn(tmp_path, recwarn):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 20, 30])
    img.info["transparency"] = 1
    rgb = np.asarray(load_image(_save(img, tmp_path / "pt.png")))
    assert tuple(rgb[0, 0]) == (10, 20, 30)
    assert not [w for w in recwarn if "ransparency" in str(w.message)]


def test_one_bit_image_maps_to_0_and_255(tmp_path):
    img = Image.new("1", (4, 4), 0)
    img.putpixel((2, 1), 1)
    rgb = np.asarray(load_image(_save(img, tmp_path / "b.png")))
    assert tuple(rgb[1, 2]) == (255, 255, 255) and tuple(rgb[0, 0]) == (0, 0, 0)


def test_16bit_png_scaled_by_255_over_65535(tmp_path):
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16).repeat(4, axis=0)
    path = _save(Image.fromarray(values), tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")  # really stored and read as 16-bit
    rgb = np.asarray(load_image(path))
    expected = [0, 1, 128, 255]  # round(v * 255 / 65535): 32768 -> 127.50 -> 128
    np.testing.assert_array_equal(rgb[0, :, 0], expected)
    np.testing.assert_array_equal(rgb[..., 0], rgb[..., 2])


@pytest.mark.parametrize("mode, dtype", [("I;16B", ">u2"), ("I;16L", "<u2")])
def test_16bit_byte_orders_convert_the_same(mode, dtype):
    values = np.array([[0, 65535, 514, 1000]], dtype=np.uint16)
    img = Image.frombytes(mode, (4, 1), values.astype(dtype).tobytes())
    np.testing.assert_array_equal(np.asarray(to_rgb(img))[0, :, 1], [0, 255, 2, 4])


def test_32bit_integer_mode_is_read_as_16bit_range_and_clipped():
    img = Image.fromarray(np.array([[-5, 0, 65535, 70000]], dtype=np.int32))
    assert img.mode == "I"
    np.testing.assert_array_equal(np.asarray(to_rgb(img))[0, :, 0], [0, 0, 255, 255])


def test_cmyk_converts_to_rgb(tmp_path):
    img = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # no cyan, full magenta + yellow = red
    rgb = np.asarray(load_image(_save(img, tmp_path / "c.tif")))
    assert tuple(rgb[0, 0]) == (255, 0, 0)


# -- bad files -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, name", [
    ("truncated_png", "cut.png"), ("truncated_jpg", "cut.jpg"), ("text", "notes.png"), ("empty", "zero.png"),
])
@pytest.mark.parametrize("reader", [load_image, check_image])
def test_bad_file_raises_data_error_naming_file_and_fix(tmp_path, write_corrupt, kind, name, reader):
    path = write_corrupt(tmp_path / name, kind)
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert str(path) in message
    assert "skip_bad_images=True" in message and "--skip-bad-images" in message


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_image(tmp_path / "nope.png")


def test_check_image_accepts_good_png_and_jpeg(tmp_path, write_image):
    check_image(write_image(tmp_path / "a.png"))
    check_image(write_image(tmp_path / "a.jpg"))


# -- listing ---------------------------------------------------------------------------------------------


def test_list_images_ignores_non_images_and_hidden_files(tmp_path, write_image):
    for name in ("b.png", "A.JPG", "c.Tiff", "d.webp", "e.bmp", "f.jpeg"):
        write_image(tmp_path / name)
    write_image(tmp_path / ".hidden.png")
    write_image(tmp_path / "._b.png")
    write_image(tmp_path / "sub" / "deep.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "Thumbs.db").write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()  # a folder with an image suffix is not an image
    names = [p.name for p in list_images(tmp_path)]
    assert names == sorted(["A.JPG", "b.png", "c.Tiff", "d.webp", "e.bmp", "f.jpeg"])
    assert [p.name for p in list_images(tmp_path, recursive=True)].count("deep.png") == 1


def test_list_images_recursive_skips_hidden_folders(tmp_path, write_image):
    write_image(tmp_path / ".cache" / "x.png")
    write_image(tmp_path / "ok" / "y.png")
    assert [p.name for p in list_images(tmp_path, recursive=True)] == ["y.png"]


def test_image_extensions_cover_the_common_formats():
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"} == set(IMAGE_EXTENSIONS)


def test_list_images_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        list_images(tmp_path / "typo")
    assert "typo" in str(info.value)


def test_list_images_on_a_file_is_an_error(tmp_path, write_image):
    with pytest.raises(DataError, match="not a folder"):
        list_images(write_image(tmp_path / "a.png"))


def test_list_images_empty_folder_is_empty_list(tmp_path):
    assert list_images(tmp_path) == []


# -- masks -----------------------------------------------------------------------------------------------


def test_mask_threshold_is_above_127(tmp_path):
    values = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    mask = load_mask(_save(Image.fromarray(values), tmp_path / "m.png"))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, [[False, False, True, True]])


def test_zero_one_mask_uses_nonzero(tmp_path):
    values = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    mask = load_mask(_save(Image.fromarray(values), tmp_path / "m01.png"))
    np.testing.assert_array_equal(mask, values.astype(bool))


def test_all_zero_mask_is_all_false(tmp_path):
    mask = load_mask(_save(Image.new("L", (3, 2), 0), tmp_path / "z.png"))
    assert mask.shape == (2, 3) and not mask.any()


def test_colour_mask_counts_any_bright_channel(tmp_path):
    rgb = np.zeros((2, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)  # pure red: luminance 76 would be missed by a gray conversion
    rgb[1, 1] = (0, 0, 100)  # dim: not a defect
    mask = load_mask(_save(Image.fromarray(rgb), tmp_path / "red.png"))
    np.testing.assert_array_equal(mask, [[True, False], [False, False]])


def test_rgba_mask_ignores_alpha(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 3] = 255  # opaque everywhere: alpha must not make it all-defect
    rgba[1, 0, :3] = 255
    mask = load_mask(_save(Image.fromarray(rgba), tmp_path / "a.png"))
    np.testing.assert_array_equal(mask, [[False, False], [True, False]])


def test_16bit_masks_binary_and_zero_one(tmp_path):
    full = np.array([[0, 65535], [30000, 40000]], dtype=np.uint16)
    np.testing.assert_array_equal(load_mask(_save(Image.fromarray(full), tmp_path / "f.png")), [[0, 1], [0, 1]])
    ones = np.array([[0, 1], [1, 1]], dtype=np.uint16)
    np.testing.assert_array_equal(load_mask(_save(Image.fromarray(ones), tmp_path / "o.png")), ones.astype(bool))


def test_mask_resized_nearest_keeps_positions(tmp_path):
    small = np.zeros((4, 4), dtype=bool)
    small[1, 2] = True  # row 1, column 2
    path = _save(Image.fromarray(small.astype(np.uint8) * 255), tmp_path / "small.png")
    big = load_mask(path, size=(16, 8))  # (W, H) as in Pillow
    assert big.shape == (8, 16) and big.dtype == bool
    expected = np.kron(small, np.ones((2, 4), dtype=bool))
    np.testing.assert_array_equal(big, expected)


def test_mask_downsized_stays_binary(tmp_path):
    soft = np.linspace(0, 255, 64 * 64).reshape(64, 64).astype(np.uint8)
    mask = load_mask(_save(Image.fromarray(soft), tmp_path / "soft.png"), size=(16, 16))
    assert mask.dtype == bool and mask.shape == (16, 16)
    assert mask[0].sum() == 0 and mask[-1].all()


def test_mask_same_size_is_untouched(tmp_path):
    values = np.eye(5, dtype=np.uint8) * 255
    mask = load_mask(_save(Image.fromarray(values), tmp_path / "e.png"), size=(5, 5))
    np.testing.assert_array_equal(mask, np.eye(5, dtype=bool))


def test_corrupt_mask_names_the_file(tmp_path, write_corrupt):
    path = write_corrupt(tmp_path / "bad_mask.png", "truncated_png")
    with pytest.raises(DataError, match="mask") as info:
        load_mask(path)
    assert str(path) in str(info.value)
