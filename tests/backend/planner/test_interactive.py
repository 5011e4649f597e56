"""Interactive context (drawn boxes, typed phrases, clicks) -> model calls."""

from __future__ import annotations

import pytest

from backend.planner import ContextError, PlanError, plan_interactive
from converters.tasks import Task
from tests.backend.planner.helpers import (
    PERSON_BOX,
    POSE,
    PROMPT,
    RECT,
    kp_item,
    prompt_item,
    rect_item,
    view,
)


def test_drawn_rectangle_asks_visual_prompting_with_same_label_boxes() -> None:
    context = {
        "result": [rect_item("a", 10), rect_item("b", 50, "Person"), rect_item("c", 60)]
    }
    plan = plan_interactive(view(RECT), context)
    (control,) = plan.controls
    call = control.call
    assert call.task is Task.VISUAL_PROMPTING
    # Pixels of a 200x100 image; the Person box is not a reference for Car.
    assert call.visual_prompt_boxes == [
        [20.0, 10.0, 60.0, 60.0],
        [120.0, 10.0, 160.0, 60.0],
    ]
    assert control.relabel == "Car"
    assert control.drop_boxes == call.visual_prompt_boxes


def test_rotated_rectangle_uses_its_bounding_box() -> None:
    item = rect_item("a", 10)
    item["value"]["rotation"] = 90
    box = (
        plan_interactive(view(RECT), {"result": [item]})
        .controls[0]
        .call.visual_prompt_boxes[0]
    )
    # 40x50 px at (20, 10) turned 90 degrees clockwise about its top-left
    # corner spans x -30..20, y 10..50; clipped to the image.
    assert box == pytest.approx([0.0, 10.0, 20.0, 50.0])


def test_text_prompt_detects_the_phrase_with_the_matching_label() -> None:
    plan = plan_interactive(view(RECT, PROMPT), {"result": [prompt_item("trucks")]})
    (control,) = plan.controls
    assert control.call.task is Task.DETECTION
    assert control.call.categories == ["trucks"]
    assert control.control == "label"
    assert control.label_map.resolve("trucks") == "Car"


def test_text_prompt_without_a_matching_label_is_an_error() -> None:
    with pytest.raises(
        PlanError, match=r"prompt 'zebra' matches no label.*Car, Person"
    ):
        plan_interactive(view(RECT, PROMPT), {"result": [prompt_item("zebra")]})


def test_text_prompt_on_free_rectangle_keeps_the_phrase() -> None:
    config = view('<Rectangle name="box" toName="image"/>', PROMPT)
    plan = plan_interactive(config, {"result": [prompt_item("red cup, blue cup")]})
    control = plan.controls[0]
    assert control.call.categories == ["red cup", "blue cup"]
    assert control.label_map.resolve("red cup") == "red cup"


def test_text_prompt_rex_target() -> None:
    config = view(
        RECT,
        '<BrushLabels name="brush" toName="image"><Label value="Car"/></BrushLabels>',
        PROMPT.replace("/>", ' rex_target="brush"/>'),
    )
    control = plan_interactive(config, {"result": [prompt_item("car")]}).controls[0]
    assert control.control == "brush"
    assert control.call.masks == "brush"
    bad = view(RECT, PROMPT.replace("/>", ' rex_target="nothing"/>'))
    with pytest.raises(PlanError, match="'nothing'"):
        plan_interactive(bad, {"result": [prompt_item("car")]})


def test_box_rectangle_still_serves_interactive_prompts() -> None:
    config = view(PERSON_BOX, POSE, PROMPT)
    drawn = plan_interactive(config, {"result": [rect_item("a", 10, "Person", "box")]})
    (control,) = drawn.controls
    assert control.call.task is Task.VISUAL_PROMPTING
    assert control.relabel == "Person"
    typed = plan_interactive(config, {"result": [prompt_item("person")]})
    (control,) = typed.controls
    assert (control.control, control.call.categories) == ("box", ["person"])
    assert control.label_map.resolve("person") == "Person"


SAM_CONFIG = view(
    '<KeyPointLabels name="tag2" toName="image" smart="true">'
    '<Label value="Car"/></KeyPointLabels>',
    '<BrushLabels name="brush" toName="image"><Label value="car"/></BrushLabels>',
)


def test_keypoint_clicks_ask_a_sam_point_prompt() -> None:
    context = {
        "result": [kp_item("a", 10), kp_item("b", 20, positive=False), kp_item("c", 30)]
    }
    (control,) = plan_interactive(SAM_CONFIG, context).controls
    call = control.call
    assert call.sam_points == [
        [100.0, 250.0, 1.0],
        [200.0, 250.0, 0.0],
        [300.0, 250.0, 1.0],
    ]
    assert call.masks == "brush"
    assert control.control == "brush"
    assert control.relabel == "car"  # the clicked label in the brush control's spelling


def test_keypoint_clicks_into_polygon() -> None:
    config = SAM_CONFIG.replace("BrushLabels", "PolygonLabels")
    control = plan_interactive(config, {"result": [kp_item("a", 10)]}).controls[0]
    assert control.call.masks == "polygon"
    assert control.output == "polygonlabels"


def test_interactive_errors() -> None:
    with pytest.raises(PlanError, match="no result"):
        plan_interactive(view(RECT), {"result": []})
    with pytest.raises(PlanError, match="'ghost'"):
        plan_interactive(view(RECT), {"result": [rect_item("a", 1, name="ghost")]})
    with pytest.raises(PlanError, match="matches no label"):
        plan_interactive(SAM_CONFIG, {"result": [kp_item("a", 10, label="Boat")]})
    no_mask = view(
        '<KeyPointLabels name="tag2" toName="image">'
        '<Label value="Car"/></KeyPointLabels>'
    )
    with pytest.raises(
        PlanError, match="BrushLabels / Brush / PolygonLabels / Polygon"
    ):
        plan_interactive(no_mask, {"result": [kp_item("a", 10)]})
    item = rect_item("a", 1)
    del item["original_width"]
    with pytest.raises(PlanError, match="original_width"):
        plan_interactive(view(RECT), {"result": [item]})
    choice = {
        "id": "x",
        "from_name": "label",
        "to_name": "image",
        "type": "choices",
        "value": {},
    }
    with pytest.raises(PlanError, match="choices"):
        plan_interactive(view(RECT), {"result": [choice]})


def test_a_malformed_context_number_is_a_context_error_naming_it() -> None:
    config = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image"><Label value="car"/>'
        "</RectangleLabels></View>"
    )
    region = {
        "id": "r1",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 100,
        "original_height": 100,
        "value": {"x": 1, "y": 1, "width": 5, "height": 5, "rotation": "x" * 500},
    }
    with pytest.raises(ContextError) as caught:
        plan_interactive(config, {"result": [region]})
    message = str(caught.value)
    assert "context.result['r1'].value.rotation must be a finite number" in message
    assert len(message) < 200  # the bad value is cut, not echoed whole


# Free phrases typed into a prompt (issue 11 point 7) ------------------------------
@pytest.mark.parametrize(
    ("typed", "label"),
    [
        ("red sports car", "Car"),  # the label named in the phrase
        ("a white truck", "Car"),  # ... or an alias of it
        ("red cars", "Car"),  # a plural
        ("the person next to the car", "Person"),  # cut at "next"
        ("the left car next to the person", "Car"),  # "left" before any label
    ],
)
def test_a_free_phrase_is_asked_as_typed_and_labelled_by_its_head(typed, label):
    plan = plan_interactive(view(RECT, PROMPT), {"result": [prompt_item(typed)]})
    (control,) = plan.controls
    assert control.call.task is Task.DETECTION
    assert control.call.categories == [typed]
    assert control.label_map.resolve(typed) == label


def test_free_phrases_each_take_their_own_label() -> None:
    plan = plan_interactive(
        view(RECT, PROMPT), {"result": [prompt_item("red sports car, tall person")]}
    )
    (control,) = plan.controls
    assert control.call.categories == ["red sports car", "tall person"]
    assert control.label_map.phrases == {
        "red sports car": "Car",
        "tall person": "Person",
    }


def test_a_phrase_that_is_a_label_still_maps_as_before() -> None:
    plan = plan_interactive(view(RECT, PROMPT), {"result": [prompt_item("Truck")]})
    assert plan.controls[0].call.categories == ["Truck"]
    assert plan.controls[0].label_map.resolve("Truck") == "Car"


def test_the_head_of_a_relational_phrase_is_before_the_relation() -> None:
    desk = view(
        '<RectangleLabels name="label" toName="image"><Label value="laptop"/>'
        '<Label value="cup"/></RectangleLabels>',
        PROMPT,
    )
    for typed, label in [
        ("the cup left of the laptop", "cup"),
        ("the laptop behind the cup", "laptop"),
        ("the cup on top of the laptop", "cup"),
        ("left of the laptop", "laptop"),  # no label before the relation
    ]:
        control = plan_interactive(desk, {"result": [prompt_item(typed)]}).controls[0]
        assert control.call.categories == [typed]
        assert control.label_map.resolve(typed) == label, typed


def test_a_phrase_naming_no_label_takes_the_controls_only_label() -> None:
    config = view(
        '<RectangleLabels name="label" toName="image"><Label value="Vehicle"/>'
        "</RectangleLabels>",
        PROMPT,
    )
    plan = plan_interactive(config, {"result": [prompt_item("red sports car")]})
    assert plan.controls[0].call.categories == ["red sports car"]
    assert plan.controls[0].label_map.resolve("red sports car") == "Vehicle"


def test_a_phrase_naming_none_of_several_labels_lists_them() -> None:
    with pytest.raises(PlanError) as caught:
        plan_interactive(
            view(RECT, PROMPT), {"result": [prompt_item("car, striped zebra")]}
        )
    message = str(caught.value)
    assert "prompt 'striped zebra' matches no label of RectangleLabels 'label'" in (
        message
    )
    assert "(labels: Car, Person)" in message


def test_a_phrase_joining_two_labels_takes_neither() -> None:
    """ "cat and dog" asks for both: no one label fits all its regions."""
    pets = view(
        '<RectangleLabels name="label" toName="image"><Label value="cat"/>'
        '<Label value="dog"/></RectangleLabels>',
        PROMPT,
    )
    with pytest.raises(PlanError, match=r"'cat and dog' matches no label.*commas"):
        plan_interactive(pets, {"result": [prompt_item("cat and dog")]})
    plan = plan_interactive(pets, {"result": [prompt_item("black and white cat")]})
    assert plan.controls[0].label_map.resolve("black and white cat") == "cat"


def test_a_long_unmatched_phrase_is_quoted_cut_in_the_error() -> None:
    typed = "striped zebra " * 40
    with pytest.raises(PlanError) as caught:
        plan_interactive(view(RECT, PROMPT), {"result": [prompt_item(typed)]})
    assert "prompt 'striped zebra striped zebra striped ... matches" in str(
        caught.value
    )
    assert len(str(caught.value)) < 400


def test_an_overlong_prompt_is_refused_naming_the_field() -> None:
    with pytest.raises(ContextError, match=r"context.result\['p'\].value.text is"):
        plan_interactive(
            view(RECT, PROMPT), {"result": [prompt_item("red car " * 200)]}
        )
