"""The HTML report of a test run (an app, docs/architecture.md): figures, gallery panels and the self-contained page.

- ``plots.py``: ROC / PR / PRO / PIMO curves, score histograms, per-defect bars, as PNG files (matplotlib, no pyplot);
- ``gallery.py``: ``gallery_panel`` (image + ground truth | heatmap | predicted mask, PNG bytes) and ``GalleryItem``;
- ``html.py``: ``write_report``, one HTML file with everything inline;
- ``formatting.py``: metric names and number formatting shared by the tables and the plot titles.

``vadkit.runs.reporting.report_run`` composes them for a run folder (``vadkit report RUN_DIR``). Names are imported
lazily so that ``import vadkit.report`` does not import matplotlib.
"""

from __future__ import annotations

from vadkit._lazy import lazy_attributes

_LAZY = {
    "GalleryItem": "vadkit.report.gallery",
    "gallery_panel": "vadkit.report.gallery",
    "write_report": "vadkit.report.html",
}

__all__ = list(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())[0]
