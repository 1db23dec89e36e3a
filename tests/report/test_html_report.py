"""The HTML report: one self-contained file, escaped text, every section, one card per gallery item."""

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from vadkit.report.gallery import GalleryItem, gallery_panel
from vadkit.report.html import write_report

EVIL = "<script>alert(1)</script>"


class Collector(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self.scripts += tag == "script"

    def find(self, tag=None, **attrs):
        return [a for t, a in self.tags if (tag is None or t == tag) and all(a.get(k) == v for k, v in attrs.items())]


def png_file(path, colour) -> object:
    Image.new("RGB", (48, 36), colour).save(path)
    return path


def make_items(rng, specs):
    image = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
    items = []
    for i, (name, label, predicted) in enumerate(specs):
        anomaly_map = rng.random((24, 24)).astype(np.float32)
        items.append(GalleryItem(name=name, defect_type="good" if not label else "scratch", label=label,
                                 predicted=predicted, score=float(rng.normal() + i * 0.01),
                                 aupimo=0.5 if label else None,
                                 png=gallery_panel(image, anomaly_map, None, None if predicted is None else 0.5,
                                                   0.0, 1.0)))
    return items


@pytest.fixture
def report(tmp_path):
    rng = np.random.default_rng(0)
    specs = [(EVIL, 0, 1), ("b.png", 0, 1), ("c.png", 1, 0), ("d.png", 1, 1), ("e.png", 0, 0), ("f.png", 1, 1)]
    items = make_items(rng, specs)
    path = write_report(
        tmp_path / "out" / "report.html",
        title="patchcore on <bottle> & co",
        summary={"model": "patchcore", "backbone": "mobilenet_v2", "data": "/data/bottle", "layout": "mvtec",
                 "test images": 6, "threshold": 0.5, "threshold rule": "F1 on 'test' split",
                 "report written": "2025-03-01T10:22:13", "image_auroc": 0.9312, "pixel_aupro": 0.71,
                 "aupimo_count": 3},
        intervals={"image_auroc": (0.88, 0.97)},
        per_defect={"scratch": {"image_auroc": 0.95, "aupimo_mean": 0.4}, EVIL: {"image_auroc": 0.5}},
        threshold_table=[{"operating point": "calibrated threshold", "threshold": 0.5, "recall": 0.66},
                         {"operating point": "FPR <= 0.01", "threshold": 1.2, "recall": 0.33, "fpr": 0.0}],
        plots={"Image ROC": png_file(tmp_path / "roc.png", "red"),
               f"Scores {EVIL}": png_file(tmp_path / "s.png", "blue")},
        gallery=items,
        notes=[f"note with {EVIL}", "second note"],
    )
    text = path.read_text(encoding="utf-8")
    parser = Collector()
    parser.feed(text)
    return path, text, parser, items


def test_written_where_asked(report, tmp_path):
    path, text, _, _ = report
    assert path == tmp_path / "out" / "report.html"
    assert text.startswith("<!DOCTYPE html>")


def test_self_contained_no_external_reference(report):
    _, text, parser, _ = report
    assert "http://" not in text and "https://" not in text
    assert not re.search(r"""(?:src|href|action|srcset)\s*=\s*["']?\s*(?:https?:|//|file:)""", text, re.I)
    assert "url(" not in text and "@import" not in text  # no CSS fetches either
    for tag, attrs in parser.tags:
        for key in ("src", "href", "srcset", "action", "poster", "data"):
            if key in attrs and tag != "article":
                assert attrs[key].startswith(("data:", "#")), (tag, key, attrs[key][:40])
    assert [a["href"] for a in parser.find("link")] == ["data:,"]  # only the empty favicon, so none is fetched
    csp = parser.find("meta", **{"http-equiv": "Content-Security-Policy"})
    assert csp and "default-src 'none'" in csp[0]["content"] and "img-src data:" in csp[0]["content"]


def test_all_caller_text_is_escaped(report):
    _, text, parser, _ = report
    assert EVIL not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert parser.scripts == 1  # only the report's own script
    assert "patchcore on &lt;bottle&gt; &amp; co" in text
    assert "F1 on &#x27;test&#x27; split" in text
    assert [a["data-name"] for a in parser.find("article") if a["data-name"] == EVIL]  # attribute round-trips


def test_sections_and_header(report):
    _, text, parser, _ = report
    ids = {attrs.get("id") for _, attrs in parser.tags}
    for section in ("summary", "notes", "thresholds", "curves", "per-defect", "gallery", "gallery-grid",
                    "gallery-count", "gallery-empty", "summary-table", "thresholds-table", "per-defect-table"):
        assert section in ids, section
    for fact in ("patchcore (mobilenet_v2)", "/data/bottle", "2025-03-01 10:22:13"):
        assert fact in text
    assert "[0.8800, 0.9700]" in text and "95% interval" in text
    assert "Pixel AU-PRO (FPR ≤ 0.3)" in text and "<code>pixel_aupro</code>" in text
    assert "calibrated threshold" in text and "FPR &lt;= 0.01" in text
    assert text.count('<figure class="plot">') == 2
    assert "second note" in text


def test_summary_separates_metrics_from_run_facts(report):
    _, text, _, _ = report
    table = text[text.index('id="summary-table"'):text.index("</table>", text.index('id="summary-table"'))]
    facts = text[text.index('<aside class="facts">'):text.index("</aside>")]
    assert "image_auroc" in table and "aupimo_count" in table
    assert "Threshold rule" in facts and "Test images" in facts and "mvtec" in facts
    assert "threshold" not in table.lower()


def test_cards_counts_outcomes_and_order(report):
    _, text, parser, items = report
    cards = parser.find("article")
    assert len(cards) == len(items) == 6
    assert [c["data-outcome"] for c in cards].count("FP") == 2
    assert sorted(c["data-outcome"] for c in cards) == ["FN", "FP", "FP", "TN", "TP", "TP"]
    scores = [float(c["data-score"]) for c in cards]
    assert scores == sorted(scores, reverse=True)  # initial order, also without JavaScript
    by_name = {item.name: item for item in items}
    for card in cards:
        item = by_name[card["data-name"]]
        assert float(card["data-score"]) == item.score and card["data-label"] == str(item.label)
    count = parser.find(id="gallery-count")[0]
    assert count["data-visible"] == "6"
    fp_button = text[text.index('id="filter-fp"'):]
    assert re.match(r'id="filter-fp"[^>]*>False positives <span class="n">2</span>', fp_button)
    images = [a for a in parser.find("img") if a.get("loading") == "lazy"]
    assert len(images) == 6
    first = by_name[cards[0]["data-name"]]
    payload = images[0]["src"].split(",", 1)[1]
    assert base64.b64decode(payload) == first.png
    assert Image.open(io.BytesIO(first.png)).size == (int(images[0]["width"]), int(images[0]["height"]))


def test_uncalibrated_items_and_empty_sections(tmp_path):
    rng = np.random.default_rng(1)
    items = make_items(rng, [("a.png", 0, None), ("b.png", 1, None)])
    path = write_report(tmp_path / "r.html", title="t", summary={"image_auroc": 1.0}, intervals=None, per_defect={},
                        threshold_table=[], plots={}, gallery=items, notes=[])
    text = path.read_text(encoding="utf-8")
    parser = Collector()
    parser.feed(text)
    assert [c["data-outcome"] for c in parser.find("article")] == ["none", "none"]
    assert "95% interval" not in text
    assert 'id="notes"' not in text
    assert "No operating point" in text and "No curve was plotted" in text and "No per-defect breakdown" in text
    empty = write_report(tmp_path / "e.html", title="t", summary={}, intervals={}, per_defect={}, threshold_table=[],
                         plots={}, gallery=[], notes=[]).read_text(encoding="utf-8")
    assert "No image in the gallery" in empty and "<article" not in empty
