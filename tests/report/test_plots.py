"""Report figures: real PNGs of the documented size, whose pixels follow the data, and no global matplotlib state."""

import ast
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from vadkit.metrics import aupimo, pimo_curves
from vadkit.report import plots

SIZE = (480, 360)


def pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        image.load()
        return np.asarray(image.convert("RGB"))


def assert_png(path, size=SIZE) -> np.ndarray:
    assert path.is_file()
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
    array = pixels(path)
    assert len(np.unique(array.reshape(-1, 3), axis=0)) > 10, "a blank figure"
    assert path.stat().st_size < 80_000, "report figures must stay small"
    return array


def roc_of(scores, labels):
    from vadkit.metrics import binary_clf_curve

    fps, tps, _ = binary_clf_curve(labels, scores)
    return np.r_[0, fps / fps[-1]], np.r_[0, tps / tps[-1]]


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_every_plot_writes_a_png_that_follows_its_data(tmp_path, rng):
    labels = np.r_[np.zeros(50), np.ones(30)].astype(int)
    good = rng.normal(labels * 3.0, 1.0)
    bad = rng.normal(labels * 0.2, 1.0)
    curves = {name: roc_of(scores, labels) for name, scores in (("good", good), ("bad", bad))}
    x = np.linspace(0, 1, 101)
    shared_fpr = np.logspace(-6, -3, 200)
    ramp = (np.log10(shared_fpr) + 6) / 3
    cases = {
        "roc": lambda tag, s: plots.plot_roc(*curves[tag], 0.9 if tag == "good" else 0.5, tmp_path / f"roc_{tag}.png"),
        "pr": lambda tag, s: plots.plot_pr(x, 1 - s * x, 0.7, tmp_path / f"pr_{tag}.png", baseline=0.375),
        "pro": lambda tag, s: plots.plot_pro(x, x ** s, 0.6, 0.3, tmp_path / f"pro_{tag}.png"),
        "pimo": lambda tag, s: plots.plot_pimo(shared_fpr, np.clip(ramp[None] * rng.uniform(s / 2, s, (12, 1)), 0, 1),
                                               (1e-5, 1e-4), tmp_path / f"pimo_{tag}.png"),
        "hist": lambda tag, s: plots.plot_score_histogram(good if tag == "good" else bad, labels, 0.5,
                                                          tmp_path / f"hist_{tag}.png"),
    }
    for name, draw in cases.items():
        first = assert_png(draw("good", 0.3))
        second = assert_png(draw("bad", 0.9))
        changed = np.any(first != second, axis=2).mean()
        assert changed > 0.005, f"{name}: the figure does not depend on its data"


def test_pro_plot_shows_only_the_integrated_range(tmp_path):
    # Identical up to the FPR limit, different beyond it: the pictures must be identical.
    fpr = np.linspace(0, 1, 201)
    pro = np.sqrt(fpr)
    other = np.where(fpr <= 0.3, pro, 1.0 - fpr)
    a = assert_png(plots.plot_pro(fpr, pro, 0.5, 0.3, tmp_path / "a.png"))
    b = assert_png(plots.plot_pro(fpr, other, 0.5, 0.3, tmp_path / "b.png"))
    assert np.array_equal(a, b)
    c = assert_png(plots.plot_pro(fpr, pro, 0.5, 0.05, tmp_path / "c.png"))
    assert not np.array_equal(a, c)


def test_histogram_threshold_line_and_uncalibrated(tmp_path, rng):
    scores, labels = rng.normal(size=40), np.r_[np.zeros(20), np.ones(20)]
    with_line = assert_png(plots.plot_score_histogram(scores, labels, 0.0, tmp_path / "t.png"))
    moved = assert_png(plots.plot_score_histogram(scores, labels, 1.0, tmp_path / "m.png"))
    without = assert_png(plots.plot_score_histogram(scores, labels, None, tmp_path / "n.png"))
    assert not np.array_equal(with_line, moved)
    assert not np.array_equal(with_line, without)
    only_normal = assert_png(plots.plot_score_histogram(scores, np.zeros(40), None, tmp_path / "o.png"))
    assert only_normal.shape == with_line.shape
    with pytest.raises(ValueError, match="equal length"):
        plots.plot_score_histogram(scores, labels[:-1], None, tmp_path / "x.png")


def test_per_defect_bars(tmp_path):
    per_defect = {"scratch": {"image_auroc": 0.9}, "hole": {"image_auroc": 0.6}, "crack": {"pixel_aupro": 0.5}}
    three = assert_png(plots.plot_per_defect(per_defect, "image_auroc", tmp_path / "a.png"))
    changed = {**per_defect, "hole": {"image_auroc": 0.95}}
    assert not np.array_equal(three, assert_png(plots.plot_per_defect(changed, "image_auroc", tmp_path / "b.png")))
    many = {f"defect_{i}": {"image_auroc": i / 20} for i in range(20)}
    path = plots.plot_per_defect(many, "image_auroc", tmp_path / "c.png")
    with Image.open(path) as image:
        assert image.width == SIZE[0] and image.height > SIZE[1]  # grows with the number of bars
    with pytest.raises(ValueError, match="no defect type"):
        plots.plot_per_defect(per_defect, "aupimo_mean", tmp_path / "d.png")


def test_pimo_title_estimate_matches_exact_aupimo():
    rng = np.random.default_rng(3)
    maps = rng.normal(size=(14, 64, 64))
    masks = np.zeros(maps.shape, bool)
    for i in range(10, 14):
        masks[i, 10:30, 20:40] = True
        maps[i][masks[i]] += rng.uniform(1.0, 4.0)
    bounds = (1e-3, 1e-2)
    curves = pimo_curves(masks, maps, fpr_bounds=bounds)
    exact = aupimo(masks, maps, fpr_bounds=bounds).mean
    anomalous = curves.image_classes == 1
    estimate = plots._mean_aupimo_estimate(curves.shared_fpr, curves.per_image_tpr[anomalous], *bounds)
    assert estimate == pytest.approx(exact, abs=0.01)
    assert 0.05 < exact < 0.95  # a non-trivial case


def test_curve_input_validation(tmp_path):
    with pytest.raises(ValueError, match="equal length"):
        plots.plot_roc([0, 1], [0, 0.5, 1], 0.5, tmp_path / "x.png")
    with pytest.raises(ValueError, match="fpr_limit"):
        plots.plot_pro([0, 1], [0, 1], 0.5, 0.0, tmp_path / "x.png")
    with pytest.raises(ValueError, match="per_image_tpr"):
        plots.plot_pimo([1e-5, 1e-4], np.zeros((3, 5)), (1e-5, 1e-4), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_no_global_matplotlib_state(tmp_path):
    before = dict(matplotlib.rcParams)
    plots.plot_roc([0, 0.5, 1], [0, 0.8, 1], 0.8, tmp_path / "r.png")
    plots.plot_per_defect({"a": {"m": 0.5}}, "m", tmp_path / "p.png")
    assert dict(matplotlib.rcParams) == before
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []
    tree = ast.parse(Path(plots.__file__).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {f"{node.module}.{alias.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 for alias in node.names}
    assert not any("pyplot" in name for name in imported), "plots must not use pyplot's global figure registry"
