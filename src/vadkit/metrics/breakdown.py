"""Every metric per defect type: how well a model finds *cracks* as opposed to *scratches*.

Convention (the one MVTec-style papers and anomalib use for per-defect tables): the metrics of defect type
``d`` are computed on all normal images plus the anomalous images of type ``d``. Each defect type is then
judged against the same false alarms, and a type with few images is not drowned by the others. The normal
images are those with label 0, whatever their ``defect_type`` string says.
"""

from __future__ import annotations

import numpy as np

from vadkit.metrics.curves import ScoreRuns, block_of_sorted, subset_runs
from vadkit.metrics.pimo import DEFAULT_AUPIMO_METHOD
from vadkit.metrics.pixel import pixel_runs
from vadkit.metrics.report import MetricsReport, compute_metrics

__all__ = ["per_defect_metrics"]


def per_defect_metrics(labels, scores, defect_types, masks=None, maps=None,
                       fpr_bounds: tuple[float, float] = (1e-5, 1e-4),
                       aupimo_method: str = DEFAULT_AUPIMO_METHOD,
                       runs: ScoreRuns | None = None) -> dict[str, MetricsReport]:
    """``compute_metrics`` on (normal images + images of one defect type), for each defect type.

    Args:
        labels: (N,) 0/1 image labels. scores: (N,) image scores.
        defect_types: (N,) defect type name of each image (ignored for normal images).
        masks, maps: optional (N, H, W) ground truth and anomaly maps, as for ``compute_metrics``.
        fpr_bounds, aupimo_method: AUPIMO settings, as for ``compute_metrics``.
        runs: the pixels of all ``maps`` already sorted (``pixel.pixel_runs``). The pixels are sorted once for
            all defect types, each type's ranking filtered from it (``curves.subset_runs``), not sorted again.

    Returns:
        defect type -> MetricsReport, in sorted order of the names. Empty when there are no anomalous images.
    """
    labels = np.asarray(labels)
    defect_types = np.asarray(defect_types, dtype=str)
    if len(defect_types) != len(labels):
        raise ValueError(f"defect_types has {len(defect_types)} entries for {len(labels)} images")
    scores = np.asarray(scores)
    normal = labels == 0
    defects = sorted(set(defect_types[~normal].tolist()))
    if masks is not None and defects:
        maps = np.asarray(maps)
        runs = pixel_runs(maps) if runs is None else runs
        block = int(np.prod(maps.shape[1:]))
        sorted_images = block_of_sorted(runs, block)
    reports = {}
    for defect in defects:
        keep = normal | (defect_types == defect)
        kept_runs = None
        if masks is not None:
            kept_runs = subset_runs(runs, maps.ravel(), keep, block, sorted_images)
        reports[defect] = compute_metrics(
            labels[keep], scores[keep],
            None if masks is None else masks[keep], None if maps is None else maps[keep],
            fpr_bounds=fpr_bounds, aupimo_method=aupimo_method, pixel_runs=kept_runs,
        )
    return reports
