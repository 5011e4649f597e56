"""Fixtures of the browser tests: one headless chromium per session, a fresh
browser context (cookies, local storage) per test, logged in to the session's
Label Studio (tests/e2e/fixtures.py), and a backend on a scripted Rex-Omni.

A fresh context per test matters: Label Studio keeps the Auto-Annotation
switch in local storage, so a test would otherwise start with the last one's.
Each test ends with no unexpected console or page error (checked at teardown
too, so no test can forget it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import VIEWPORT, launch_chromium, require_browser
from tests.e2e.conftest import (
    LS_PASSWORD,
    LS_USERNAME,
    Backend,
    LabelStudio,
    start_backend,
)
from tests.ui.labelstudio_ui import LabelStudioUI
from tests.ui.scripted_rexomni import MODEL_ID, ScriptedRexOmni

TALL_VIEWPORT = {"width": VIEWPORT["width"], "height": 1800}
"""The regions panel is a virtual list: rows below its fold are not in the
page. Tall enough for the 15 regions of two keypoint instances."""


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    require_browser()
    with launch_chromium() as browser:
        yield browser


def open_ui(
    browser: Any, ls: LabelStudio, shots: Path, viewport: dict[str, int]
) -> LabelStudioUI:
    context = browser.new_context(viewport=viewport)
    ui = LabelStudioUI(context.new_page(), ls.url, shots)
    ui.login(LS_USERNAME, LS_PASSWORD)
    return ui


def _closed_clean(ui: LabelStudioUI) -> None:
    errors = ui.unexpected_errors()
    shot = ui.screenshot("teardown") if errors else None
    ui.page.context.close()
    assert errors == [], f"browser errors (screenshot {shot}): {errors}"


@pytest.fixture
def ui(
    browser: Any, label_studio: LabelStudio, tmp_path: Path
) -> Iterator[LabelStudioUI]:
    """A logged-in page of a fresh browser context; screenshots in tmp_path."""
    page = open_ui(browser, label_studio, tmp_path, VIEWPORT)
    yield page
    _closed_clean(page)


@pytest.fixture
def tall_ui(
    browser: Any, label_studio: LabelStudio, tmp_path: Path
) -> Iterator[LabelStudioUI]:
    """As ``ui``, in a tall window (:data:`TALL_VIEWPORT`)."""
    page = open_ui(browser, label_studio, tmp_path, TALL_VIEWPORT)
    yield page
    _closed_clean(page)


@pytest.fixture(scope="session")
def scripted_backend(
    label_studio: LabelStudio, backend_logs_dir: Path
) -> Iterator[Backend]:
    """``rexlabel serve`` whose ``openai`` engine asks :mod:`scripted_rexomni`
    (fixed keypoint and OCR answers, the real pipeline after them)."""
    with ScriptedRexOmni() as server:
        backend = start_backend(
            label_studio,
            MODEL_ID,
            backend_logs_dir,
            extra_env={"REXLABEL_ENGINE": "openai", "REXLABEL_OPENAI_URL": server.url},
            name="scripted Rex-Omni",
        )
        try:
            yield backend
        finally:
            backend.stop()
