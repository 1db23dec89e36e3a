"""The study's index.html in headless Chromium: tables, Pareto plots, links to every cell, nothing fetched."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import open_watched

pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install playwright")


def test_index_page_in_headless_chromium(browser, study, tmp_path):
    _, out, result = study
    index = out / "index.html"
    context, page, problems, requests = open_watched(browser, index)

    tables = page.eval_on_selector_all("table.results", "ts => ts.map(t => t.dataset.dataset)")
    assert tables == ["tiny", "broken"]
    states = page.eval_on_selector_all("table.results tbody tr", "rs => rs.map(r => r.dataset.status)")
    assert states == [row["status"] for row in result.rows]
    # every finished row links to something that exists: the cell's report, or the failed cell's log
    links = page.eval_on_selector_all("table.results a", "as => as.map(a => a.getAttribute('href'))")
    assert len(links) == 4 and all((out / link).is_file() for link in links)
    assert sorted(Path(link).name for link in links) == ["log.txt", "log.txt", "report.html", "report.html"]
    assert page.locator("#failures-list li").count() == 2
    assert page.locator("#mean-table tbody tr").count() == 2

    plots = page.locator("#pareto img")
    assert plots.count() == 6  # image AUROC and pixel AU-PRO x latency, memory, MACs (one dataset is done)
    assert page.eval_on_selector_all("#pareto img", "xs => xs.every(x => x.complete && x.naturalWidth > 400)")

    page.locator("#pareto").scroll_into_view_if_needed()
    shot = tmp_path / "index.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50 and pixels.std() > 10

    page.locator("table.results a", has_text="patchcore").first.click()  # through to the cell's own report
    page.wait_for_load_state()
    assert page.url.endswith("cells/tiny-patchcore-mobilenet_v2-s0/report.html")
    assert page.locator("#gallery-grid .card").count() > 0

    context.close()
    assert problems == []
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), requests
