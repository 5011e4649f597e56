"""What an annotator sees after "Retrieve Predictions", in Label Studio's UI.

For each copy-paste config of the README, a test presses "Retrieve
Predictions" in the Data Manager (select all, Tasks Actions, OK: the real
button), opens every task in the labeling UI and checks that the regions
panel lists exactly what Label Studio stored: one row per region with its
type, label and score (two decimals), OCR text in the region's text box,
keypoints nested under their instance's box; the boxes lie where the
prediction put them (read from the UI's store). A screenshot of each task is
saved in the test's tmp dir and named in every assertion message.

Which model answers (measured with the trained tiny model, which learnt only
one-phrase detection of coloured shapes):

- detection and masks: the tiny model. The README's detection and mask
  configs list several labels; asked three phrases at once the tiny model
  answers ``None`` (0 boxes on 6 of 6 images), so those two configs are
  reduced to one label (as tests/e2e does): unavoidable, and the labels then
  come from the model. Masks come from a tiny random SAM (shape meaningless).
- keypoints and OCR: the README's configs verbatim, answered by a scripted
  Rex-Omni (tests/ui/scripted_rexomni.py) through the ``openai`` engine: the
  tiny model answers nothing on the keypoint config (0 of 4 images) and the
  OCR config (0 of 16; one image in eight with a shape phrase as the OCR
  category), so with it these tests would check nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Backend, LabelStudio
from tests.e2e.lsclient import LabelStudioClient
from tests.e2e.test_labelstudio_e2e import (
    BLUE,
    RED,
    Project,
    connect,
    make_project,
    predictions_by_task,
)
from tests.ui.labelstudio_ui import (
    REGION_CLASSES,
    LabelStudioUI,
    Row,
    expected_rows,
    instances,
    rows_match,
)
from tests.ui.projects import (
    people_image,
    picture_project,
    readme_config,
    sign_image,
)
from tests.ui.scripted_rexomni import OCR_LINES

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.ui]

IMAGES = 3
"""Tasks per project: each is opened in the browser (about 1-3 s each)."""

GEOMETRY_SLACK = 1e-6
"""Percent: the UI keeps the stored floats (JSON round trip only)."""


def retrieve_in_ui(
    ui: LabelStudioUI, client: LabelStudioClient, project: Project, ml: dict[str, Any]
) -> dict[int, dict[str, Any]]:
    """The Data Manager's Retrieve Predictions on every task; returns what
    Label Studio stored: one prediction per task, of the model's version."""
    answer = ui.retrieve_predictions(project.id, len(project.tasks))
    assert answer.get("processed_items") == len(project.tasks), answer
    stored = predictions_by_task(client, project)
    assert {p["model_version"] for p in stored.values()} == {ml["model_version"]}
    return stored


def check_geometry(ui: LabelStudioUI, results: list[dict[str, Any]], shot: Path):
    """Every predicted region in the UI's store sits where its stored result
    says (the UI adds ``#<suffix>`` to ids)."""
    by_id = {r["id"]: r for r in results if r["type"] in REGION_CLASSES}
    shown = ui.store_regions()
    assert {r["id"].split("#")[0] for r in shown} == set(by_id), (shot, shown)
    for region in shown:
        stored = by_id[region["id"].split("#")[0]]
        assert region["origin"] == "prediction", (shot, region)
        for key in ("x", "y", "width", "height"):
            if key in stored["value"] and region[key] is not None:
                assert abs(region[key] - stored["value"][key]) <= GEOMETRY_SLACK, (
                    shot,
                    key,
                    region,
                    stored,
                )


def check_tasks(
    ui: LabelStudioUI, project: Project, stored: dict[int, dict[str, Any]], name: str
) -> dict[int, list[Row]]:
    """Open each task; its regions panel lists exactly the stored regions
    (:func:`rows_match`) where they were predicted. Returns the rows shown."""
    shown: dict[int, list[Row]] = {}
    for task_id, prediction in stored.items():
        expected = expected_rows(prediction["result"])
        ui.open_task(project.id, task_id, regions=len(expected))
        shot = ui.screenshot(f"{name}-task-{task_id}")
        rows = ui.rows()
        assert rows_match(rows, expected), (
            f"task {task_id}: the regions panel shows {rows}, stored {expected} "
            f"(screenshot {shot})"
        )
        check_geometry(ui, prediction["result"], shot)
        shown[task_id] = rows
    return shown


def test_detection_regions_show_label_type_and_score(
    label_studio: LabelStudio, rexlabel_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """The detection config (smart boxes and a prompt TextArea, one label):
    every box the tiny model found is listed as a rectangle region with its
    label and score, at its place; the tiny model finds some."""
    client = label_studio.client
    project = make_project(
        client, "ui detection", "rectangles", tmp_path / "images", 41, IMAGES, RED
    )
    ml = connect(client, project, rexlabel_backend, "rexlabel")
    stored = retrieve_in_ui(ui, client, project, ml)
    shown = check_tasks(ui, project, stored, "detection")
    rows = [row for task_rows in shown.values() for row in task_rows]
    assert rows, f"no box in any task; screenshots in {tmp_path}"
    assert {(r.kind, r.label) for r in rows} == {("rectangleregion", "red square")}
    assert all(r.score is not None and 0 < r.score <= 1 for r in rows), rows


def test_masks_regions_show_label_type_and_score(
    label_studio: LabelStudio,
    rexlabel_backend_queue: Backend,
    ui: LabelStudioUI,
    tmp_path,
) -> None:
    """The mask config (BrushLabels and smart KeyPointLabels clicks, one label)
    on the queued backend (Redis, a worker with a tiny random SAM): each mask
    is listed as a brush region with its label and score."""
    client = label_studio.client
    project = make_project(
        client, "ui masks", "brush", tmp_path / "images", 42, IMAGES, BLUE
    )
    ml = connect(client, project, rexlabel_backend_queue, "rexlabel (queue)")
    stored = retrieve_in_ui(ui, client, project, ml)
    shown = check_tasks(ui, project, stored, "masks")
    rows = [row for task_rows in shown.values() for row in task_rows]
    assert rows, f"no mask in any task; screenshots in {tmp_path}"
    assert {(r.kind, r.label) for r in rows} == {("brushregion", "blue triangle")}
    assert all(r.score is not None and 0 < r.score <= 1 for r in rows), rows


def test_ocr_text_shows_in_its_regions_text_box(
    label_studio: LabelStudio,
    scripted_backend: Backend,
    ui: LabelStudioUI,
    tmp_path,
) -> None:
    """The README's OCR config (Label Studio's OCR template): each text line is
    one rectangle region labelled ``Text`` with its score, and its text is in
    that region's text box in the regions panel."""
    client = label_studio.client
    config = readme_config("OCR with per-region text")
    project = picture_project(
        client, "ui ocr", config, sign_image(), tmp_path / "images", IMAGES
    )
    ml = connect(client, project, scripted_backend, "rexlabel (scripted)")
    stored = retrieve_in_ui(ui, client, project, ml)
    for rows in check_tasks(ui, project, stored, "ocr").values():
        assert sorted((r.kind, r.label, r.text) for r in rows) == sorted(
            ("rectangleregion", "Text", text) for text in OCR_LINES
        ), rows
        assert all(r.score is not None and 0 < r.score < 1 for r in rows), rows


def test_keypoints_hang_under_their_instance(
    label_studio: LabelStudio,
    scripted_backend: Backend,
    tall_ui: LabelStudioUI,
    tmp_path,
) -> None:
    """The README's person keypoint config: each person is a box listed with
    its joints nested under it (the joints' ``parentID``), each joint with
    its label; a joint the model did not see is not listed."""
    client = label_studio.client
    config = readme_config("Person keypoints")
    project = picture_project(
        client, "ui keypoints", config, people_image(), tmp_path / "images", IMAGES
    )
    ml = connect(client, project, scripted_backend, "rexlabel (scripted)")
    stored = retrieve_in_ui(tall_ui, client, project, ml)
    every_joint = [
        "nose", "left eye", "right eye", "left shoulder", "right shoulder",
        "left hip", "right hip",
    ]  # fmt: skip
    for task_id, rows in check_tasks(tall_ui, project, stored, "keypoints").items():
        grouped = instances(rows)
        boxes = [(box.kind, box.label) for box, _ in grouped]
        assert boxes == [("rectangleregion", "person")] * 2, (task_id, rows)
        joints = [[j.label for j in found] for _, found in grouped]
        second = [j for j in every_joint if j != "left eye"]
        assert sorted(map(sorted, joints)) == sorted(
            [sorted(every_joint), sorted(second)]
        )
        for _, found in grouped:
            assert {j.kind for j in found} == {"keypointregion"}, rows
    # The UI ties each joint to its own person: it lies inside that box.
    regions = tall_ui.store_regions()
    boxes = {
        r["id"].split("#")[0]: r for r in regions if r["type"] == "rectangleregion"
    }
    joints = [r for r in regions if r["type"] == "keypointregion"]
    assert len(joints) == 2 * len(every_joint) - 1, regions
    for joint in joints:
        box = boxes[joint["parentID"]]
        assert box["x"] <= joint["x"] <= box["x"] + box["width"], (joint, box)
        assert box["y"] <= joint["y"] <= box["y"] + box["height"], (joint, box)
