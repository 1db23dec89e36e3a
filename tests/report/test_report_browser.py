"""The report in a real browser (headless Chromium): gallery renders, sorting and filtering work, nothing is fetched.

Needs playwright (Python package) and Debian's chromium; skipped with the reason otherwise.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import open_watched
from vadkit.report.gallery import GalleryItem, gallery_panel
from vadkit.report.html import write_report

pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")

# (name, label, predicted): 3 TP, 2 FP, 2 FN, 3 TN
SPECS = [("img_03.png", 1, 1), ("img_10.png", 0, 1), ("img_01.png", 1, 0), ("img_07.png", 0, 0),
         ("img_02.png", 1, 1), ("img_09.png", 0, 0), ("img_05.png", 1, 0), ("img_04.png", 0, 1),
         ("img_08.png", 1, 1), ("img_06.png", 0, 0)]


def write_sample(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:64, 0:64]
    items = []
    for i, (name, label, predicted) in enumerate(SPECS):
        image = np.clip(np.stack([120 + 60 * np.sin(x / 4 + i), 100 + 0 * y, 90 + y], -1), 0, 255).astype(np.uint8)
        mask = ((x - 30) ** 2 + (y - 30) ** 2 < 80) if label else np.zeros((64, 64), bool)
        anomaly_map = (np.exp(-((x - 30) ** 2 + (y - 30) ** 2) / 60) * (0.3 + label) + 0.1 * rng.random((64, 64)))
        items.append(GalleryItem(name=name, defect_type="hole" if label else "good", label=label, predicted=predicted,
                                 score=float(rng.uniform(0, 10)), aupimo=0.4 if label else None,
                                 png=gallery_panel(image, anomaly_map, mask, 0.6, 0.0, 1.4)))
    plot = folder / "plot.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 120, dtype=np.uint8)[None, :, None], (80, 1, 3))).save(plot)
    return write_report(folder / "report.html", title="Browser test report",
                        summary={"model": "padim", "data": "synthetic", "image_auroc": 0.8, "threshold": 0.6},
                        intervals={"image_auroc": (0.7, 0.9)}, per_defect={"hole": {"image_auroc": 0.8}},
                        threshold_table=[{"operating point": "calibrated", "threshold": 0.6}],
                        plots={"A plot": plot}, gallery=items, notes=["a note"])


def visible_scores(page) -> list[float]:
    return page.eval_on_selector_all("#gallery-grid .card:not([hidden])", "cs => cs.map(c => +c.dataset.score)")


def test_report_in_headless_chromium(browser, tmp_path):
    report = write_sample(tmp_path)
    context, page, problems, requests = open_watched(browser, report)

    cards = page.locator("#gallery-grid .card")
    assert cards.count() == len(SPECS)
    cards.first.wait_for(state="visible")
    images = page.locator("#gallery-grid .card img")
    for index in range(images.count()):  # lazy images: bring each into view, then it must decode
        images.nth(index).scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=images.nth(index).element_handle())
    assert page.eval_on_selector_all("main img", "xs => xs.length > 0 && xs.every(x => x.naturalWidth > 0)") is True

    page.click("#sort-score-asc")
    ascending = visible_scores(page)
    assert ascending == sorted(ascending) and len(ascending) == len(SPECS)
    page.click("#sort-score-desc")
    assert visible_scores(page) == sorted(ascending, reverse=True)
    assert page.get_attribute("#sort-score-desc", "aria-pressed") == "true"
    assert page.get_attribute("#sort-score-asc", "aria-pressed") == "false"
    page.click("#sort-name")
    names = page.eval_on_selector_all("#gallery-grid .card", "cs => cs.map(c => c.dataset.name)")
    assert names == sorted(name for name, _, _ in SPECS)

    page.click("#filter-fp")
    expected_fp = sum(label == 0 and predicted == 1 for _, label, predicted in SPECS)
    outcomes = page.eval_on_selector_all("#gallery-grid .card", "cs => cs.filter(c => c.offsetParent !== null)"
                                                                ".map(c => c.dataset.outcome)")
    assert outcomes == ["FP"] * expected_fp
    count = page.locator("#gallery-count")
    assert count.get_attribute("data-visible") == str(expected_fp)
    assert count.inner_text().startswith(f"{expected_fp} of {len(SPECS)}")
    page.click("#filter-errors")
    assert sorted(page.eval_on_selector_all("#gallery-grid .card:not([hidden])", "cs => cs.map(c => c.dataset.outcome)")
                  ) == ["FN", "FN", "FP", "FP"]
    page.click("#filter-normal")
    assert count.get_attribute("data-visible") == str(sum(label == 0 for _, label, _ in SPECS))
    page.click("#filter-all")
    assert count.get_attribute("data-visible") == str(len(SPECS))

    page.locator("#gallery-grid .card .zoom").first.click()  # the enlarged view opens and closes
    assert page.locator("#viewer").is_visible()
    page.locator("#viewer").click()
    assert not page.locator("#viewer").is_visible()

    page.locator("#gallery").scroll_into_view_if_needed()
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (900, 1280)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100 and pixels.std() > 20

    context.close()
    assert problems == []
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), requests
