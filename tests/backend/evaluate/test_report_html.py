"""report.html without a browser: what each table says (values known by hand
from the reports in ``reports.py``), escaping of untrusted names, "–" for
what is missing, and nothing the file would fetch or run."""

from __future__ import annotations

import html
import math
from html.parser import HTMLParser

import pytest

from backend.evaluate.html import MISSING, render_html, write_html
from backend.evaluate.report import build_report
from tests.backend.evaluate.helpers import box, pair, point
from tests.backend.evaluate.reports import (
    HOSTILE,
    HOSTILE_FILE,
    built_report,
    full_report,
    without_newer_keys,
)


class Page(HTMLParser):
    """The page's tables (each a list of rows of cell texts, in order), its
    ``<img>`` attributes, and every tag name seen."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str]] = []
        self.tags: set[str] = set()
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def table(self, *head: str) -> list[list[str]]:
        """The one table whose header row starts with ``head``."""
        (found,) = [t for t in self.tables if t and t[0][: len(head)] == list(head)]
        return found


@pytest.fixture(scope="module")
def full_page() -> str:
    """The page of full_report(), rendered once (figures take about a second)."""
    return render_html(full_report())


def test_the_per_label_table_of_a_full_report(full_page):
    page = Page(full_page)
    rows = page.table("label", "GT")
    assert rows[0] == [
        "label", "GT", "pred", "AP", "AP50", "AR", "threshold", "P", "R", "F1",
        "misses", "FP", "wrong labels", "mask AP", "mask IoU", "OKS AP", "PCK",
        "CER", "WER", "point hits",
    ]  # fmt: skip
    car, person, sign, hostile = rows[1:]
    # car: 8 of 10 at 0.7 with 1 false positive: P 8/9, R 0.8, F1 16/19
    assert car == [
        "car", "10", "18", "0.612", "0.804", "0.655", "0.700", "0.889", "0.800",
        "0.842", "1", "8", "1", "0.500", "0.810", MISSING, MISSING, MISSING,
        MISSING, MISSING,
    ]  # fmt: skip
    assert person[13:] == [
        MISSING,
        MISSING,
        "0.300",
        "0.750",
        MISSING,
        MISSING,
        "0.500",
    ]
    assert sign[0] == "signonly in ground truth"
    assert sign[3:7] == [MISSING] * 4 and sign[17:19] == ["0.125", "0.500"]
    assert hostile[0] == HOSTILE + "only in predictions"


def test_the_overall_row_effort_ocr_and_joints(full_page):
    page = Page(full_page)
    (overall,) = [t for t in page.tables if t[1][0] == "all labels"]
    assert overall[1][1:13] == [
        "17", "24", "0.506", "0.702", "0.578", MISSING, "0.833", "0.588", "0.690",
        "5", "11", "1",
    ]  # fmt: skip
    assert page.table("what annotators did")[1:] == [
        ["predicted regions accepted unchanged (IoU ≥ 0.9, same label)", "50.0%"],
        ["predicted regions edited (moved or relabelled)", "25.0%"],
        ["predicted regions deleted", "25.0%"],
        ["ground-truth regions drawn by hand", "12.5%"],
    ]
    assert page.table("label", "matched regions")[1:] == [
        ["(all labels)", "2", "0.125", "0.500"],
        ["sign", "2", "0.125", "0.500"],
    ]
    assert page.table("joint")[1:] == [
        ["nose", "100.0%"],
        ["left eye", "50.0%"],
        ["right eye", "75.0%"],
    ]


def test_every_figure_is_an_embedded_png_with_alt_text(full_page):
    page = Page(full_page)
    # quality and error bars, confusion, effort, curves of car, person, hostile
    assert len(page.images) == 7
    for img in page.images:
        assert img["src"].startswith("data:image/png;base64,")
        assert len(img["alt"]) > 40 and int(img["width"]) > 100
    alts = [img["alt"] for img in page.images]
    assert any(a.startswith("Precision-recall curve for car") for a in alts)
    assert any(a.startswith(f"Precision-recall curve for {HOSTILE}") for a in alts)


def test_untrusted_names_show_as_text_and_nothing_can_run_or_load(full_page):
    text = full_page
    assert HOSTILE not in text and html.escape(HOSTILE) in text
    assert HOSTILE_FILE not in text and html.escape(HOSTILE_FILE) in text
    page = Page(text)
    assert "script" not in page.tags and "link" not in page.tags
    assert "onerror" not in {k for img in page.images for k in img}
    assert "http://" not in text and "https://" not in text and "url(" not in text
    assert "default-src 'none'; img-src data:" in text  # the CSP: no scripts at all
    assert Page(text).table("input")[1] == ["ground truth", HOSTILE_FILE]
    confusion = Page(text).table("ground truth \\ predicted")
    assert confusion[0][4] == HOSTILE and confusion[4][0] == HOSTILE


def test_a_built_report_lists_its_labels_and_figures():
    """build_report over hand-made images, whichever keys it writes."""
    report = built_report()
    page = Page(render_html(report))
    rows = page.table("label", "GT")
    names = [r[0] for r in rows[1:]]
    assert names == [
        HOSTILE + "only in predictions", "car", "person", "signonly in ground truth",
    ]  # fmt: skip
    car = rows[2]
    # car: exact at 0.9, 1 px off at 0.6 (IoU 19/21), one missed: F1 0.8 at 0.6
    assert car[1] == "3" and car[6:10] == ["0.600", "1.000", "0.667", "0.800"]
    assert rows[4][6] == MISSING  # sign: nothing found, no threshold
    assert page.images and all(img["alt"] for img in page.images)


def test_a_report_without_curves_confusion_or_counts():
    """A report.json from before those keys still renders, with "–" and notes."""
    text = render_html(without_newer_keys(built_report()))
    page = Page(text)
    rows = page.table("label", "GT")
    assert [r[0] for r in rows[1:]] == [HOSTILE, "car", "person", "sign"]
    assert {r[2] for r in rows[1:]} == {MISSING}  # no prediction counts
    assert "mask AP" not in rows[0] and "CER" not in rows[0]
    assert "The report has no confusion matrix." in text
    assert text.count("No precision-recall curve") == 4
    assert len(page.images) == 3  # quality, errors, effort


def test_missing_and_non_finite_values_show_a_dash():
    report = {
        "overall": {"images": 1, "ap": math.nan, "at_threshold": None},
        "labels": {"dog": {"ap": None, "ar": math.inf, "curve": None}},
    }
    page = Page(render_html(report))
    dog = page.table("label", "GT")[1]
    assert dog[0] == "dog" and set(dog[1:]) == {MISSING}
    assert render_html({}).count("<table") == 1  # the overall row, all dashes


def test_write_html_writes_the_page_as_utf8(tmp_path, full_page):
    path = tmp_path / "report.html"
    write_html(full_report(), path)
    assert path.read_text(encoding="utf-8") == full_page  # figures: same bytes
    assert "≥" in full_page


def test_points_only_and_unscored_labels_carry_a_badge():
    gt = [box("cat", 0, 0, 10, 10), box("dog", 50, 50, 60, 60)]
    pred = [point("cat", 5, 5, 0.9), box("dog", 50, 50, 60, 60)]
    rows = Page(render_html(build_report([pair(gt, pred)]))).table("label", "GT")
    assert rows[1][0] == "catpoints only: scored by hit rate, not as boxes"
    assert rows[2][0] == "dogno scores: no threshold to recommend"
    assert rows[1][6] == MISSING  # no box threshold for the pointed label


def test_a_label_no_font_draws_is_named_by_its_figure_number():
    """U+0378 is unassigned: no font has it, so the figures draw "#1" and the
    table says so next to the real name."""
    odd = "\u0378\u0379"
    report = build_report(
        [pair([box(odd, 0, 0, 10, 10)], [box(odd, 0, 0, 10, 10, 0.9)])]
    )
    rows = Page(render_html(report)).table("label", "GT")
    assert rows[1][0] == odd + "#1 in the figures"
