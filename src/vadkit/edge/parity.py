"""Parity of an exported bundle with the PyTorch model it came from, on real images.

anomalib's commonest complaint is an exported model whose outputs differ from the PyTorch ones; here the
difference is measured, not assumed. Both sides read the same files through the same preprocessing; the
differences are reported absolute and relative to the output's scale (the largest absolute score, the
largest absolute map value), which is what a threshold compares against. The tests hold every method to
:data:`PARITY_TOLERANCE` in fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: largest relative difference accepted between an fp32 export and its PyTorch model
PARITY_TOLERANCE = 1e-4


def compare_outputs(reference_scores: np.ndarray, reference_maps: np.ndarray, scores: np.ndarray,
                    maps: np.ndarray) -> dict[str, float]:
    """Largest absolute and relative (to the reference's largest magnitude) differences of scores and maps."""
    reference_scores, scores = np.asarray(reference_scores, np.float64), np.asarray(scores, np.float64)
    reference_maps, maps = np.asarray(reference_maps, np.float64), np.asarray(maps, np.float64)
    if reference_scores.shape != scores.shape or reference_maps.shape != maps.shape:
        raise ValueError(f"shapes differ: scores {reference_scores.shape} vs {scores.shape}, maps "
                         f"{reference_maps.shape} vs {maps.shape}")
    score_abs = float(np.abs(scores - reference_scores).max())
    map_abs = float(np.abs(maps - reference_maps).max())
    return {
        "score_max_abs": score_abs,
        "score_max_rel": score_abs / max(float(np.abs(reference_scores).max()), np.finfo(np.float32).tiny),
        "map_max_abs": map_abs,
        "map_max_rel": map_abs / max(float(np.abs(reference_maps).max()), np.finfo(np.float32).tiny),
    }


def check_parity(model, bundle: str | Path, images: Sequence[str | Path], *, batch_size: int = 8,
                 threads: int | None = None) -> dict[str, Any]:
    """Run ``model`` (PyTorch) and the bundle (onnxruntime) on ``images`` (paths); returns the differences of
    :func:`compare_outputs`, ``labels_agree`` (the share of images given the same label, None without a
    threshold), ``n_images``, ``within_tolerance`` and ``tolerance``."""
    from vadkit.edge.runtime import Runtime

    paths = [Path(p) for p in images]
    if not paths:
        raise ValueError("check_parity needs at least one image")
    reference = model.predict(paths, batch_size=batch_size, progress=False)
    results = Runtime(bundle, threads=threads).predict(paths, batch_size=batch_size)
    scores = np.array([r["score"] for r in results])
    maps = np.stack([r["map"] for r in results])
    report: dict[str, Any] = {"n_images": len(paths), **compare_outputs(reference.scores, reference.maps, scores, maps)}
    labels = [r["label"] for r in results]
    report["labels_agree"] = (None if reference.labels is None or None in labels
                              else float(np.mean(np.asarray(labels) == reference.labels)))
    report["tolerance"] = PARITY_TOLERANCE
    report["within_tolerance"] = bool(report["score_max_rel"] <= PARITY_TOLERANCE
                                      and report["map_max_rel"] <= PARITY_TOLERANCE)
    return report
