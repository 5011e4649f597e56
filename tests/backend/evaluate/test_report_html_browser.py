"""report.html in a real headless browser (Debian's chromium): it opens from
file:// with no console or page errors, every figure decodes and has alt text,
the per-label table lists the labels, and a hostile label shows as text."""

from __future__ import annotations

import pytest

from backend.evaluate.html import write_html
from tests.backend.evaluate.reports import HOSTILE, built_report, full_report
from tests.browser import launch_chromium, missing_reason, watch

pytestmark = pytest.mark.skipif(
    missing_reason() is not None, reason=str(missing_reason())
)

IMAGES = """() => Array.from(document.images, img => ({
    complete: img.complete, width: img.naturalWidth, alt: img.alt
}))"""
"""Every <img>: decoded (naturalWidth > 0 once complete) and its alt text."""


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as browser:
        yield browser


@pytest.mark.parametrize("make", [full_report, built_report], ids=["full", "built"])
def test_the_report_opens_cleanly_with_its_figures_and_labels(browser, tmp_path, make):
    path = tmp_path / "report.html"
    report = make()
    write_html(report, path)
    page = browser.new_page()
    errors = watch(page)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(path.as_uri(), wait_until="load")

    images = page.evaluate(IMAGES)
    assert len(images) >= 3
    for img in images:
        assert img["complete"] and img["width"] > 0, img
        assert img["alt"].strip(), img

    names = page.locator("#labels + div table tbody th a").all_inner_texts()
    assert names == list(report["labels"])
    assert set(names) == {"car", "person", "sign", HOSTILE}
    hostile = page.get_by_role("rowheader", name=HOSTILE, exact=False)
    assert HOSTILE in hostile.first.inner_text()  # as text, not as an element
    assert page.evaluate("document.scripts.length") == 0
    assert dialogs == []
    assert errors.unexpected() == []
    page.close()
