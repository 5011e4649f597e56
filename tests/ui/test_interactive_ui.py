"""Interactive annotation in Label Studio's UI, each flow ending in an accepted
suggestion: a typed phrase, a smart rectangle (visual prompt), a smart
keypoint click (a SAM mask), and the regression of an accepted suggestion
that replaced the box the annotator had just moved (fixed in f130136:
region ids are unique per prediction).

Each flow is what a person does: Auto-Annotation on, type or draw with the
mouse, wait for the suggestion, press the bottom bar's accept button, and for
the regression also Submit. The request Label Studio sends is read from the
network, so a test shows what the UI asked as well as what it got back.

Who answers: the trained tiny model (one-phrase detection only) for the
typed phrase and the regression (it finds its shape when asked one phrase),
with a tiny random SAM for the click (it always gives a mask; its shape is
meaningless, its format and label are checked). For the smart rectangle the
scripted Rex-Omni (tests/ui/scripted_rexomni.py) answers: the tiny model
never learnt visual prompting and suggested something for 2 of 16 boxes drawn
on its shapes, 0 of 16 beside a pre-annotated box (measured through the API
with the boxes the UI sends).

The interactive tests but the regression switch Label Studio's "Use
predictions to prelabel tasks" off: an empty task, so the request holds only
what the test typed, drew or clicked.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import Backend, LabelStudio
from tests.e2e.test_labelstudio_e2e import (
    BLUE,
    RED,
    Project,
    connect,
    make_project,
    predictions_by_task,
)
from tests.ui.labelstudio_ui import LabelStudioUI
from tests.ui.projects import (
    bins_to_percent,
    look_alikes_image,
    picture_project,
    readme_config,
    without_preannotation,
)
from tests.ui.scripted_rexomni import LOOK_ALIKES
from worker.training.synthetic import IMAGE_SIZE, ShapeSample

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.ui]

IMAGES = 2
"""Tasks of the typed-phrase, click and regression projects."""

MOVE_PERCENT = 10.0
"""How far the regression test drags the pre-annotated box (percent of the
image), towards the image's centre so that it stays inside."""

MOVED_SLACK = 2.0
"""Percent: a drag moves by whole screen pixels (about 0.15 % of this image
per pixel) and Label Studio snaps nothing; the check only needs to tell a
moved box from one put back."""

GEOMETRY_SLACK = 1e-6
"""Percent: geometry kept as sent (JSON round trip only)."""


def box_percent(sample: ShapeSample) -> tuple[float, float, float, float]:
    """The shape's box as x0, y0, x1, y1 in percent of the image."""
    return tuple(v / IMAGE_SIZE * 100 for v in sample.box)


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


def shapes_project(
    label_studio: LabelStudio,
    backend: Backend,
    title: str,
    config: str,
    tmp_path,
    seed: int,
    prelabel: bool = False,
) -> Project:
    """A one-label shapes project (tests/e2e's config ``config``) with the
    model connected; pre-annotation off unless ``prelabel``."""
    labels = BLUE if config == "brush" else RED
    client = label_studio.client
    project = make_project(
        client, title, config, tmp_path / "images", seed, IMAGES, labels
    )
    connect(client, project, backend, "rexlabel")
    if not prelabel:
        without_preannotation(client, project.id)
    return project


def test_typed_phrase_suggestion_accepted(
    label_studio: LabelStudio, rexlabel_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """Typing "red square" into the prompt box and pressing Enter: the UI asks
    with the typed text, the backend suggests boxes labelled ``red square``,
    and accepting them makes them the annotator's boxes where suggested."""
    project = shapes_project(
        label_studio, rexlabel_backend, "ui phrase", "rectangles", tmp_path, 51
    )
    task_id, sample = next(iter(project.tasks.items()))
    ui.open_task(project.id, task_id, regions=0)
    ui.auto_annotation_on()
    request, answer = ui.type_prompt(sample.phrase)
    asked = last_context_region(request)
    assert (asked["type"], asked["value"]["text"]) == ("textarea", [sample.phrase])
    suggested = suggestions_of(answer)
    assert suggested, f"no box for {sample.phrase!r}: {answer}"
    accepted = accept_and_check(
        ui, suggested, "rectangleregion", sample.phrase, "phrase"
    )
    by_id = {s["id"]: s["value"] for s in suggested}
    for region in accepted:
        value = by_id[region["id"].split("#")[0]]
        assert abs(region["x"] - value["x"]) <= GEOMETRY_SLACK, (region, value)
        assert abs(region["y"] - value["y"]) <= GEOMETRY_SLACK, (region, value)


def test_smart_rectangle_suggestion_accepted(
    label_studio: LabelStudio, scripted_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """The README's detection config: with the smart rectangle tool and the
    label ``car``, a box drawn on one of two look-alike objects. The UI asks
    with the drawn box (a visual prompt); of the two boxes the model finds,
    the drawn one is dropped and the other is suggested with the drawn box's
    label, where the model put it; accepting it makes it the annotator's."""
    client = label_studio.client
    project = picture_project(
        client,
        "ui visual prompt",
        readme_config("Detection, with smart boxes and a text prompt"),
        look_alikes_image(),
        tmp_path / "images",
        count=1,
    )
    connect(client, project, scripted_backend, "rexlabel (scripted)")
    without_preannotation(client, project.id)
    (task_id,) = project.tasks
    ui.open_task(project.id, task_id, regions=0)
    ui.auto_annotation_on()
    ui.choose_smart_tool("rectangle-tool")
    ui.choose_label("car")
    drawn_box, other_box = (bins_to_percent(box) for box in LOOK_ALIKES)
    x0, y0, x1, y1 = drawn_box
    request, answer = ui.interactive(lambda: ui.drag((x0, y0), (x1, y1)))
    drawn = last_context_region(request)
    assert drawn["type"] == "rectanglelabels", drawn
    assert drawn["value"]["rectanglelabels"] == ["car"], drawn
    assert abs(drawn["value"]["x"] - x0) < 1 and abs(drawn["value"]["y"] - y0) < 1
    suggested = suggestions_of(answer)
    assert len(suggested) == 1, answer
    (accepted,) = accept_and_check(ui, suggested, "rectangleregion", "car", "visual")
    x0, y0, x1, y1 = other_box
    found = (accepted["x"], accepted["y"], accepted["width"], accepted["height"])
    assert found == pytest.approx((x0, y0, x1 - x0, y1 - y0), abs=1e-6), accepted


def test_smart_click_mask_suggestion_accepted(
    label_studio: LabelStudio,
    rexlabel_backend_queue: Backend,
    ui: LabelStudioUI,
    tmp_path,
) -> None:
    """A click with the smart keypoint tool (label ``blue triangle`` of the
    clicks control) on the shape: the UI asks with the click as a positive
    keypoint, the worker's SAM answers a brush mask labelled like the click,
    and accepting it makes it the annotator's brush region."""
    project = shapes_project(
        label_studio, rexlabel_backend_queue, "ui click", "brush", tmp_path, 52
    )
    task_id, sample = next(iter(project.tasks.items()))
    ui.open_task(project.id, task_id, regions=0)
    ui.auto_annotation_on()
    ui.choose_label(sample.phrase, control_index=1)  # the clicks KeyPointLabels
    ui.choose_smart_tool("key-point-tool")
    x0, y0, x1, y1 = box_percent(sample)
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    request, answer = ui.interactive(lambda: ui.click_image(*centre))
    click = last_context_region(request)
    assert click["type"] == "keypointlabels", click
    assert click["from_name"] == "clicks", click
    assert click["value"]["keypointlabels"] == [sample.phrase], click
    suggested = suggestions_of(answer)
    assert [(r["type"], r["from_name"]) for r in suggested] == [
        ("brushlabels", "brush")
    ], answer
    accept_and_check(ui, suggested, "brushregion", sample.phrase, "click")


def test_accepting_a_suggestion_keeps_the_moved_box(
    label_studio: LabelStudio, rexlabel_backend: Backend, ui: LabelStudioUI, tmp_path
) -> None:
    """The regression: the annotator moves a pre-annotated box, types a
    phrase, accepts the suggestion and submits. The moved box stays where it
    was moved (it used to go back: the suggestion carried its id), the
    suggestion is a region of its own, and the submitted annotation holds
    both."""
    client = label_studio.client
    project = shapes_project(
        label_studio,
        rexlabel_backend,
        "ui moved box",
        "rectangles",
        tmp_path,
        53,
        prelabel=True,
    )
    client.retrieve_predictions(project.id)
    stored = predictions_by_task(client, project)
    one_box = [(t, p) for t, p in stored.items() if len(p["result"]) == 1]
    assert one_box, f"no task pre-annotated with one box: {stored}"
    task_id, prediction = one_box[0]
    sample = project.tasks[task_id]
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
    _, answer = ui.type_prompt(sample.phrase)
    suggested = suggestions_of(answer)
    assert suggested, f"no box for {sample.phrase!r}: {answer}"
    assert not {r["id"] for r in suggested} & {r["id"] for r in prediction["result"]}
    accept_and_check(ui, suggested, "rectangleregion", sample.phrase, "moved")

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
