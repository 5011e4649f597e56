"""Interactive annotation in Label Studio's UI, each flow ending in an accepted
suggestion: a typed phrase, a smart rectangle (visual prompt), a smart
keypoint click (a SAM mask), and the regression of an accepted suggestion
that replaced the box the annotator had just moved (fixed in f130136:
region ids are unique per prediction).

Each flow is what a person does: Auto-Annotation on, type or draw with the
mouse, wait for the suggestion, press the bottom bar's accept button, and for
the regression also Submit. The request Label Studio sends is read from the
network, so a test shows what the UI asked as well as what it got back.

Every project has one of the README's configs as written. Who answers: the
README model (``readme_model_dir``: drawn people, cars, trucks, cats and
dogs, prompts of one to three phrases, visual prompts) for the typed phrase,
the smart rectangle and the regression, on scenes it was trained to read;
each suggestion is checked against the object drawn under it. For the click
a tiny random SAM answers (it always gives a mask; its shape is meaningless,
its format and label are checked).

The interactive tests but the regression switch Label Studio's "Use
predictions to prelabel tasks" off: an empty task, so the request holds only
what the test typed, drew or clicked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from backend.planner.interactive import DRAWN_BOX_IOU
from tests.e2e.conftest import Backend, LabelStudio
from tests.e2e.scene_projects import (
    HIT_IOU,
    SceneProject,
    readme_config,
    region_box,
    scene_project,
    scenes,
)
from tests.e2e.test_labelstudio_e2e import connect, predictions_by_task
from tests.ui.labelstudio_ui import LabelStudioUI
from tests.ui.projects import without_preannotation
from worker.training.objects import DrawnObject
from worker.training.readme_tasks import Scene, best_match
from worker.training.synthetic import IMAGE_SIZE, box_iou

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.ui]

MOVE_PERCENT = 10.0
"""How far the regression test drags the pre-annotated box (percent of the
image), towards the image's centre so that it stays inside."""

MOVED_SLACK = 2.0
"""Percent: a drag moves by whole screen pixels (about 0.15 % of this image
per pixel) and Label Studio snaps nothing; the check only needs to tell a
moved box from one put back."""

GEOMETRY_SLACK = 1e-6
"""Percent: geometry kept as sent (JSON round trip only)."""


DETECTION = "Detection, with smart boxes and a text prompt"
"""The README config of the typed phrase, smart rectangle and regression."""


def box_percent(box: Sequence[float]) -> tuple[float, float, float, float]:
    """An xyxy box in pixels of a scene as x0, y0, x1, y1 percent."""
    return tuple(v / IMAGE_SIZE * 100 for v in box)


def on_object(region: dict[str, Any], scene: Scene) -> DrawnObject | None:
    """The drawn object a suggested rectangle lies on (IoU >= HIT_IOU)."""
    index, iou = best_match(region_box(region), [o.box for o in scene.objects])
    return scene.objects[index] if index is not None and iou >= HIT_IOU else None


def suggestions_of(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """The regions of Label Studio's answer to an interactive request."""
    assert "errors" not in answer, answer
    return answer["data"]["result"]


def last_context_region(request: dict[str, Any]) -> dict[str, Any]:
    """What the UI sent as the region that asks (the context's last one)."""
    return request["context"]["result"][-1]


def accept_and_check(
    ui: LabelStudioUI, suggested: list[dict[str, Any]], kind: str, label: str, name
) -> list[dict[str, Any]]:
    """Wait for ``suggested`` on screen, accept them, and check they became
    the annotator's regions of ``kind`` with ``label``; returns them."""
    ui.wait_for_suggestions(len(suggested))
    before = ui.screenshot(f"{name}-suggested")
    pending = ui.suggested_regions()
    assert {r["id"].split("#")[0] for r in pending} == {r["id"] for r in suggested}, (
        before,
        pending,
    )
    ui.accept_suggestions()
    after = ui.screenshot(f"{name}-accepted")
    accepted = [
        r
        for r in ui.store_regions()
        if r["id"].split("#")[0] in {s["id"] for s in suggested}
    ]
    assert len(accepted) == len(suggested), (after, ui.store_regions())
    for region in accepted:
        assert region["type"] == kind and region["label"] == label, (after, region)
        assert region["origin"] == "manual", (after, region)
    return accepted


def readme_project(
    label_studio: LabelStudio,
    backend: Backend,
    title: str,
    heading: str,
    drawn: list[Scene],
    tmp_path,
    prelabel: bool = False,
) -> SceneProject:
    """A project of the README config under ``heading`` with one task per
    scene and the model connected; pre-annotation off unless ``prelabel``."""
    client = label_studio.client
    project = scene_project(
        client, title, readme_config(heading), tmp_path / "images", drawn
    )
    connect(client, project, backend, "rexlabel")
    if not prelabel:
        without_preannotation(client, project.id)
    return project


def test_typed_phrase_suggestion_accepted(
    label_studio: LabelStudio, readme_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """Typing "truck" into the prompt box of the README's detection config
    and pressing Enter on a truck beside a person: the UI asks with the typed
    text, the backend suggests a box on the truck labelled ``car`` (the
    label whose ``predicted_values`` name trucks), and accepting it makes it
    the annotator's box where suggested."""
    drawn = scenes(71, [("truck", "person")])
    project = readme_project(
        label_studio, readme_backend, "ui phrase", DETECTION, drawn, tmp_path
    )
    ((task_id, scene),) = project.scenes.items()
    ui.open_task(project.id, task_id, regions=0)
    ui.auto_annotation_on()
    request, answer = ui.type_prompt("truck")
    asked = last_context_region(request)
    assert (asked["type"], asked["value"]["text"]) == ("textarea", ["truck"])
    suggested = suggestions_of(answer)
    assert suggested, f"no box for 'truck': {answer}"
    for region in suggested:
        found = on_object(region, scene)
        assert found is not None and found.word == "truck", (region, scene.objects)
    accepted = accept_and_check(ui, suggested, "rectangleregion", "car", "phrase")
    by_id = {s["id"]: s["value"] for s in suggested}
    for region in accepted:
        value = by_id[region["id"].split("#")[0]]
        assert abs(region["x"] - value["x"]) <= GEOMETRY_SLACK, (region, value)
        assert abs(region["y"] - value["y"]) <= GEOMETRY_SLACK, (region, value)


def test_smart_rectangle_suggestion_accepted(
    label_studio: LabelStudio, readme_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """The README's detection config: with the smart rectangle tool and the
    label ``car``, a box drawn on one of three cars. The UI asks with the
    drawn box (a visual prompt); the model finds the look-alikes and what
    it finds of the drawn box is dropped (IoU ``DRAWN_BOX_IOU`` or more with
    it): every suggestion lies on a car, at least one on another car, with
    the drawn box's label; accepting them makes them the annotator's."""
    drawn = scenes(72, [("car", "car", "car")])
    assert len(drawn[0].objects) >= 2, drawn[0].objects
    project = readme_project(
        label_studio, readme_backend, "ui visual prompt", DETECTION, drawn, tmp_path
    )
    ((task_id, scene),) = project.scenes.items()
    ui.open_task(project.id, task_id, regions=0)
    ui.auto_annotation_on()
    ui.choose_smart_tool("rectangle-tool")
    ui.choose_label("car")
    prompt_car = scene.objects[0]
    x0, y0, x1, y1 = box_percent(prompt_car.box)
    request, answer = ui.interactive(lambda: ui.drag((x0, y0), (x1, y1)))
    drawn_region = last_context_region(request)
    assert drawn_region["type"] == "rectanglelabels", drawn_region
    assert drawn_region["value"]["rectanglelabels"] == ["car"], drawn_region
    value = drawn_region["value"]
    assert abs(value["x"] - x0) < 1 and abs(value["y"] - y0) < 1, (value, x0, y0)
    suggested = suggestions_of(answer)
    assert suggested, f"no look-alike suggested: {answer}"
    cars = [on_object(region, scene) for region in suggested]
    boxes = [region_box(r) for r in suggested]
    assert None not in cars, (boxes, scene.objects)
    assert any(c is not prompt_car for c in cars), (boxes, scene.objects)
    assert all(box_iou(b, prompt_car.box) < DRAWN_BOX_IOU for b in boxes), boxes
    accept_and_check(ui, suggested, "rectangleregion", "car", "visual")


def test_smart_click_mask_suggestion_accepted(
    label_studio: LabelStudio,
    rexlabel_backend_queue: Backend,
    ui: LabelStudioUI,
    tmp_path,
) -> None:
    """The README's mask config on the queued backend: a click with the smart
    keypoint tool (label ``cat`` of the clicks control) on a cat. The UI asks
    with the click as a positive keypoint, the worker's SAM answers a brush
    mask labelled like the click, and accepting it makes it the annotator's
    brush region."""
    drawn = scenes(73, [("cat", "dog")])
    project = readme_project(
        label_studio, rexlabel_backend_queue, "ui click", "Masks", drawn, tmp_path
    )
    ((task_id, scene),) = project.scenes.items()
    (cat,) = [o for o in scene.objects if o.word == "cat"]
    ui.open_task(project.id, task_id, regions=0)
    ui.auto_annotation_on()
    ui.choose_label("cat", control_index=1)  # the clicks KeyPointLabels
    ui.choose_smart_tool("key-point-tool")
    x0, y0, x1, y1 = box_percent(cat.box)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    request, answer = ui.interactive(lambda: ui.click_image(*centre))
    click = last_context_region(request)
    assert click["type"] == "keypointlabels", click
    assert click["from_name"] == "clicks", click
    assert click["value"]["keypointlabels"] == ["cat"], click
    suggested = suggestions_of(answer)
    assert [(r["type"], r["from_name"]) for r in suggested] == [
        ("brushlabels", "brush")
    ], answer
    accept_and_check(ui, suggested, "brushregion", "cat", "click")


def test_accepting_a_suggestion_keeps_the_moved_box(
    label_studio: LabelStudio, readme_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """The regression: the annotator moves a pre-annotated box, types a
    phrase, accepts the suggestion and submits. The moved box stays where it
    was moved (it used to go back: the suggestion carried its id), the
    suggestion is a region of its own, and the submitted annotation holds
    both."""
    client = label_studio.client
    drawn = scenes(74, [("person",), ("car",)])
    project = readme_project(
        label_studio,
        readme_backend,
        "ui moved box",
        DETECTION,
        drawn,
        tmp_path,
        prelabel=True,
    )
    client.retrieve_predictions(project.id)
    stored = predictions_by_task(client, project)
    one_box = [(t, p) for t, p in stored.items() if len(p["result"]) == 1]
    assert one_box, f"no task pre-annotated with one box: {stored}"
    task_id, prediction = one_box[0]
    (drawn_object,) = project.scenes[task_id].objects
    phrase = drawn_object.word
    ui.open_task(project.id, task_id, regions=1)
    (box,) = ui.store_regions()
    dx = MOVE_PERCENT if box["x"] + box["width"] / 2 < 50 else -MOVE_PERCENT
    dy = MOVE_PERCENT if box["y"] + box["height"] / 2 < 50 else -MOVE_PERCENT
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    ui.drag(centre, (centre[0] + dx, centre[1] + dy))
    (moved,) = ui.store_regions()
    moved_shot = ui.screenshot("moved")
    assert moved["id"] == box["id"] and moved["origin"] == "prediction-changed", (
        moved_shot,
        moved,
    )
    assert abs(moved["x"] - (box["x"] + dx)) <= MOVED_SLACK, (moved_shot, box, moved)
    assert abs(moved["y"] - (box["y"] + dy)) <= MOVED_SLACK, (moved_shot, box, moved)

    ui.auto_annotation_on()
    _, answer = ui.type_prompt(phrase)
    suggested = suggestions_of(answer)
    assert suggested, f"no box for {phrase!r}: {answer}"
    scene = project.scenes[task_id]
    assert all(on_object(r, scene) is drawn_object for r in suggested), (
        [region_box(r) for r in suggested],
        drawn_object,
    )
    assert not {r["id"] for r in suggested} & {r["id"] for r in prediction["result"]}
    accept_and_check(ui, suggested, "rectangleregion", phrase, "moved")

    boxes = [r for r in ui.store_regions() if r["type"] == "rectangleregion"]
    kept = [r for r in boxes if r["id"] == box["id"]]
    shot = ui.screenshot("after-accept")
    assert len(boxes) == 1 + len(suggested), (shot, boxes)
    assert len(kept) == 1, (shot, boxes)
    for key in ("x", "y", "width", "height"):
        assert abs(kept[0][key] - moved[key]) <= GEOMETRY_SLACK, (shot, key, kept)

    saved = ui.submit()
    saved_boxes = [r for r in saved["result"] if r["type"] == "rectanglelabels"]
    assert len(saved_boxes) == 1 + len(suggested), saved["result"]
    assert any(
        abs(r["value"]["x"] - moved["x"]) <= GEOMETRY_SLACK
        and abs(r["value"]["y"] - moved["y"]) <= GEOMETRY_SLACK
        for r in saved_boxes
    ), (moved, saved_boxes)
