"""sPRO / AU-sPRO against a brute-force reference, against AU-PRO, and the MVTec LOCO ground-truth reader."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from vadkit.errors import DataError, UndefinedMetricError
from vadkit.metrics import SaturatedRegion, aupro, auspro, load_loco_regions, spro_curve
from vadkit.metrics.pro import area_up_to


def brute_force_auspro(regions, maps, fpr_limit, normal=None):
    """Every distinct threshold, sPRO per region from its mask, FPR on the pixels in no region; cut at the limit."""
    if normal is None:
        normal = np.ones(maps.shape, dtype=bool)
        for r in regions:
            normal[r.image_index] &= ~r.mask
    fprs, spros = [0.0], [0.0]
    for t in np.unique(np.concatenate([maps[normal]] + [maps[r.image_index][r.mask] for r in regions]))[::-1]:
        flagged = maps >= t
        overlaps = []
        for r in regions:
            saturation = min(r.saturation, r.mask.sum())  # the official cap
            overlaps.append(min(flagged[r.image_index][r.mask].sum() / saturation, 1.0))
        spros.append(np.mean(overlaps))
        fprs.append(flagged[normal].mean())
    fprs, spros = np.array(fprs), np.array(spros)
    keep = fprs <= fpr_limit
    x = np.append(fprs[keep], fpr_limit)
    y = np.append(spros[keep], np.interp(fpr_limit, fprs, spros))
    return np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / fpr_limit


def random_regions(rng, n_images, height, width):
    """Rectangles and blobs, some overlapping each other, with absolute, relative-like and fractional saturations."""
    regions = []
    for image in range(n_images - 1):  # the last image stays defect-free
        for _ in range(rng.integers(1, 4)):
            mask = np.zeros((height, width), dtype=bool)
            y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
            mask[y : y + rng.integers(1, 6), x : x + rng.integers(1, 8)] = True
            if rng.random() < 0.3:
                mask |= rng.random(mask.shape) < 0.02
            area = mask.sum()
            saturation = [area, max(1, int(0.4 * area)), 2.5, 3 * area][rng.integers(0, 4)]
            regions.append(SaturatedRegion(image, mask, saturation))
    # Force one overlap: a copy of the first region shifted by one pixel, in the same image.
    first = regions[0]
    regions.append(SaturatedRegion(first.image_index, np.roll(first.mask, 1, axis=1) | first.mask, 1.5))
    return regions


@pytest.mark.parametrize("seed", range(16))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    maps = rng.normal(size=(3, 16, 20))
    regions = random_regions(rng, 3, 16, 20)
    for r in regions:
        maps[r.image_index][r.mask] += rng.uniform(0.3, 1.5)
    maps = np.round(maps, [1, 2, 6][seed % 3]).astype(np.float32)  # from heavy ties to almost none
    fpr_limit = [0.3, 0.05, 1.0, 0.5][seed % 4]
    assert auspro(regions, maps, fpr_limit) == pytest.approx(brute_force_auspro(regions, maps, fpr_limit), abs=1e-12)


@pytest.mark.parametrize("decimals", [1, 3, None])
def test_truncated_sort_gives_the_area_of_the_full_curve(decimals):
    # auspro sorts only the scores above the FPR limit; the area must equal the one from the full curve.
    rng = np.random.default_rng(11)
    maps = rng.normal(size=(6, 40, 40))
    regions = random_regions(rng, 6, 40, 40)
    for r in regions:
        maps[r.image_index][r.mask] += 0.8
    if decimals is not None:
        maps = np.round(maps, decimals)
    fpr, spro, _ = spro_curve(regions, maps)
    for limit in (0.001, 0.05, 0.3, 0.7, 1.0):
        full = area_up_to(np.append(0.0, fpr), np.append(0.0, spro), limit) / limit
        assert auspro(regions, maps, limit) == pytest.approx(min(1.0, full), abs=1e-13)


def test_normal_mask_override_matches_brute_force():
    rng = np.random.default_rng(42)
    maps = rng.normal(size=(3, 12, 12))
    regions = random_regions(rng, 3, 12, 12)
    good_only = np.zeros(maps.shape, dtype=bool)
    good_only[2] = True  # FPR on the defect-free image only
    for limit in (0.05, 0.3):
        expected = brute_force_auspro(regions, maps, limit, normal=good_only)
        assert auspro(regions, maps, limit, normal_mask=good_only) == pytest.approx(expected, abs=1e-12)
    # Different from the default (all pixels in no region), so the override is really used.
    assert auspro(regions, maps, 0.3) != pytest.approx(auspro(regions, maps, 0.3, normal_mask=good_only), abs=1e-6)


def test_saturation_equal_to_area_is_plain_pro():
    rng = np.random.default_rng(0)
    masks = rng.random((4, 24, 24)) < 0.05
    masks[0, 3:9, 4:12] = True
    masks[3] = False
    maps = rng.normal(size=masks.shape) + 1.3 * masks
    regions = []
    for image, mask in enumerate(masks):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [SaturatedRegion(image, labelled == k, float((labelled == k).sum())) for k in range(1, n + 1)]
    for limit in (0.05, 0.3, 1.0):
        assert auspro(regions, maps, limit) == pytest.approx(aupro(masks, maps, limit), abs=1e-12)


def test_smaller_saturation_scores_higher():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(2, 20, 20))
    mask = np.zeros((20, 20), dtype=bool)
    mask[5:15, 5:15] = True
    maps[0][mask] += np.linspace(0, 3, 100)  # part of the region is clearly found, part is not
    full = auspro([SaturatedRegion(0, mask, 100)], maps, 0.3)
    half = auspro([SaturatedRegion(0, mask, 50)], maps, 0.3)
    tenth = auspro([SaturatedRegion(0, mask, 10)], maps, 0.3)
    assert full < half < tenth <= 1.0
    # A saturation above the area is capped at the area (official rule): same as the plain region.
    assert auspro([SaturatedRegion(0, mask, 1000)], maps, 0.3) == full


def test_hand_computed_curve_with_overlapping_regions():
    # One 1x5 image. Region A = pixels {0, 1} saturating at 1 pixel; region B = pixels {1, 2} (overlap at pixel 1),
    # saturation 2. Pixels 3 and 4 are normal.
    a = np.array([[True, True, False, False, False]])
    b = np.array([[False, True, True, False, False]])
    maps = np.array([[[0.2, 0.9, 0.5, 0.7, 0.1]]])
    regions = [SaturatedRegion(0, a, 1), SaturatedRegion(0, b, 2)]
    fpr, spro, thresholds = spro_curve(regions, maps)
    # t=0.9: pixel 1 -> A = 1 (saturated), B = 1/2; t=0.7: + normal pixel 3; t=0.5: + pixel 2 -> B = 1;
    # t=0.2: pixel 0 (A already saturated); t=0.1: + normal pixel 4.
    np.testing.assert_array_equal(thresholds, [0.9, 0.7, 0.5, 0.2, 0.1])
    np.testing.assert_allclose(fpr, [0.0, 0.5, 0.5, 0.5, 1.0])
    np.testing.assert_allclose(spro, [0.75, 0.75, 1.0, 1.0, 1.0])
    # Area: the vertical step at FPR 0 to 0.75, then trapezoid (0, .75) -> (.5, .75) -> (.5, 1) -> (1, 1).
    assert auspro(regions, maps, 1.0) == pytest.approx(0.5 * 0.75 + 0.5 * 1.0)
    assert auspro(regions, maps, 0.3) == pytest.approx(0.75)


def test_perfect_and_inverted_maps():
    rng = np.random.default_rng(3)
    regions = random_regions(rng, 3, 16, 16)
    maps = rng.random((3, 16, 16)) * 0.5
    for r in regions:
        maps[r.image_index][r.mask] += 1.0
    assert auspro(regions, maps) == 1.0
    assert auspro(regions, -maps) == 0.0
    fpr, spro, _ = spro_curve(regions, maps)
    assert fpr[-1] == 1.0 and spro[-1] == 1.0


def test_constant_map():
    mask = np.zeros((4, 4), dtype=bool)
    mask[1, 1] = True
    fpr, spro, thresholds = spro_curve([SaturatedRegion(0, mask, 1)], np.zeros((2, 4, 4)))
    np.testing.assert_array_equal(fpr, [1.0])
    np.testing.assert_array_equal(spro, [1.0])
    np.testing.assert_array_equal(thresholds, [0.0])
    # A single point (1, 1) after (0, 0): the diagonal, so the normalised area up to 0.3 is 0.15.
    assert auspro([SaturatedRegion(0, mask, 1)], np.zeros((2, 4, 4)), 0.3) == pytest.approx(0.15)


def test_undefined_and_invalid_inputs():
    maps = np.zeros((2, 4, 4))
    mask = np.zeros((4, 4), dtype=bool)
    mask[0, 0] = True
    with pytest.raises(UndefinedMetricError, match="no ground-truth region"):
        auspro([], maps)
    with pytest.raises(UndefinedMetricError, match="no normal pixel"):
        auspro([SaturatedRegion(0, np.ones((4, 4), bool), 3)], maps[:1])
    with pytest.raises(ValueError, match="empty"):
        auspro([SaturatedRegion(0, np.zeros((4, 4), bool), 1)], maps)
    with pytest.raises(ValueError, match="image_index"):
        auspro([SaturatedRegion(2, mask, 1)], maps)
    with pytest.raises(ValueError, match="shape"):
        auspro([SaturatedRegion(0, mask[:3], 1)], maps)
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="saturation"):
            auspro([SaturatedRegion(0, mask, bad)], maps)
    with pytest.raises(ValueError, match="fpr_limit"):
        auspro([SaturatedRegion(0, mask, 1)], maps, fpr_limit=0)
    with pytest.raises(ValueError, match="normal_mask"):
        auspro([SaturatedRegion(0, mask, 1)], maps, normal_mask=np.ones((2, 4, 5), bool))
    bad_maps = maps.copy()
    bad_maps[1, 2, 2] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        auspro([SaturatedRegion(0, mask, 1)], bad_maps)


DEFECTS_CONFIG = [
    {"defect_name": "missing_box", "pixel_value": 255, "saturation_threshold": 0.5, "relative_saturation": True},
    {"defect_name": "extra_nut", "pixel_value": 254, "saturation_threshold": 10, "relative_saturation": False},
    {"defect_name": "tiny", "pixel_value": 253, "saturation_threshold": 100, "relative_saturation": False},
]


def write_mask(path, value, box):
    array = np.zeros((20, 30), dtype=np.uint8)
    y0, y1, x0, x1 = box
    array[y0:y1, x0:x1] = value
    Image.fromarray(array).save(path)
    return array != 0


def test_load_loco_regions(tmp_path):
    folder = tmp_path / "ground_truth" / "logical_anomalies" / "000"
    folder.mkdir(parents=True)
    big = write_mask(folder / "000.png", 255, (0, 5, 0, 9))  # 45 pixels, relative 0.5 -> int(22.5) = 22
    nut = write_mask(folder / "001.png", 254, (3, 10, 5, 9))  # 28 pixels, absolute 10
    small = write_mask(folder / "002.png", 253, (10, 12, 10, 13))  # 6 pixels, absolute 100 -> capped at 6
    (folder / "notes.txt").write_text("ignored")
    regions = load_loco_regions(folder, DEFECTS_CONFIG)
    assert [r.defect_name for r in regions] == ["missing_box", "extra_nut", "tiny"]
    assert [r.saturation for r in regions] == [22.0, 10.0, 6.0]
    for region, expected in zip(regions, (big, nut, small)):
        assert region.mask.dtype == bool
        np.testing.assert_array_equal(region.mask, expected)
    # The path of the JSON file works as well, and the result feeds the metric (overlapping masks 000 and 001).
    config_path = tmp_path / "defects_config.json"
    config_path.write_text(json.dumps(DEFECTS_CONFIG))
    mask, saturation, name = load_loco_regions(folder, config_path)[0]
    assert name == "missing_box" and saturation == 22.0
    maps = np.random.default_rng(0).random((2, 20, 30))
    spro_regions = [SaturatedRegion(0, r.mask, r.saturation) for r in regions]
    assert auspro(spro_regions, maps, 0.05) == pytest.approx(brute_force_auspro(spro_regions, maps, 0.05), abs=1e-12)


def test_load_loco_regions_rejects_bad_files(tmp_path):
    folder = tmp_path / "001"
    folder.mkdir()
    with pytest.raises(DataError, match="no .png"):
        load_loco_regions(folder, DEFECTS_CONFIG)
    write_mask(folder / "000.png", 255, (0, 3, 0, 3))
    write_mask(folder / "001.png", 17, (5, 8, 5, 8))
    with pytest.raises(DataError, match=r"001\.png has pixel value 17"):
        load_loco_regions(folder, DEFECTS_CONFIG)
    write_mask(folder / "001.png", 0, (5, 8, 5, 8))
    with pytest.raises(DataError, match=r"001\.png has no defect pixel"):
        load_loco_regions(folder, DEFECTS_CONFIG)
    two_values = np.zeros((20, 30), dtype=np.uint8)
    two_values[0, 0], two_values[1, 1] = 255, 254
    Image.fromarray(two_values).save(folder / "001.png")
    with pytest.raises(DataError, match="several defect values"):
        load_loco_regions(folder, DEFECTS_CONFIG)
    Image.fromarray(np.full((10, 10), 255, dtype=np.uint8)).save(folder / "001.png")
    with pytest.raises(DataError, match="same folder"):
        load_loco_regions(folder, DEFECTS_CONFIG)
    (folder / "001.png").unlink()
    with pytest.raises(DataError, match="lacks the key"):
        load_loco_regions(folder, [{"defect_name": "x", "pixel_value": 255}])
    with pytest.raises(DataError, match="relative"):
        load_loco_regions(folder, [dict(DEFECTS_CONFIG[0], saturation_threshold=2.0)])
