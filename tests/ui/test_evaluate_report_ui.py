"""``rexlabel evaluate``'s report.html, opened in the browser the labeling
tests use, after annotators did their work in Label Studio's UI.

The tiny model pre-labels a project ("Retrieve Predictions" through the API:
the button itself is tests/ui/test_predictions_ui.py's), an annotator opens
each task in the labeling UI, moves the box of one and submits every one;
``rexlabel evaluate --project`` scores the predictions against those
annotations and writes report.html, which must open with no console or page
error, every figure decoded and described, and its tables filled in.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.conftest import REXLABEL_EXECUTABLE, Backend, LabelStudio
from tests.e2e.test_labelstudio_e2e import (
    RED,
    connect,
    make_project,
    predictions_by_task,
)
from tests.ui.labelstudio_ui import LabelStudioUI

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.ui]

TASKS = 3
"""Tasks annotated in the UI (about 3 s each)."""

MOVE_PERCENT = 8.0
"""The edited task's box moves this far right and down (percent of the image):
an edit the report's effort figures count."""

EVALUATE_TIMEOUT_S = 120.0
"""Reading a few tasks and running COCOeval: seconds; bounded for CI."""

FIGURES = """() => Array.from(document.images, img => ({
    src: img.src.slice(0, 30), complete: img.complete,
    width: img.naturalWidth, alt: img.alt}))"""

MIN_FIGURES = 3
"""A report with one label has at least a precision-recall curve, the bars
per label and the effort chart."""


def test_report_of_annotations_made_in_the_ui_opens_cleanly(
    label_studio: LabelStudio, rexlabel_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """Submitted in the UI (one box moved), scored by ``rexlabel evaluate``:
    the report counts every task and the one edit, and opens cleanly."""
    client = label_studio.client
    project = make_project(
        client, "ui evaluate", "rectangles", tmp_path / "images", 54, TASKS, RED
    )
    connect(client, project, rexlabel_backend, "rexlabel (evaluate)")
    client.retrieve_predictions(project.id)
    stored = predictions_by_task(client, project)
    submitted = 0
    for index, (task_id, prediction) in enumerate(stored.items()):
        ui.open_task(project.id, task_id, regions=len(prediction["result"]))
        boxes = ui.store_regions()
        if index == 0:
            (box,) = boxes
            centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            dx = MOVE_PERCENT if centre[0] < 50 else -MOVE_PERCENT
            ui.drag(centre, (centre[0] + dx, centre[1] + dx / abs(dx) * 4))
        saved = ui.submit()
        assert saved["task"] == task_id, saved
        submitted += 1

    out = tmp_path / "eval"
    done = subprocess.run(
        [
            str(REXLABEL_EXECUTABLE),
            "evaluate",
            "--project",
            str(project.id),
            "--out",
            str(out),
        ],
        env=rexlabel_backend.env,
        capture_output=True,
        text=True,
        timeout=EVALUATE_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert list(report["labels"]) == list(RED), report["labels"]
    assert report["inputs"]["tasks_scored"] == submitted, report["inputs"]
    # The box moved in the UI is the one edit the report counts.
    predicted = report["overall"]["predictions"]
    assert report["overall"]["effort"]["edited_share"] == pytest.approx(1 / predicted)

    page = ui.page
    page.goto((out / "report.html").as_uri(), wait_until="load")
    shot = ui.screenshot("report")
    figures = page.evaluate(FIGURES)
    assert len(figures) >= MIN_FIGURES, (shot, figures)
    for figure in figures:
        assert figure["complete"] and figure["width"] > 0, (shot, figure)
        assert figure["alt"].strip(), (shot, figure)
    assert page.locator("table").count() >= 2, shot
    labels = page.locator("#labels + div table tbody th a").all_inner_texts()
    assert labels == list(RED), (shot, labels)
    body = page.locator("body").inner_text()
    unchanged = report["overall"]["effort"]["unchanged_share"]
    assert f"{unchanged:.1%}" in body, (shot, unchanged)
    assert page.evaluate("document.scripts.length") == 0, shot
    assert ui.unexpected_errors() == [], (shot, ui.unexpected_errors())
