"""Pixel-level AUROC, AUPR and F1-max: the image metrics applied to every pixel of every test image.

Each pixel is one item: its label is the ground-truth mask value (1 = defective) and its score the anomaly
map value. All pixels of all images are pooled into one ranking (the convention of MVTec AD, Bergmann et al.,
CVPR 2019, and of anomalib), so a pixel metric is not the mean of per-image metrics.

The (N, H, W) arrays are flattened with ``np.ravel`` (a view for contiguous arrays, so no copy) and handed to
``image.py``; the only per-pixel copies are the ones the sort needs (see ``curves.py``). Maps stay in their
own dtype: float32 maps are not promoted to float64.
"""

from __future__ import annotations

import numpy as np

from vadkit.metrics.curves import (ScoreRuns, binary_clf_curve_of_valid, sort_score_runs, validate_labels,
                                   validate_scores)
from vadkit.metrics.image import aupr_from_curve, auroc_from_curve, f1_max_from_curve

__all__ = ["as_mask_and_map_stacks", "pixel_aupr", "pixel_auroc", "pixel_clf_curve", "pixel_f1_max", "pixel_runs"]


def as_mask_and_map_stacks(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    """Check that masks and maps are (N, H, W) arrays of the same shape; a single (H, W) pair becomes N=1.

    Returns the arrays as given (no copy, no validation of values: see ``pixel_clf_curve``).
    """
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.shape != maps.shape:
        raise ValueError(
            f"masks have shape {masks.shape} but maps have shape {maps.shape}; they must be equal (N, H, W) "
            "arrays (resize maps to the mask resolution, or masks with nearest-neighbour interpolation)."
        )
    if masks.ndim == 2:
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3:
        raise ValueError(f"masks and maps must be (N, H, W) arrays (or one (H, W) pair), got shape {masks.shape}.")
    return masks, maps


def pixel_runs(maps) -> ScoreRuns:
    """All pixels of an (N, H, W) stack of maps sorted once (descending) into runs of tied values: the ranking
    every pixel metric shares (:func:`pixel_clf_curve`, ``pro_curve``), for all images or, through
    ``curves.subset_runs``, for a subset of them."""
    maps = np.asarray(maps)
    return sort_score_runs(validate_scores(maps.ravel(), name="maps (flattened)"))


def pixel_clf_curve(masks, maps, runs: ScoreRuns | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``binary_clf_curve`` over all pixels: ``(fps, tps, thresholds)`` in pixel counts (``runs``: the maps'
    :func:`pixel_runs`, when already sorted)."""
    masks, maps = as_mask_and_map_stacks(masks, maps)
    labels = validate_labels(masks.ravel(), name="masks")
    if runs is None:
        return binary_clf_curve_of_valid(labels, validate_scores(maps.ravel(), name="maps (flattened)"))
    if runs.n_items != labels.size:
        raise ValueError(f"the sorted pixels ({runs.n_items}) are not these maps' {labels.size} pixels")
    tps = runs.cumulative(labels)
    return runs.counts - tps, tps, runs.thresholds


def pixel_auroc(masks, maps) -> float:
    """Pixel AUROC.

    Args:
        masks: (N, H, W) bool or 0/1 ground truth, 1 = defective pixel.
        maps: (N, H, W) finite anomaly maps at mask resolution, higher = more anomalous.

    Raises:
        ValueError: shapes differ or are not (N, H, W); mask values other than 0/1; NaN/inf in maps.
        UndefinedMetricError: no defective pixel, or no normal pixel.
    """
    fps, tps, _ = pixel_clf_curve(masks, maps)
    return auroc_from_curve(fps, tps, unit="pixels")


def pixel_aupr(masks, maps) -> float:
    """Pixel average precision. Same arguments and errors as ``pixel_auroc``."""
    fps, tps, _ = pixel_clf_curve(masks, maps)
    return aupr_from_curve(fps, tps, unit="pixels")


def pixel_f1_max(masks, maps) -> float:
    """Best pixel F1 over all thresholds. Same arguments and errors as ``pixel_auroc``."""
    fps, tps, thresholds = pixel_clf_curve(masks, maps)
    return f1_max_from_curve(fps, tps, thresholds, unit="pixels")[0]
