"""Per-label score thresholds: ``model_score_thresholds`` of the extra params."""

from __future__ import annotations

import math

import pytest

from backend.planner import PlanError, plan_config, plan_interactive
from tests.backend.planner.helpers import (
    PERSON_BOX,
    POSE,
    PROMPT,
    RECT,
    prompt_item,
    rect_item,
    view,
)

TWO_CONTROLS = view(
    '<RectangleLabels name="label" toName="image" model_score_threshold="0.6">'
    '<Label value="Car" predicted_values="car,truck"/><Label value="Person"/>'
    "</RectangleLabels>",
    '<PolygonLabels name="poly" toName="image">'
    '<Label value="Car"/><Label value="Dog"/></PolygonLabels>',
)


def test_a_label_entry_beats_the_attribute_which_beats_the_project_default() -> None:
    plan = plan_config(
        TWO_CONTROLS,
        {
            "model_score_threshold": 0.3,
            "model_score_thresholds": {"Car": 0.8, "Dog": 0.1},
        },
    )
    rect, poly = plan.control("label"), plan.control("poly")
    # Car's entry wins over the control's attribute, for every phrase asked for it
    assert rect.threshold_of("car") == rect.threshold_of("truck") == 0.8
    assert rect.threshold_of("Person") == 0.6  # the attribute, not the project's
    assert poly.threshold_of("Car") == 0.8
    assert poly.threshold_of("Dog") == 0.1
    assert poly.threshold_of("zebra") == 0.3  # no label: the project default
    # The worker drops only what no label of the control keeps.
    assert rect.call.score_threshold == 0.6  # min(0.6, Car 0.8)
    assert poly.call.score_threshold == 0.1  # min(0.3, Car 0.8, Dog 0.1)
    assert plan.notes == []


def test_without_a_control_threshold_the_worker_keeps_everything() -> None:
    plan = plan_config(view(RECT), {"model_score_thresholds": {"Car": 0.7}})
    control = plan.control("label")
    assert control.threshold_of("truck") == 0.7
    assert control.threshold_of("Person") is None
    assert control.call.score_threshold is None


def test_keypoint_instances_take_their_box_label_threshold() -> None:
    # Before the keypoint call gets the Person box its regions have no label;
    # the worker's cut is recomputed once it has: min(0.9, Person 0.4).
    plan = plan_config(
        view(PERSON_BOX, POSE),
        {"model_score_threshold": 0.9, "model_score_thresholds": {"Person": 0.4}},
    )
    kp = plan.control("kp")
    assert kp.box_control == "box"
    assert kp.threshold_of("person") == 0.4
    assert kp.call.score_threshold == 0.4


def test_interactive_answers_use_the_label_threshold() -> None:
    extra = {"model_score_threshold": 0.2, "model_score_thresholds": {"Car": 0.75}}
    config = view(RECT, PROMPT)
    drawn = plan_interactive(
        config, {"result": [rect_item("a", 10, label="Car")]}, extra
    ).controls[0]
    assert drawn.relabel == "Car"
    assert drawn.threshold_of("object_1") == 0.75  # every answer is a Car
    assert drawn.call.score_threshold == 0.2
    typed = plan_interactive(config, {"result": [prompt_item("red car")]}, extra)
    assert typed.controls[0].threshold_of("red car") == 0.75
    person = plan_interactive(config, {"result": [prompt_item("Person")]}, extra)
    assert person.controls[0].threshold_of("Person") == 0.2


@pytest.mark.parametrize(
    ("thresholds", "named"),
    [
        ({"Car": 1.5}, "label 'Car' has threshold 1.5"),
        ({"Car": -0.1}, "label 'Car' has threshold -0.1"),
        ({"Car": "0.5"}, "label 'Car' has threshold '0.5'"),
        ({"Car": True}, "label 'Car' has threshold True"),
        ({"Car": None}, "label 'Car' has threshold None"),
        ({"Person": 0.5, "Car": math.nan}, "label 'Car' has threshold nan"),
        ([0.5], "must be an object of label -> score threshold"),
    ],
)
def test_a_bad_map_is_refused_naming_the_label_and_value(thresholds, named) -> None:
    extra = {"model_score_thresholds": thresholds}
    with pytest.raises(PlanError, match="model_score_thresholds") as info:
        plan_config(view(RECT), extra)
    assert named in str(info.value)
    with pytest.raises(PlanError, match="model_score_thresholds"):
        plan_interactive(view(RECT), {"result": [rect_item("a", 10)]}, extra)


def test_a_label_the_config_lacks_is_a_note_not_an_error() -> None:
    plan = plan_config(
        view(
            RECT,
            '<Choices name="mood" toName="image"><Choice value="Sunny"/></Choices>',
        ),
        {"model_score_thresholds": {"Truck": 0.5, "Car": 0.4, "Sunny": 0.3}},
    )
    # "Truck" is only a phrase asked for Car; "Sunny" is a label of a control
    assert plan.notes == [
        "extra_params model_score_thresholds: 'Truck' is no label of this config "
        "(renamed?); its threshold is not used"
    ]
    assert plan.control("label").threshold_of("truck") == 0.4
