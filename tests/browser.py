"""A real headless browser for tests: Debian's chromium driven by playwright.

Never ``playwright install`` (it downloads browser builds); scripts/test.sh
installs Debian's ``chromium`` and the pinned ``playwright`` package. Usage::

    from tests.browser import open_page, require_browser

    def test_page(tmp_path):
        require_browser()
        with open_page() as (page, errors):
            page.goto(url)
            assert errors.unexpected() == []

See /work/shared/spec/browser-testing.md (selectors and waits for Label
Studio's UI, its known console noise).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's chromium (``apt-get install chromium``), the only browser used."""

LAUNCH_ARGS = ("--disable-dev-shm-usage",)
"""Containers give /dev/shm 64 MB; chromium then crashes tabs unless it keeps
shared memory in /tmp."""

VIEWPORT = {"width": 1280, "height": 900}
"""A laptop screen: what the pages are laid out for."""


@dataclass
class BrowserErrors:
    """What a page reported while open: ``console`` messages of type error and
    uncaught exceptions (``page``)."""

    console: list[str] = field(default_factory=list)
    page: list[str] = field(default_factory=list)

    def unexpected(self, allowed: Iterable[str] = ()) -> list[str]:
        """Every error but those containing one of ``allowed`` (a short, named
        allow-list of known noise); uncaught page errors are never allowed."""
        allowed = tuple(allowed)
        console = [m for m in self.console if not any(a in m for a in allowed)]
        return [f"console: {m}" for m in console] + [f"page: {m}" for m in self.page]


def missing_reason() -> str | None:
    """Why no browser test can run here, or None when one can."""
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium; scripts/test.sh does)"
    if importlib.util.find_spec("playwright") is None:
        return "playwright is missing (pip install -e '.[dev]'; scripts/test.sh does)"
    return None


def require_browser() -> None:
    """Skip the calling test, saying why, when chromium or playwright is absent."""
    reason = missing_reason()
    if reason is not None:
        pytest.skip(reason)


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """A headless chromium ``Browser``, closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(LAUNCH_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


def watch(page: Any) -> BrowserErrors:
    """Collect ``page``'s console errors and uncaught exceptions from now on."""
    errors = BrowserErrors()

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.console.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.page.append(str(exc)))
    return errors


@contextmanager
def open_page(
    viewport: dict[str, int] | None = None,
) -> Iterator[tuple[Any, BrowserErrors]]:
    """A fresh browser and page (watched by :func:`watch`), closed on exit."""
    with launch_chromium() as browser:
        page = browser.new_page(viewport=viewport or VIEWPORT)
        yield page, watch(page)
