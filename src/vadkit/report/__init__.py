"""The HTML report of a test run (an app, DESIGN.md): figures, gallery panels and the self-contained page.

- ``plots.py``: ROC / PR / PRO / PIMO curves, score histograms, per-defect bars, as PNG files (matplotlib, no pyplot);
- ``gallery.py``: ``gallery_panel`` (image + ground truth | heatmap | predicted mask, PNG bytes) and ``GalleryItem``;
- ``html.py``: ``write_report``, one HTML file with everything inline;
- ``formatting.py``: metric names and number formatting shared by the tables and the plot titles.

``vadkit.runs.reporting.report_run`` composes them for a run folder (``vadkit report RUN_DIR``). Names are imported
lazily so that ``import vadkit.report`` does not import matplotlib.
"""

from __future__ import annotations

_LAZY = {
    "GalleryItem": "vadkit.report.gallery",
    "gallery_panel": "vadkit.report.gallery",
    "write_report": "vadkit.report.html",
}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vadkit.report' has no attribute {name!r}")
