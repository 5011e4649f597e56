"""Label Studio 1.23.2's labeling UI driven in a real browser (tests/browser.py).

:class:`LabelStudioUI` is what an annotator does: log in, press "Retrieve
Predictions" in the Data Manager, open a task, read the regions panel (the
outliner), turn Auto-Annotation on, type a prompt, draw with a smart tool,
accept suggestions, move a region, submit. Selectors and waits are the ones
measured in /work/shared/spec/browser-testing.md; the store
(``window.Htx.annotationStore``) is read only for exact geometry and ids.

:func:`expected_rows` turns the results Label Studio *stored* into the rows
the regions panel must show, so a test compares what the annotator sees with
what the backend sent.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.browser import BrowserErrors, watch

WAIT_MS = 60_000
"""Every wait for the page: a busy 2-core CI runner (Label Studio, the backend,
the model and the browser share it) takes seconds where a laptop takes 0.1."""

SETTLE_S = 0.5
"""After the last awaited change, before reading or screenshotting: Konva
redraws on the next animation frames (25 ms to 1 s measured)."""

LABEL_STUDIO_NOISE = {
    "/heidi-tips": "Label Studio fetches tips from the internet and gets a 404 offline",
    "/[object%20Object]": (
        "each TextArea prompt or smart click makes Label Studio request "
        "/projects/<id>/[object Object] (a 404)"
    ),
}
"""Console errors of Label Studio itself, never of our predictions: the only
ones a test may ignore (uncaught page errors are never ignored)."""

SCORE_SHOWN_SLACK = 0.005 + 1e-9
"""The regions panel shows a score with two decimals."""

REGION_CLASSES = {
    "rectanglelabels": "rectangleregion",
    "rectangle": "rectangleregion",
    "polygonlabels": "polygonregion",
    "polygon": "polygonregion",
    "keypointlabels": "keypointregion",
    "keypoint": "keypointregion",
    "brushlabels": "brushregion",
    "brush": "brushregion",
}
"""Stored result type -> the region class Label Studio lists it as
(``lsf-tree__node_type_<class>``); ``labels`` and ``textarea`` results join
the region of their id."""

IMAGE_READY = """() => Array.from(document.images).some(
    img => img.src.startsWith('blob:') && img.complete && img.naturalWidth > 0)"""
"""The task's image is decoded (the labeling UI loads it as a blob)."""

STORE_REGION_COUNT = """() => window.Htx && window.Htx.annotationStore.selected
    ? window.Htx.annotationStore.selected.regions.length : -1"""
"""Regions of the annotation on screen (-1 before the labeling app is up)."""

LISTED_REGION_COUNT = "() => document.querySelectorAll('.lsf-tree__node').length"
"""Rows of the regions panel."""

STORE_REGIONS = """() => window.Htx.annotationStore.selected.regions.map(r => ({
    id: r.id, type: r.type, origin: r.origin, score: r.score ?? null,
    label: r.labelName ?? null, parentID: r.parentID || null,
    x: r.x ?? null, y: r.y ?? null, width: r.width ?? null,
    height: r.height ?? null}))"""
"""The selected annotation's regions as the UI holds them (ids get a
``#<suffix>`` per annotation; ``origin`` is prediction, prediction-changed
or manual)."""

AUTO_ANNOTATION = "() => Boolean(window.Htx._autoAnnotation)"
"""The Auto-Annotation switch's state (the labeling app's own field)."""

SUGGESTIONS = "() => window.Htx.annotationStore.selected.suggestions.size"
"""Suggestions on screen that are not accepted yet."""

SUGGESTED_REGIONS = """() => Array.from(
    window.Htx.annotationStore.selected.suggestions.values(), r => ({
    id: r.id, type: r.type, label: r.labelName ?? null, score: r.score ?? null}))"""
"""The pending suggestions as the UI holds them."""


@dataclass(frozen=True)
class Row:
    """One region as the regions panel lists it (or must list it)."""

    kind: str
    """Region class, e.g. ``rectangleregion``."""
    label: str
    score: float | None
    text: str | None = None
    """The per-region TextArea's text (OCR), None without one."""
    depth: int = 0
    """0 for a top-level region, 1 for a keypoint under its instance's box."""

    def sort_key(self) -> tuple:
        return (self.kind, self.label, self.score or 0.0, self.text or "")


def expected_rows(results: Iterable[dict[str, Any]]) -> list[Row]:
    """The rows Label Studio must list for stored ``results``: one per region
    id, its label from the labelled result or the ``labels`` result of that id,
    its text from the ``textarea`` result of that id; depth 1 with a
    ``parentID``."""
    regions: dict[str, dict[str, Any]] = {}
    for result in results:
        region = regions.setdefault(result["id"], {"label": "", "text": None})
        kind, value = result["type"], result["value"]
        if kind in REGION_CLASSES:
            region["kind"] = REGION_CLASSES[kind]
            region["score"] = result.get("score")
            region["depth"] = 1 if result.get("parentID") else 0
            if kind in value:
                region["label"] = ", ".join(value[kind])
        elif kind == "labels":
            region["label"] = ", ".join(value["labels"])
        elif kind == "textarea":
            region["text"] = "\n".join(value["text"])
    return [
        Row(r["kind"], r["label"], r["score"], r["text"], r["depth"])
        for r in regions.values()
    ]


def rows_match(shown: list[Row], expected: list[Row]) -> bool:
    """The same regions (kind, label, text, depth), scores equal to the two
    decimals shown, in any order."""
    if len(shown) != len(expected):
        return False
    for a, b in zip(
        sorted(shown, key=Row.sort_key), sorted(expected, key=Row.sort_key), strict=True
    ):
        if (a.kind, a.label, a.text, a.depth) != (b.kind, b.label, b.text, b.depth):
            return False
        if (a.score is None) != (b.score is None):
            return False
        if a.score is not None and abs(a.score - b.score) > SCORE_SHOWN_SLACK:
            return False
    return True


def instances(rows: list[Row]) -> list[tuple[Row, list[Row]]]:
    """Top-level rows with the depth-1 rows listed under each, in panel order
    (a keypoint instance: its box and its joints)."""
    grouped: list[tuple[Row, list[Row]]] = []
    for row in rows:
        if row.depth == 0:
            grouped.append((row, []))
        else:
            assert grouped, f"{row} is nested under nothing"
            grouped[-1][1].append(row)
    return grouped


class LabelStudioUI:
    """One browser page on a Label Studio, with its errors watched and
    screenshots written under ``shots``."""

    def __init__(self, page: Any, url: str, shots: Path) -> None:
        self.page = page
        self.url = url.rstrip("/")
        self.shots = shots
        self.errors: BrowserErrors = watch(page)
        page.set_default_timeout(WAIT_MS)

    # -- pages ---------------------------------------------------------------
    def login(self, email: str, password: str) -> None:
        """The real login form; it lands on ``/``."""
        self.page.goto(f"{self.url}/user/login")
        self.page.fill("#email", email)
        self.page.fill("#password", password)
        with self.page.expect_navigation():
            self.page.click("button.login-button")

    def retrieve_predictions(self, project_id: int, tasks: int) -> dict[str, Any]:
        """The Data Manager's "Retrieve Predictions" on every task: select all,
        Tasks Actions -> Retrieve Predictions -> OK. Returns Label Studio's
        answer to the action (``{"processed_items": n, ...}``)."""
        page = self.page
        page.goto(f"{self.url}/projects/{project_id}/data")
        page.locator(".lsf-table__row-wrapper").nth(tasks - 1).wait_for()
        page.locator("input[type=checkbox]").first.check()
        page.get_by_role("button", name="Tasks Actions").click()
        page.get_by_text("Retrieve Predictions", exact=True).click()
        with page.expect_response(
            lambda r: (
                "/api/dm/actions" in r.url
                and "retrieve" in r.url
                and r.request.method == "POST"
            ),
            timeout=WAIT_MS,
        ) as response:
            page.locator("[data-testid=dialog-ok-button]").click()
        answer = response.value
        assert answer.ok, f"Retrieve Predictions: HTTP {answer.status} {answer.text()}"
        return answer.json()

    def open_task(self, project_id: int, task_id: int, regions: int) -> None:
        """The labeling page of a task, ready: its image decoded, the canvas
        drawn, ``regions`` regions loaded and all of them listed (collapsed
        instances expanded: Label Studio sometimes opens them collapsed)."""
        page = self.page
        page.goto(f"{self.url}/projects/{project_id}/data?task={task_id}")
        page.wait_for_function(IMAGE_READY, timeout=WAIT_MS)
        page.locator(".konvajs-content canvas").first.wait_for()
        self._wait_for(
            f"n => ({STORE_REGION_COUNT})() === n", regions, task_id, "loaded"
        )
        for _ in range(regions):
            collapsed = page.locator(".lsf-tree-switcher_close")
            if not collapsed.count():
                break
            collapsed.first.click()
        self._wait_for(
            f"n => ({LISTED_REGION_COUNT})() === n", regions, task_id, "listed"
        )
        time.sleep(SETTLE_S)

    def _wait_for(self, predicate: str, regions: int, task_id: int, what: str) -> None:
        """Wait for ``predicate(regions)``; on timeout fail with a screenshot
        and the count the page shows."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

        try:
            self.page.wait_for_function(predicate, arg=regions, timeout=WAIT_MS)
        except PlaywrightTimeoutError:
            shot = self.screenshot(f"task-{task_id}-not-{what}")
            counts = self.page.evaluate(
                f"() => [({STORE_REGION_COUNT})(), ({LISTED_REGION_COUNT})()]"
            )
            raise AssertionError(
                f"task {task_id}: expected {regions} regions {what} within "
                f"{WAIT_MS} ms; loaded, listed: {counts} (screenshot {shot})"
            ) from None

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path))
        return path

    # -- what the panel and the store show --------------------------------------
    def rows(self) -> list[Row]:
        """The regions panel, top to bottom (all rows must be on screen: the
        list is virtual, so keep the viewport tall enough)."""
        rows = []
        for node in self.page.locator(".lsf-tree__node").all():
            kind = re.search(r"lsf-tree__node_type_(\w+)", node.get_attribute("class"))
            labels = node.locator(".lsf-labels-list")
            label = labels.first.inner_text().strip() if labels.count() else ""
            score = node.locator(".lsf-outliner-item__control_type_score")
            text = node.locator(".lsf-textarea-tag__input")  # input or textarea
            rows.append(
                Row(
                    kind=kind.group(1) if kind else "",
                    label=label,
                    score=float(score.inner_text()) if score.count() else None,
                    text=text.first.input_value() if text.count() else None,
                    depth=node.locator(".lsf-tree-indent-unit").count(),
                )
            )
        return rows

    def store_regions(self) -> list[dict[str, Any]]:
        return self.page.evaluate(STORE_REGIONS)

    def suggested_regions(self) -> list[dict[str, Any]]:
        return self.page.evaluate(SUGGESTED_REGIONS)

    def image_box(self) -> dict[str, float]:
        """The task image on screen (the canvas is wider than the image)."""
        return self.page.locator("img[src^='blob:']").first.bounding_box()

    def at(self, x_percent: float, y_percent: float) -> tuple[float, float]:
        """Screen coordinates of a point given in percent of the image."""
        box = self.image_box()
        return (
            box["x"] + box["width"] * x_percent / 100,
            box["y"] + box["height"] * y_percent / 100,
        )

    # -- interactive tools ---------------------------------------------------------
    def auto_annotation_on(self) -> None:
        """The bottom bar's Auto-Annotation switch (smart tools, prompts), on.
        Label Studio keeps it between pages of a browser context, so it is
        clicked only when off."""
        if not self.page.evaluate(AUTO_ANNOTATION):
            self.page.get_by_text("Auto-Annotation", exact=True).click()
        self.page.wait_for_function(AUTO_ANNOTATION, timeout=WAIT_MS)

    def interactive(self, action: Callable[[], None]) -> tuple[dict, dict]:
        """Run ``action`` and return (the interactive request Label Studio
        sent, its JSON answer): the context the UI built and what the backend
        suggested (``{"data": {"result": [...]}}`` or ``{"errors": [...]}``)."""
        with self.page.expect_response(
            lambda r: "/interactive-annotating" in r.url, timeout=WAIT_MS
        ) as response:
            action()
        answer = response.value
        assert answer.ok, f"interactive: HTTP {answer.status} {answer.text()}"
        return answer.request.post_data_json, answer.json()

    def type_prompt(self, text: str) -> tuple[dict, dict]:
        """Type ``text`` into the prompt TextArea and press Enter."""
        box = self.page.locator('input[aria-label="TextArea Input"]')
        box.fill(text)
        return self.interactive(lambda: box.press("Enter"))

    def choose_label(self, label: str, control_index: int = 0) -> None:
        """Select ``label`` in the ``control_index``-th labels control."""
        group = self.page.locator(".lsf-labels").nth(control_index)
        group.locator(".lsf-label", has_text=label).first.click()

    def choose_smart_tool(self, name: str) -> None:
        """The smart tool ``name`` (``rectangle-tool``, ``key-point-tool``):
        clicked directly when shown, else from the smart group's menu, which
        opens on hover."""
        tool = self.page.locator(f".lsf-tool_smart[aria-label={name}]")
        if not tool.is_visible():
            self.page.locator(".lsf-toolbar__group > button.lsf-tool_smart").hover()
        tool.click()

    def drag(self, start: tuple[float, float], end: tuple[float, float]) -> None:
        """Press at ``start``, move in steps, release at ``end`` (percent of
        the image)."""
        mouse = self.page.mouse
        mouse.move(*self.at(*start))
        mouse.down()
        mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
        mouse.move(*self.at(*mid), steps=5)
        mouse.move(*self.at(*end), steps=5)
        mouse.up()

    def click_image(self, x_percent: float, y_percent: float) -> None:
        self.page.mouse.click(*self.at(x_percent, y_percent))

    def wait_for_suggestions(self, count: int) -> None:
        """``count`` suggestions on screen; the bottom bar lists them."""
        self.page.wait_for_function(
            f"n => ({SUGGESTIONS})() === n", arg=count, timeout=WAIT_MS
        )
        if count:
            info = self.page.locator(".lsf-auto-accept__info")
            info.wait_for()
            shown = info.inner_text()
            assert shown.startswith(f"{count} suggestion"), shown

    def accept_suggestions(self) -> None:
        """The bottom bar's accept button; waits until none are pending."""
        self.page.locator("[data-testid=bottombar-accept-suggestions-button]").click()
        self.wait_for_suggestions(0)
        time.sleep(SETTLE_S)

    def submit(self) -> dict[str, Any]:
        """The Submit button; returns the annotation Label Studio saved."""
        with self.page.expect_response(
            lambda r: (
                re.search(r"/api/tasks/\d+/annotations", r.url) is not None
                and r.request.method == "POST"
            ),
            timeout=WAIT_MS,
        ) as response:
            self.page.get_by_role("button", name="Submit").click()
        answer = response.value
        assert answer.ok, f"Submit: HTTP {answer.status} {answer.text()}"
        return answer.json()

    def unexpected_errors(self) -> list[str]:
        """Console errors and uncaught page errors, less the known noise."""
        return self.errors.unexpected(LABEL_STUDIO_NOISE)
