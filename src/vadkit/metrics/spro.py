"""sPRO and AU-sPRO: the saturated per-region overlap of MVTec LOCO AD (Bergmann, Batzner, Fauser, Sattlegger,
Steger, "Beyond Dents and Scratches: Logical Constraints in Unsupervised Anomaly Detection and Localization", IJCV
2022; official evaluation code "MVTec LOCO AD evaluation", src/image.py, src/metrics.py, src/util.py).

Why saturation: a logical anomaly (a missing object, a wrong count) is annotated by the whole area where the object
could be, and a model need not flag all of it to have found it. Each ground-truth region ``i`` therefore has a
saturation area ``s_i`` in pixels: once ``s_i`` of its pixels are flagged the region counts as fully found.

Definition (pixel flagged when ``score >= t``):

- ``sPRO(t)`` = mean over all regions of ``min(|{p in region_i : score_p >= t}| / s_i, 1)``;
- ``FPR(t)`` = flagged fraction of the normal pixels. As in the official code, a normal pixel is a pixel in no region,
  pooled over *all* evaluated images: the defect-free pixels of anomalous images count, not only those of good
  images (``get_fp_areas_for_thresholds`` ORs the channels of an anomalous image and counts the rest). ``normal_mask``
  overrides this, e.g. to count good images only;
- AU-sPRO is the area under sPRO against FPR from (0, 0) up to ``fpr_limit`` (LOCO reports 0.05 and 0.3 among
  others), divided by ``fpr_limit``. The cut uses linear interpolation at the limit, as the official ``trapz`` does.

Regions are a list, not a label image: in LOCO each defect is one PNG file, and the masks of two defects of one image
may overlap. A pixel in two regions counts for both.

Saturation, as in the official ``GroundTruthChannel.get_saturation_area``: an absolute threshold is capped at the
region's area (``min(threshold, area)``), and a relative one is ``int(fraction * area)`` pixels (rounded down).
``spro_curve`` applies the same cap to any ``SaturatedRegion``, so ``saturation >= area`` is plain PRO for that region.

Why this is exact and fast: with region i's pixels ranked by descending score, flagging its k-th pixel raises its
sPRO by ``min(k / s_i, 1) - min((k - 1) / s_i, 1)``: ``1 / s_i`` for the first ``floor(s_i)`` pixels, the remainder
for the next one, 0 after. A region's sPRO is then a cumulative sum of per-pixel weights in score order, like PRO
(``pro.py``), just with rank-dependent weights. Tied scores inside a region are flagged together, so the order of
ties does not change the sum at a run's end, the only place the curve is evaluated. One sort of all (region, pixel)
entries and normal pixels (``curves.sort_score_runs``) gives the whole curve at every distinct score. ``auspro`` sorts
only the scores above the one where the FPR passes ``fpr_limit`` (found with ``np.partition``): the curve up to
there depends on nothing below, so the area is unchanged and 0.05 sorts about 5% of the pixels. The official
script instead refines a threshold grid until the curve is dense, which approximates this curve and uses
``score > t``; the set of curve points is the same at every distinct score.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vadkit.errors import DataError, UndefinedMetricError
from vadkit.metrics.curves import sort_score_runs, validate_labels, validate_scores
from vadkit.metrics.pro import area_up_to

__all__ = ["LocoRegion", "SaturatedRegion", "auspro", "load_loco_regions", "spro_curve"]


@dataclass(frozen=True)
class SaturatedRegion:
    """One ground-truth defect region with its saturation area.

    Attributes:
        image_index: index of the image (first axis of ``maps``) the region belongs to.
        mask: (H, W) bool or 0/1, True on the region's pixels (need not be connected).
        saturation: pixels that must be flagged for the region to count as fully found; > 0, capped at the region's
            area. Need not be an integer.
    """

    image_index: int
    mask: np.ndarray
    saturation: float


class LocoRegion(NamedTuple):
    """A defect read by ``load_loco_regions``: its mask, saturation area in pixels and defect name."""

    mask: np.ndarray
    saturation: float
    defect_name: str


def _region_entries(regions, image_shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat pixel indices of every (region, pixel) entry, the region of each entry, and each region's saturation."""
    n_images, height, width = image_shape
    flat_indices, region_of_entry, saturations = [], [], []
    for r, region in enumerate(regions):  # regions are user objects: one pass each, no pixel loop
        if not isinstance(region, SaturatedRegion):
            raise ValueError(f"regions[{r}] is a {type(region).__name__}, expected a SaturatedRegion.")
        index = region.image_index
        if int(index) != index or not 0 <= index < n_images:
            raise ValueError(f"regions[{r}].image_index is {index!r}, but maps hold {n_images} images.")
        mask = np.asarray(region.mask)
        if mask.shape != (height, width):
            raise ValueError(f"regions[{r}].mask has shape {mask.shape}, but the maps are {height} x {width}.")
        pixels = np.flatnonzero(validate_labels(mask.ravel(), name=f"regions[{r}].mask"))
        if pixels.size == 0:
            raise ValueError(f"regions[{r}] (image {index}) is empty: a region needs at least one pixel.")
        saturation = float(region.saturation)
        if not (math.isfinite(saturation) and saturation > 0):
            raise ValueError(f"regions[{r}].saturation must be a finite number > 0 pixels, got {region.saturation!r}.")
        flat_indices.append(pixels + int(index) * height * width)
        region_of_entry.append(np.full(pixels.size, r, dtype=np.int64))
        saturations.append(min(saturation, float(pixels.size)))
    return np.concatenate(flat_indices), np.concatenate(region_of_entry), np.array(saturations)


def _entry_weights(scores: np.ndarray, region_of_entry: np.ndarray, saturations: np.ndarray) -> np.ndarray:
    """Per-entry sPRO increments: rank entries by descending score inside each region, weight by saturation."""
    order = np.lexsort((-scores.astype(np.float64), region_of_entry))  # by region, then descending score
    sorted_regions = region_of_entry[order]
    region_start = np.searchsorted(sorted_regions, sorted_regions, side="left")
    rank = np.arange(1, order.size + 1) - region_start  # 1-based rank inside the region
    s = saturations[sorted_regions]
    increments = np.minimum(rank / s, 1.0) - np.minimum((rank - 1) / s, 1.0)
    weights = np.empty(order.size)
    weights[order] = increments
    return weights


def spro_curve(regions, maps, normal_mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact sPRO curve at every distinct score of the normal and region pixels, thresholds descending.

    Args:
        regions: sequence of ``SaturatedRegion``; several may cover the same pixel.
        maps: (N, H, W) finite anomaly maps (a single (H, W) map is accepted as N=1).
        normal_mask: optional (N, H, W) bool or 0/1, the pixels the FPR is computed on. Default: every pixel in no
            region (the official LOCO definition).

    Returns:
        ``(fpr, spro, thresholds)``, each (k,); ``(0, 0)`` is not included. The last point is (1, 1).

    Raises:
        UndefinedMetricError: no region, or no normal pixel.
        ValueError: invalid region (image index, shape, empty mask, saturation <= 0), normal_mask of another shape or
            with values other than 0/1, NaN/inf in maps.
    """
    return _spro_curve(regions, maps, normal_mask, fpr_limit=None)


def _spro_curve(regions, maps, normal_mask, fpr_limit: float | None):
    """``spro_curve``; with ``fpr_limit``, only up to the first point with FPR > fpr_limit (all ``area_up_to`` needs).

    Truncating is exact: the curve prefix down to a threshold depends only on the scores at or above it, and the
    saturation weights are computed from every region pixel before truncating. Only the normal scores need a
    selection (``np.partition``, O(n)) to find the cut, so AU-sPRO up to 0.05 sorts about 5% of the pixels.
    """
    maps = np.asarray(maps)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"maps must be an (N, H, W) array (or one (H, W) map), got shape {maps.shape}.")
    flat_maps = validate_scores(maps.ravel(), name="maps (flattened)")
    regions = list(regions)
    if not regions:
        raise UndefinedMetricError("AU-sPRO is undefined: there is no ground-truth region.")
    entry_pixels, region_of_entry, saturations = _region_entries(regions, maps.shape)

    if normal_mask is None:
        normal = np.ones(flat_maps.size, dtype=bool)
        normal[entry_pixels] = False
    else:
        normal_mask = np.asarray(normal_mask)
        if normal_mask.ndim == 2:
            normal_mask = normal_mask[None]
        if normal_mask.shape != maps.shape:
            raise ValueError(f"normal_mask has shape {normal_mask.shape} but maps have shape {maps.shape}.")
        normal = validate_labels(normal_mask.ravel(), name="normal_mask")
    normal_scores = flat_maps[normal]
    n_normal = normal_scores.size
    if n_normal == 0:
        raise UndefinedMetricError(
            "AU-sPRO is undefined: there is no normal pixel, so the false positive rate is undefined."
        )

    entry_scores = flat_maps[entry_pixels]
    weights = _entry_weights(entry_scores, region_of_entry, saturations)
    n_entries = entry_scores.size
    if fpr_limit is not None:
        # Smallest count of flagged normal pixels whose FPR exceeds the limit; the curve is cut at that count's score.
        beyond = math.floor(fpr_limit * n_normal) + 1
        while beyond > 1 and (beyond - 1) / n_normal > fpr_limit:
            beyond -= 1
        while beyond <= n_normal and beyond / n_normal <= fpr_limit:
            beyond += 1
        if beyond <= n_normal:
            cut = np.partition(normal_scores, n_normal - beyond)[n_normal - beyond]
            normal_scores = normal_scores[normal_scores >= cut]
            keep = entry_scores >= cut
            entry_scores, weights = entry_scores[keep], weights[keep]

    # One ranking of normal pixels (false positives) and region entries (sPRO weights). The per-run totals of the
    # entries come from their run index (binary search among the distinct scores) and np.bincount, so no
    # pixel-sized float64 array is built.
    runs = sort_score_runs(np.concatenate((normal_scores, entry_scores)))
    ascending = runs.thresholds[::-1]
    run_of_entry = len(ascending) - 1 - np.searchsorted(ascending, entry_scores, side="left")
    entries_per_run = np.bincount(run_of_entry, minlength=len(ascending))
    entries_flagged = np.cumsum(entries_per_run)
    false_positives = runs.counts - entries_flagged
    spro = np.cumsum(np.bincount(run_of_entry, weights=weights, minlength=len(ascending))) / len(regions)
    # Once every entry is flagged sPRO is exactly 1; the float sum of weights can miss it by ~1e-15.
    spro[entries_flagged == n_entries] = 1.0
    return false_positives / n_normal, spro, runs.thresholds


def auspro(regions, maps, fpr_limit: float = 0.3, normal_mask=None) -> float:
    """Normalised area under the sPRO curve from FPR 0 to ``fpr_limit``, in [0, 1] (see module docstring).

    Args:
        regions: sequence of ``SaturatedRegion`` (see ``load_loco_regions`` for MVTec LOCO ground truth).
        maps: (N, H, W) finite anomaly maps at mask resolution, higher = more anomalous.
        fpr_limit: upper integration limit of the false positive rate, in (0, 1]; LOCO reports 0.05 and 0.3.
        normal_mask: optional override of the pixels the FPR is computed on (see ``spro_curve``).

    Raises:
        UndefinedMetricError: no region, or no normal pixel.
        ValueError: bad ``fpr_limit``, invalid regions or inputs (see ``spro_curve``).
    """
    fpr_limit = float(fpr_limit)
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}.")
    fpr, spro, _ = _spro_curve(regions, maps, normal_mask, fpr_limit=fpr_limit)
    fpr = np.concatenate(([0.0], fpr))
    spro = np.concatenate(([0.0], spro))
    return min(1.0, max(0.0, area_up_to(fpr, spro, fpr_limit) / fpr_limit))


def _parse_defects_config(defects_config) -> dict[int, dict]:
    """``pixel_value -> entry`` from the parsed ``defects_config.json`` list (or a path to that file)."""
    source = "defects_config"
    if isinstance(defects_config, (str, os.PathLike)):
        source = str(defects_config)
        try:
            defects_config = json.loads(Path(defects_config).read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read the defects config {source}: {error}") from error
    by_value = {}
    for position, entry in enumerate(defects_config):
        missing = {"defect_name", "pixel_value", "saturation_threshold", "relative_saturation"} - set(entry)
        if missing:
            raise DataError(f"{source} entry {position} lacks the key(s) {sorted(missing)}.")
        threshold = entry["saturation_threshold"]
        if entry["relative_saturation"] and not 0 < threshold <= 1:
            raise DataError(
                f"{source} entry {position} ({entry['defect_name']}) has a relative saturation_threshold of "
                f"{threshold}; a relative threshold must be in (0, 1]."
            )
        if not entry["relative_saturation"] and not threshold > 0:
            raise DataError(
                f"{source} entry {position} ({entry['defect_name']}) has a saturation_threshold of {threshold}; "
                "it must be > 0 pixels."
            )
        by_value[int(entry["pixel_value"])] = entry
    return by_value


def load_loco_regions(ground_truth_folder, defects_config) -> list[LocoRegion]:
    """Read the ground truth of one MVTec LOCO test image: one region per PNG file in its folder.

    Args:
        ground_truth_folder: e.g. ``<category>/ground_truth/logical_anomalies/000/``, holding ``000.png``,
            ``001.png``, ... (read in sorted order), each with one non-zero pixel value that identifies its defect type.
        defects_config: the parsed ``<category>/defects_config.json`` (a list of dicts with ``defect_name``,
            ``pixel_value``, ``saturation_threshold``, ``relative_saturation``), or the path to that file.

    Returns:
        A list of ``LocoRegion(mask, saturation, defect_name)``: ``mask`` (H, W) bool; ``saturation`` in pixels as the
        official evaluation computes it: ``int(fraction * area)`` for a relative threshold (at least 1 pixel, where
        the official code would divide by zero), ``min(threshold, area)`` for an absolute one. Build the metric's
        input with ``[SaturatedRegion(i, r.mask, r.saturation) for r in load_loco_regions(folder_i, config)]``.

    Raises:
        DataError: the folder has no PNG; a mask has no defect pixel, several non-zero values, a pixel value absent
            from the config, or another size than the first mask; the config is malformed.
    """
    from PIL import Image  # deferred: only this loader needs Pillow

    folder = Path(ground_truth_folder)
    by_value = _parse_defects_config(defects_config)
    files = sorted(folder.glob("*.png"))
    if not files:
        raise DataError(f"{folder} holds no .png mask: expected one mask file per defect (000.png, 001.png, ...).")
    regions: list[LocoRegion] = []
    for file in files:
        try:
            with Image.open(file) as image:
                values = np.asarray(image)
        except OSError as error:
            raise DataError(f"cannot read the mask {file}: {error}") from error
        if values.ndim == 3:
            if not (values == values[..., :1]).all():
                raise DataError(f"{file} is a colour image with differing channels; LOCO masks are grayscale.")
            values = values[..., 0]
        if regions and values.shape != regions[0].mask.shape:
            raise DataError(
                f"{file} is {values.shape}, but {files[0].name} in the same folder is {regions[0].mask.shape}."
            )
        present = np.unique(values)
        present = present[present != 0]
        if present.size == 0:
            raise DataError(f"{file} has no defect pixel (every value is 0).")
        if present.size > 1:
            raise DataError(f"{file} has several defect values {present.tolist()}; a LOCO mask holds one defect.")
        value = int(present[0])
        if value not in by_value:
            raise DataError(
                f"{file} has pixel value {value}, which defects_config does not list (known values: "
                f"{sorted(by_value)}); check that the config belongs to this category."
            )
        entry = by_value[value]
        mask = values != 0
        area = int(mask.sum())
        if entry["relative_saturation"]:
            saturation = float(max(1, int(entry["saturation_threshold"] * area)))
        else:
            saturation = float(min(entry["saturation_threshold"], area))
        regions.append(LocoRegion(mask=mask, saturation=saturation, defect_name=str(entry["defect_name"])))
    return regions
