"""Gallery panels: tile layout, ground-truth contour, thresholded prediction and heatmap colours, pixel by pixel."""

import colorsys
import io

import numpy as np
import pytest
from PIL import Image

from vadkit.report.gallery import (
    CONTOUR_GREEN,
    TILE_GAP,
    GalleryItem,
    contour,
    contour_thickness,
    gallery_panel,
    panel_tiles,
)

GREY = (100, 100, 100)


def tiles(panel: np.ndarray, width: int) -> list[np.ndarray]:
    return [panel[:, k * (width + TILE_GAP): k * (width + TILE_GAP) + width] for k in range(3)]


def is_green(tile: np.ndarray) -> np.ndarray:
    return np.all(tile == CONTOUR_GREEN, axis=-1)


def flat_image(h=64, w=64, colour=GREY) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def brute_force_contour(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask or outside the image."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                continue
            for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                ny, nx = y + dy, x + dx
                if not (0 <= ny < h and 0 <= nx < w) or not mask[ny, nx]:
                    out[y, x] = True
    return out


def test_panel_png_layout_and_shapes():
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:80]
    smooth = np.stack([100 + 80 * np.sin(x / 7), 120 + 60 * np.cos(y / 5), 90 + x], axis=-1)
    image = np.clip(smooth + rng.normal(0, 3, smooth.shape), 0, 255).astype(np.uint8)  # camera-like: mild noise
    anomaly_map = (np.exp(-((x - 40) ** 2 + (y - 20) ** 2) / 90) + rng.normal(0, 0.05, x.shape)).astype(np.float32)
    png = gallery_panel(image, anomaly_map, None, 0.5, 0.0, 1.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    array = panel_tiles(image, anomaly_map, None, 0.5, 0.0, 1.0)
    assert decoded.shape == array.shape == (48, 3 * 80 + 2 * TILE_GAP, 3)
    assert np.abs(decoded.astype(int) - array).mean() < 8  # 256-colour palette: close, not exact
    first, _, _ = tiles(array, 80)
    assert np.array_equal(first, image)  # no mask: the first tile is the image itself
    assert np.all(array[:, 80:80 + TILE_GAP] == 255)


def test_contour_is_exactly_the_square_boundary_in_image_and_prediction_tiles():
    image = flat_image()
    mask = np.zeros((64, 64), bool)
    mask[20:40, 10:30] = True
    ring = mask.copy()
    ring[21:39, 11:29] = False
    anomaly_map = np.zeros((64, 64), np.float32)
    png = gallery_panel(image, anomaly_map, mask, 0.5, 0.0, 1.0)
    decoded = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))  # few colours: the palette is exact
    for panel in (decoded, panel_tiles(image, anomaly_map, mask, 0.5, 0.0, 1.0)):
        truth, heat, predicted = tiles(panel, 64)
        assert np.array_equal(is_green(truth), ring)
        assert np.array_equal(is_green(predicted), ring)
        assert not is_green(heat).any()
        assert np.all(truth[~ring] == GREY)


def test_contour_matches_brute_force_and_thickens_with_size():
    rng = np.random.default_rng(1)
    for _ in range(5):
        mask = rng.random((24, 31)) < 0.45  # ragged blobs touching the border
        assert np.array_equal(contour(mask, 1), brute_force_contour(mask))
    assert not contour(np.zeros((8, 8), bool)).any()
    assert contour_thickness(64, 64) == 1 and contour_thickness(256, 256) == 2
    mask = np.zeros((256, 256), bool)
    mask[100:160, 50:120] = True
    panel = panel_tiles(flat_image(256, 256), np.zeros((256, 256), np.float32), mask, None, 0.0, 1.0)
    expected = mask.copy()
    expected[102:158, 52:118] = False  # two pixels deep, all inside the mask
    assert np.array_equal(is_green(tiles(panel, 256)[0]), expected)


def test_prediction_tile_marks_exactly_the_pixels_at_or_above_threshold():
    rng = np.random.default_rng(2)
    anomaly_map = rng.integers(0, 10, (40, 50)).astype(np.float32) / 10  # many ties with the threshold
    threshold = 0.6
    image = flat_image(40, 50)
    _, _, predicted = tiles(panel_tiles(image, anomaly_map, None, threshold, 0.0, 1.0), 50)
    marked = np.any(predicted != image, axis=-1)
    assert np.array_equal(marked, anomaly_map >= threshold)
    assert np.all(predicted[marked][:, 0] > predicted[marked][:, 1])  # tinted red
    higher = panel_tiles(image, anomaly_map, None, 0.9, 0.0, 1.0)
    assert np.array_equal(np.any(tiles(higher, 50)[2] != image, axis=-1), anomaly_map >= 0.9)


def test_uncalibrated_prediction_tile_is_grey_and_labelled():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    anomaly_map = rng.random((96, 96)).astype(np.float32)
    _, _, predicted = tiles(panel_tiles(image, anomaly_map, None, None, 0.0, 1.0), 96)
    saturation = predicted.max(axis=-1).astype(int) - predicted.min(axis=-1)
    assert np.all(saturation == 0)  # no colour: nothing is predicted
    box = np.all(predicted == 48, axis=-1)  # the dark box of the "uncalibrated" label, centred
    rows, cols = np.flatnonzero(box.any(axis=1)), np.flatnonzero(box.any(axis=0))
    assert box.sum() > 100 and abs(rows.mean() - 47.5) < 4 and abs(cols.mean() - 47.5) < 4
    inside = predicted[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1, 0]
    assert (inside > 180).sum() > 20  # light text on it
    assert np.all(predicted[:rows[0]] >= 129)  # washed out towards white away from the label


def test_heatmap_hue_is_monotone_in_the_map_value_with_a_shared_scale():
    width = 200
    ramp = np.tile(np.linspace(-0.2, 1.2, width, dtype=np.float32), (8, 1))
    image = flat_image(8, width, (128, 128, 128))
    _, heat, _ = tiles(panel_tiles(image, ramp, None, None, 0.0, 1.0), width)
    hues = np.array([colorsys.rgb_to_hsv(*(heat[4, x] / 255.0))[0] * 360 for x in range(width)])
    hues[hues > 300] -= 360  # pure red wraps to 0
    assert hues[0] == pytest.approx(240, abs=2) and hues[-1] == pytest.approx(0, abs=2)  # blue -> red
    assert np.all(np.diff(hues) <= 1.0)  # never goes back towards blue (1 degree of uint8 rounding)
    below, above = ramp[0] <= 0.0, ramp[0] >= 1.0
    assert np.all(heat[4, below] == heat[4, 0]) and np.all(heat[4, above] == heat[4, -1])  # clipped at vmin/vmax
    # The same value gets the same colour in another panel with the same vmin/vmax, whatever else the map holds.
    other = np.full((8, width), 0.5, np.float32)
    _, other_heat, _ = tiles(panel_tiles(image, other, None, None, 0.0, 1.0), width)
    at_half = np.argmin(np.abs(ramp[0] - 0.5))
    assert np.abs(other_heat[0, 0].astype(int) - heat[0, at_half]).max() <= 2


def test_inputs_are_validated_and_not_modified():
    image = flat_image(16, 16)
    original = image.copy()
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    panel_tiles(image, np.zeros((16, 16)), mask, 0.5, 0.0, 1.0)
    assert np.array_equal(image, original)
    with pytest.raises(ValueError, match="anomaly_map"):
        gallery_panel(image, np.zeros((16, 15)), None, 0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="mask"):
        gallery_panel(image, np.zeros((16, 16)), np.zeros((8, 8), bool), 0.5, 0.0, 1.0)
    with pytest.raises(ValueError, match="uint8"):
        gallery_panel(image.astype(np.float32), np.zeros((16, 16)), None, 0.5, 0.0, 1.0)


@pytest.mark.parametrize(("label", "predicted", "outcome"),
                         [(1, 1, "TP"), (0, 1, "FP"), (1, 0, "FN"), (0, 0, "TN"), (1, None, None)])
def test_gallery_item_outcome(label, predicted, outcome):
    item = GalleryItem(name="a.png", defect_type="x", label=label, predicted=predicted, score=0.1, aupimo=None,
                       png=b"")
    assert item.outcome == outcome
