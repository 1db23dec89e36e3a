"""How the report writes metric names and values: one place, so tables and plot titles agree.

A registered metric is written with its registry label (``vadkit.metrics.registry``); other keys (run facts) are
spelled out from their words.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["format_value", "metric_label"]

_ACRONYMS = {"auroc": "AUROC", "aupr": "AUPR", "aupro": "AU-PRO", "aupimo": "AUPIMO", "auspro": "AU-sPRO",
             "f1": "F1", "fpr": "FPR", "tpr": "TPR", "pro": "PRO", "ap": "AP", "iou": "IoU", "ms": "ms",
             "gb": "GB", "mb": "MiB", "rss": "RSS", "macs": "MACs", "tp": "TP", "fp": "FP", "tn": "TN", "fn": "FN"}
_KNOWN = {"vadkit": "vadkit"}  # keys that are not metrics and that the word rule would spell wrongly


def metric_label(key: str) -> str:
    """A readable name for a metrics.json key: a metric's registry label (``pixel_aupro`` -> ``Pixel AU-PRO (FPR ≤
    0.3)``), else ``image_auroc``-style words (``n_test`` -> ``N test``); other text is kept."""
    from vadkit.metrics import registry

    if key in registry.keys():
        return registry.get(key).label
    if key in _KNOWN:
        return _KNOWN[key]
    if not key.replace("_", "").isalnum() or key != key.lower():
        return key  # already prose ("test images") or a name we do not know how to improve
    words = [_ACRONYMS.get(word, word) for word in key.split("_") if word]
    if words and words[0] == words[0].lower():
        words[0] = words[0].capitalize()
    return " ".join(words)


def format_value(value: object, digits: int = 4) -> str:
    """Numbers with ``digits`` decimals (scientific below 1e-3, thousands separators above 1e4), None/NaN as an
    em dash, booleans as yes/no, anything else with ``str``."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return f"{int(value):,}" if abs(int(value)) >= 10_000 else str(int(value))
    if isinstance(value, Real):
        number = float(value)
        if math.isnan(number):
            return "—"
        if math.isinf(number):
            return "∞" if number > 0 else "-∞"
        if number != 0 and abs(number) < 1e-3:
            return f"{number:.2e}"
        if abs(number) >= 1e4:
            return f"{number:,.1f}"
        return f"{number:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v, digits) for v in value)
    return str(value)
