"""What an annotator sees after "Retrieve Predictions", in Label Studio's UI.

For each copy-paste config of the README, a test presses "Retrieve
Predictions" in the Data Manager (select all, Tasks Actions, OK: the real
button), opens every task in the labeling UI and checks that the regions
panel lists exactly what Label Studio stored: one row per region with its
type, label and score (two decimals), OCR text in the region's text box,
keypoints nested under their instance's box; the boxes lie where the
prediction put them (read from the UI's store). A screenshot of each task is
saved in the test's tmp dir and named in every assertion message.

Every config is the README's as written. Which model answers:

- detection and masks: the README model (``readme_model_dir``), trained on
  drawn people, cars, trucks, cats and dogs with prompts of one to three
  phrases; the images are such scenes, so each stored box is checked against
  the object drawn under it, label included (a truck is labelled ``car``
  through ``predicted_values``). Masks come from a tiny random SAM (shape
  meaningless), their labels from the model.
- keypoints and OCR: a scripted Rex-Omni (tests/ui/scripted_rexomni.py)
  through the ``openai`` engine. The README model learnt no keypoints (too
  costly to train, see ``worker.training.readme_tasks.TASK_SHARES``) and no
  tiny model here reads text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Backend, LabelStudio
from tests.e2e.lsclient import LabelStudioClient
from tests.e2e.scene_projects import (
    SceneProject,
    label_hits,
    mask_labels,
    readme_config,
    scene_project,
    scenes,
)
from tests.e2e.test_labelstudio_e2e import Project, connect, predictions_by_task
from tests.ui.labelstudio_ui import (
    REGION_CLASSES,
    LabelStudioUI,
    Row,
    expected_rows,
    instances,
    rows_match,
)
from tests.ui.projects import people_image, picture_project, sign_image
from tests.ui.scripted_rexomni import OCR_LINES

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.ui]

IMAGES = 3
"""Tasks per project: each is opened in the browser (about 1-3 s each)."""

MASK_SCENES = (("cat", "dog"), ("dog", "person"), ("cat", "car"), ("dog",), ("cat",))
"""The mask project's images: a mask is checked only by its label, so more
images than the detection project's (three), most with one animal."""
MIN_ON_OBJECT = 0.8
"""Of the boxes, the share that must lie on a drawn object (IoU >= 0.5; the
README model: 0.96 on held-out three-phrase prompts)."""
MIN_RIGHT_LABEL = 0.8
"""Of the boxes on a drawn object, the share that must carry its label. The
README model: 0.94 on held-out three-phrase prompts (bench_readme_model);
the bar leaves room for a handful of objects."""
DETECTION_LABELS = {"person": "person", "car": "car", "truck": "car"}
"""Drawn word -> the README detection config's label for it."""
MIN_FOUND = 0.5
"""Of the drawn objects the config asks for, the share that must be found
with their label (the README model: 0.92 on three phrases)."""

GEOMETRY_SLACK = 1e-6
"""Percent: the UI keeps the stored floats (JSON round trip only)."""


def retrieve_in_ui(
    ui: LabelStudioUI,
    client: LabelStudioClient,
    project: Project | SceneProject,
    ml: dict[str, Any],
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
    ui: LabelStudioUI,
    project: Project | SceneProject,
    stored: dict[int, dict[str, Any]],
    name: str,
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
    label_studio: LabelStudio, readme_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """The README's detection config (person; car with ``predicted_values``
    car, truck: three phrases in one prompt) on scenes of people, cars and
    trucks: every box is listed as a rectangle region with its label and
    score, at its place, and lies on a drawn object of its label."""
    client = label_studio.client
    drawn = scenes(61, [("person", "car", "truck"), ("truck", "person"), ("car",)])

    project = scene_project(
        client,
        "ui detection",
        readme_config("Detection, with smart boxes and a text prompt"),
        tmp_path / "images",
        drawn,
    )
    ml = connect(client, project, readme_backend, "rexlabel")
    stored = retrieve_in_ui(ui, client, project, ml)
    shown = check_tasks(ui, project, stored, "detection")
    rows = [row for task_rows in shown.values() for row in task_rows]
    assert {r.kind for r in rows} == {"rectangleregion"}, rows
    assert all(r.score is not None and 0 < r.score <= 1 for r in rows), rows
    hits = label_hits(stored, project, DETECTION_LABELS)
    assert hits.on_object_share >= MIN_ON_OBJECT, (hits, tmp_path)
    assert hits.right_share >= MIN_RIGHT_LABEL, (hits, tmp_path)
    assert hits.found_share >= MIN_FOUND, (hits, tmp_path)


def test_masks_regions_show_label_type_and_score(
    label_studio: LabelStudio, readme_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """The README's mask config (BrushLabels cat and dog, smart click
    KeyPointLabels skipped by the model: two phrases in one prompt) on scenes
    of cats and dogs: each mask is listed as a brush region with its label
    and score. A mask has no box to match (and the tiny SAM's shapes mean
    nothing), so labels are counted per image: nearly all masks are
    accounted for by an animal of their label drawn on that image (one mask
    each), and at least half the animals get one. The single-animal images
    are where a wrong label shows."""
    client = label_studio.client
    drawn = scenes(62, MASK_SCENES)
    project = scene_project(
        client, "ui masks", readme_config("Masks"), tmp_path / "images", drawn
    )
    ml = connect(client, project, readme_backend, "rexlabel")
    stored = retrieve_in_ui(ui, client, project, ml)
    shown = check_tasks(ui, project, stored, "masks")
    rows = [row for task_rows in shown.values() for row in task_rows]
    assert {r.kind for r in rows} == {"brushregion"}, rows
    assert all(r.score is not None and 0 < r.score <= 1 for r in rows), rows
    masks = mask_labels(stored, project, "brushlabels")
    assert masks.right >= MIN_RIGHT_LABEL * masks.regions, (masks, tmp_path)
    animals = sum(o.word in ("cat", "dog") for s in drawn for o in s.objects)
    assert masks.right >= MIN_FOUND * animals, (masks, animals, tmp_path)


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
