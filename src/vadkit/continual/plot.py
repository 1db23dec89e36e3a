"""r_matrix.png: the R matrix of one metric as a heatmap (rows: after learning task t; columns: tested on task j).

matplotlib is already a vadkit dependency (the HTML report's curves); imported here only when a plot is drawn,
with the non-interactive Agg backend so it works on a headless box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["save_r_heatmap"]


def save_r_heatmap(results, metric: str, path: str | Path) -> Path:
    """Draw ``results.R[metric]`` with its values written in the cells (unseen tasks left blank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(results.R[metric], dtype=float)
    n = len(results.tasks)
    size = 1.2 + 0.7 * n
    figure, axes = plt.subplots(figsize=(size + 1.2, size))
    shown = np.ma.masked_invalid(matrix)
    image = axes.imshow(shown, cmap="viridis", vmin=np.nanmin(matrix) if np.isfinite(matrix).any() else 0.0,
                        vmax=np.nanmax(matrix) if np.isfinite(matrix).any() else 1.0)
    for t in range(n):
        for j in range(n):
            if np.isfinite(matrix[t, j]):
                axes.text(j, t, f"{matrix[t, j]:.3f}", ha="center", va="center", color="white", fontsize=8)
    axes.set_xticks(range(n), results.tasks, rotation=45, ha="right")
    axes.set_yticks(range(n), results.tasks)
    axes.set_xlabel("tested on task")
    axes.set_ylabel("after learning task")
    axes.set_title(f"{metric}: {results.info.get('strategy', '')}")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
