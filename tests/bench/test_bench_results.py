"""results.md's per-dataset and mean tables, and the Pareto front, against hand computations."""

import itertools

import numpy as np
import pytest

from vadkit.bench.results import MARKDOWN_COLUMNS, columns, markdown, mean_over_datasets
from vadkit.report.plots import pareto_front, plot_pareto


def row(dataset, method, status="done", **values):
    out = dict.fromkeys(columns())
    out.update(dataset=dataset, method=method, backbone="mobilenet_v2", seed=0, status=status, **values)
    return out


ROWS = [row("weld", "patchcore", image_auroc=0.9, pixel_auroc=0.95, fit_s=10.0, macs=2e9),
        row("tiles", "patchcore", image_auroc=0.7, fit_s=30.0, macs=2e9),  # no masks: no pixel metric
        row("weld", "padim", image_auroc=0.8, fit_s=4.0),
        row("tiles", "padim", status="failed", error="DataError: dataset folder x does not exist"),
        row("weld", "stfpm", status="pending")]


def test_mean_over_datasets_takes_done_cells_only():
    means = {m["method"]: m for m in mean_over_datasets(ROWS)}
    assert set(means) == {"patchcore", "padim"}  # stfpm has no done cell
    assert means["patchcore"]["n"] == 2 and means["patchcore"]["image_auroc"] == pytest.approx(0.8)
    assert means["patchcore"]["fit_s"] == pytest.approx(20.0)
    assert means["padim"]["n"] == 1 and means["padim"]["image_auroc"] == pytest.approx(0.8)
    assert means["padim"]["macs"] is None  # no cell has it: not a zero
    assert means["patchcore"]["pixel_auroc"] is None  # one of two datasets has it: not a mean over datasets


def test_markdown_tables():
    text = markdown(ROWS, "study")
    lines = text.splitlines()
    assert lines[0] == "# study"
    assert [line for line in lines if line.startswith("## ")] == ["## weld", "## tiles", "## Mean over datasets"]
    header = next(line for line in lines if line.startswith("| method"))
    assert header.split(" | ")[4:] == list(MARKDOWN_COLUMNS[:-1]) + [MARKDOWN_COLUMNS[-1] + " |"]
    assert "| patchcore | mobilenet_v2 | 0 | done | 0.9000 | 0.9500 |" in text
    assert "| stfpm | mobilenet_v2 | 0 | pending | — |" in text
    assert "- padim / mobilenet_v2 / seed 0: DataError: dataset folder x does not exist" in text
    assert "| patchcore | mobilenet_v2 | 2 | 0.8000 |" in text
    assert "2.00 G" in text


def brute_force_front(x, y):
    keep = []
    for i in range(len(x)):
        dominated = any((x[j] <= x[i] and y[j] > y[i]) or (x[j] < x[i] and y[j] >= y[i]) for j in range(len(x)))
        duplicate_earlier = any(x[j] == x[i] and y[j] == y[i] for j in keep)
        if not dominated and not duplicate_earlier:
            keep.append(i)
    return sorted(keep, key=lambda i: x[i])


@pytest.mark.parametrize("seed", range(6))
def test_pareto_front_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 8, 25).astype(float)  # small integer grids: ties on both axes
    y = rng.integers(0, 6, 25).astype(float)
    front = pareto_front(x, y)
    assert [(x[i], y[i]) for i in front] == [(x[i], y[i]) for i in brute_force_front(x, y)]
    # along the front, cost and score both rise
    assert all(a < b for a, b in itertools.pairwise(x[front])) and all(a < b for a, b in itertools.pairwise(y[front]))


def test_plot_pareto_skips_missing_values(tmp_path):
    from PIL import Image

    points = [("a/m", "a", "m", 10.0, 0.9), ("b/m", "b", "m", 5.0, 0.8), ("c/m", "c", "m", None, 0.99),
              ("d/e", "d", "e", 20.0, None)]
    path = plot_pareto(points, "latency (ms)", "Image AUROC", tmp_path / "p.png", "weld")
    with Image.open(path) as image:
        assert image.size[0] > 400
    empty = plot_pareto([("c", "c", "m", None, 0.9)], "x", "y", tmp_path / "e.png", "none")
    assert empty.is_file()
