"""Label config (and interactive context) -> model calls."""

from __future__ import annotations

import pytest

from backend.planner import (
    OCR_DEFAULT_CATEGORY,
    ContextError,
    PlanError,
    checked_task_id,
    plan_config,
    plan_interactive,
    task_id_of,
)
from converters.keypoint_sets import PERSON
from converters.tasks import Task


def view(*tags: str, image: str = '<Image name="image" value="$image"/>') -> str:
    return "<View>" + image + "".join(tags) + "</View>"


RECT = (
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car" predicted_values="car,truck"/><Label value="Person"/>'
    "</RectangleLabels>"
)
OCR_TEMPLATE = view(
    '<Labels name="label" toName="image"><Label value="Text"/>'
    '<Label value="Handwriting"/></Labels>',
    '<Rectangle name="bbox" toName="image" strokeWidth="3"/>',
    '<Polygon name="poly" toName="image" strokeWidth="3"/>',
    '<TextArea name="transcription" toName="image" editable="true" perRegion="true" '
    'required="true" maxSubmissions="1" rows="5" displayMode="region-list"/>',
)


# Whole config -------------------------------------------------------------------
def test_rectangle_labels_detect_aliases_and_labels() -> None:
    plan = plan_config(view(RECT))
    (control,) = plan.controls
    assert control.control == "label"
    assert control.output == "rectanglelabels"
    assert control.value_key == "image"
    call = control.call
    assert call.task is Task.DETECTION
    assert call.key == "label"
    assert call.categories == ["car", "truck", "Person"]
    assert call.masks == "none"
    assert control.label_map.resolve("truck") == "Car"


def test_attributes_override_the_plan() -> None:
    plan = plan_config(
        view(
            '<RectangleLabels name="label" toName="image" model_score_threshold="0.35" '
            'rex_max_instances="12" rex_categories="truck" rex_task="gui_grounding">'
            '<Label value="Car" predicted_values="car,truck"/></RectangleLabels>'
        )
    )
    call = plan.controls[0].call
    assert call.task is Task.GUI_GROUNDING
    assert call.categories == ["truck"]
    assert call.score_threshold == 0.35
    assert call.max_instances == 12


def test_extra_params_give_project_defaults_attributes_win() -> None:
    config = view(
        RECT,
        '<PolygonLabels name="poly" toName="image" model_score_threshold="0.9">'
        '<Label value="Car"/></PolygonLabels>',
    )
    plan = plan_config(
        config,
        {"model_score_threshold": 0.2, "generation": {"max_new_tokens": 64}},
    )
    assert plan.control("label").call.score_threshold == 0.2
    assert plan.control("poly").call.score_threshold == 0.9
    assert plan.control("label").call.generation == {"max_new_tokens": 64}


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ('model_score_threshold="1.5"', "model_score_threshold"),
        ('model_score_threshold="high"', "model_score_threshold"),
        ('rex_max_instances="0"', "rex_max_instances"),
        ('rex_task="segmentation"', "rex_task"),
        ('rex_task="pointing"', "cannot be shown as rectangle"),
        ('rex_task="visual_prompting"', "drawn box"),
        ('rex_categories="zebra"', "zebra"),
    ],
)
def test_bad_attributes_name_the_tag(attr: str, message: str) -> None:
    config = view(
        f'<RectangleLabels name="label" toName="image" {attr}>'
        '<Label value="Car"/></RectangleLabels>'
    )
    with pytest.raises(PlanError, match=message) as info:
        plan_config(config)
    assert "RectangleLabels 'label'" in str(info.value)


def test_keypoint_labels_of_a_known_set_ask_keypoint() -> None:
    labels = "".join(f'<Label value="{j.title()}"/>' for j in PERSON.joints[:5])
    plan = plan_config(
        view(f'<KeyPointLabels name="kp" toName="image">{labels}</KeyPointLabels>')
    )
    call = plan.controls[0].call
    assert call.task is Task.KEYPOINT
    assert call.keypoint_type == "person"
    assert call.categories == ["person"]
    # Joint names as the model writes them map to the config's spelling.
    assert plan.controls[0].label_map.resolve("left eye") == "Left Eye"


def test_keypoint_categories_attribute() -> None:
    labels = '<Label value="nose"/><Label value="neck"/><Label value="root of tail"/>'
    plan = plan_config(
        view(
            '<KeyPointLabels name="kp" toName="image" rex_categories="cat,dog">'
            f"{labels}</KeyPointLabels>"
        )
    )
    call = plan.controls[0].call
    assert call.keypoint_type == "animal"
    assert call.categories == ["cat", "dog"]


def test_other_keypoint_labels_ask_pointing() -> None:
    plan = plan_config(
        view(
            '<KeyPointLabels name="kp" toName="image">'
            '<Label value="Banana"/></KeyPointLabels>'
        )
    )
    call = plan.controls[0].call
    assert call.task is Task.POINTING
    assert call.categories == ["Banana"]
    assert plan.controls[0].output == "keypointlabels"


def test_keypoint_task_on_non_joints_is_an_error() -> None:
    config = view(
        '<KeyPointLabels name="kp" toName="image" rex_task="keypoint">'
        '<Label value="Banana"/></KeyPointLabels>'
    )
    with pytest.raises(PlanError, match="joints of a keypoint set"):
        plan_config(config)


JOINTS = "".join(f'<Label value="{j.title()}"/>' for j in PERSON.joints)
POSE = f'<KeyPointLabels name="kp" toName="image">{JOINTS}</KeyPointLabels>'
PERSON_BOX = (
    '<RectangleLabels name="box" toName="image"><Label value="Person"/>'
    "</RectangleLabels>"
)


def test_keypoint_instances_get_their_box_from_a_rectangle_of_that_category() -> None:
    plan = plan_config(view(PERSON_BOX, POSE))
    # The rectangle's only label comes with the instances: no detection call.
    (kp,) = plan.controls
    assert kp.control == "kp"
    assert kp.call.task is Task.KEYPOINT
    assert kp.box_control == "box"
    assert kp.box_map.resolve("person") == "Person"
    assert any("RectangleLabels 'box': Person boxes" in n for n in plan.notes)
    (job,) = plan.image_jobs({"id": 3, "data": {"image": "a.jpg"}})
    assert [c.key for c in job.calls] == ["kp"]


def test_box_rectangle_still_detects_its_other_labels() -> None:
    rect = RECT.replace(
        '<Label value="Person"/>', '<Label value="Person" predicted_values="man"/>'
    )
    plan = plan_config(view(rect, POSE))
    assert plan.control("kp").box_control == "label"
    rect_plan = plan.control("label")
    assert rect_plan.call.task is Task.DETECTION
    # "man" is an alias of the Person label, which the keypoint instances get.
    assert rect_plan.call.categories == ["car", "truck"]
    assert rect_plan.label_map.labels == ["Car"]


def test_only_the_phrases_naming_an_instance_category_stop_being_detected() -> None:
    animal = '<Label value="nose"/><Label value="neck"/><Label value="root of tail"/>'
    plan = plan_config(
        view(
            '<RectangleLabels name="box" toName="image">'
            '<Label value="Animal" predicted_values="cat,dog"/></RectangleLabels>',
            f'<KeyPointLabels name="kp" toName="image" rex_categories="cat">'
            f"{animal}</KeyPointLabels>",
        )
    )
    assert plan.control("kp").box_map.resolve("cat") == "Animal"
    assert plan.control("box").call.categories == ["dog"]


@pytest.mark.parametrize(
    "rect",
    [
        # No label for the category.
        RECT.replace('<Label value="Person"/>', ""),
        # A RectangleLabels out of pre-annotation does not get boxes either.
        PERSON_BOX.replace('toName="image"', 'toName="image" rex_skip="true"'),
        # Another image.
        PERSON_BOX.replace('toName="image"', 'toName="other"'),
    ],
    ids=["no-label", "rex-skip", "other-image"],
)
def test_keypoints_without_a_box_rectangle_are_unchanged(rect: str) -> None:
    config = view(rect, POSE).replace(
        "</View>", '<Image name="other" value="$other"/></View>'
    )
    plan = plan_config(config)
    kp = plan.control("kp")
    assert kp.box_control is None and kp.box_map is None
    assert kp.call.categories == ["person"]
    for control in plan.controls:
        if control.tag == "RectangleLabels":
            assert control.call.categories in (["car", "truck"], ["Person"])


def test_polygon_and_brush_labels_detect_then_sam() -> None:
    plan = plan_config(
        view(
            '<PolygonLabels name="poly" toName="image">'
            '<Label value="Car"/></PolygonLabels>',
            '<BrushLabels name="brush" toName="image">'
            '<Label value="Car"/></BrushLabels>',
        )
    )
    assert plan.control("poly").call.masks == "polygon"
    assert plan.control("brush").call.masks == "brush"
    assert {c.call.task for c in plan.controls} == {Task.DETECTION}
    # Several controls on one image are served in one pass: one ImageJob.
    (job,) = plan.image_jobs({"id": 4, "data": {"image": "/data/upload/1/a.jpg"}})
    assert [c.key for c in job.calls] == ["poly", "brush"]
    assert job.task_id == 4
    assert job.image == "/data/upload/1/a.jpg"


def test_rex_sam_false() -> None:
    plan = plan_config(
        view(
            '<PolygonLabels name="poly" toName="image" rex_sam="false">'
            '<Label value="Car"/></PolygonLabels>'
        )
    )
    assert plan.controls[0].call.masks == "none"
    with pytest.raises(PlanError, match=r"BrushLabels 'brush'.*SAM"):
        plan_config(
            view(
                '<BrushLabels name="brush" toName="image" rex_sam="false">'
                '<Label value="Car"/></BrushLabels>'
            )
        )
    with pytest.raises(PlanError, match="rex_sam='maybe'"):
        plan_config(
            view(
                '<PolygonLabels name="poly" toName="image" rex_sam="maybe">'
                '<Label value="Car"/></PolygonLabels>'
            )
        )


def test_stock_ocr_template_serves_the_rectangle_once() -> None:
    plan = plan_config(OCR_TEMPLATE)
    (control,) = plan.controls
    assert control.control == "bbox"
    assert control.call.task is Task.OCR_BOX
    assert control.call.categories == [OCR_DEFAULT_CATEGORY]
    assert control.text_control == "transcription"
    # The stock template's "Text" is named in "text line": regions take it.
    assert control.labels_control == "label"
    assert control.labels_map.resolve(OCR_DEFAULT_CATEGORY) == "Text"
    assert any("Polygon 'poly'" in note for note in plan.notes)


def test_ocr_labels_tag_used_when_the_category_maps() -> None:
    config = OCR_TEMPLATE.replace(
        '<Label value="Text"/>', '<Label value="Text" predicted_values="word"/>'
    ).replace(
        '<Rectangle name="bbox" toName="image"',
        '<Rectangle name="bbox" toName="image" rex_categories="word"',
    )
    control = plan_config(config).controls[0]
    assert control.call.categories == ["word"]
    assert control.labels_control == "label"
    assert control.labels_map.resolve("word") == "Text"


def test_polygon_with_region_textarea_is_ocr_polygon() -> None:
    plan = plan_config(
        view(
            '<Polygon name="poly" toName="image"/>',
            '<TextArea name="text" toName="image" perRegion="true"/>',
        )
    )
    call = plan.controls[0].call
    assert call.task is Task.OCR_POLYGON
    assert call.masks == "none"
    assert plan.controls[0].output == "polygon"


def test_rectangle_labels_with_region_textarea_stays_detection_unless_told() -> None:
    text = '<TextArea name="text" toName="image" perRegion="true"/>'
    assert plan_config(view(RECT, text)).controls[0].call.task is Task.DETECTION
    ocr = RECT.replace('toName="image">', 'toName="image" rex_task="ocr_box">', 1)
    control = plan_config(view(ocr, text)).controls[0]
    assert control.call.task is Task.OCR_BOX
    assert control.text_control == "text"


def test_ocr_without_textarea_is_an_error() -> None:
    config = view(
        RECT.replace('toName="image">', 'toName="image" rex_task="ocr_box">', 1)
    )
    with pytest.raises(PlanError, match="perRegion"):
        plan_config(config)


def test_unlabelled_rectangle_needs_categories() -> None:
    with pytest.raises(
        PlanError, match=r"no control tag rexlabel can pre-annotate.*Rectangle 'box'"
    ):
        plan_config(view('<Rectangle name="box" toName="image"/>'))
    plan = plan_config(
        view('<Rectangle name="box" toName="image" rex_categories="dog"/>')
    )
    assert plan.controls[0].call.categories == ["dog"]
    assert plan.controls[0].label_map.free


def test_unservable_configs_name_the_tags() -> None:
    with pytest.raises(PlanError, match="EllipseLabels 'e'"):
        plan_config(
            view(
                '<EllipseLabels name="e" toName="image">'
                '<Label value="A"/></EllipseLabels>'
            )
        )
    with pytest.raises(PlanError, match="Choices 'c'"):
        plan_config(
            view('<Choices name="c" toName="image"><Choice value="A"/></Choices>')
        )
    text_config = (
        '<View><Text name="text" value="$text"/>'
        '<Labels name="l" toName="text"><Label value="A"/></Labels></View>'
    )
    with pytest.raises(PlanError, match="no control tag"):
        plan_config(text_config)
    with pytest.raises(PlanError, match="not a valid labeling config"):
        plan_config("<View><Image name=")
    with pytest.raises(PlanError, match="empty"):
        plan_config("")


def test_rex_skip_and_unservable_beside_servable() -> None:
    plan = plan_config(
        view(
            RECT,
            '<KeyPointLabels name="kp" toName="image" rex_skip="true">'
            '<Label value="Banana"/></KeyPointLabels>',
            '<EllipseLabels name="e" toName="image"><Label value="A"/></EllipseLabels>',
        )
    )
    assert [c.control for c in plan.controls] == ["label"]
    assert len(plan.notes) == 2


def test_image_jobs_name_a_missing_url_and_handle_two_images() -> None:
    plan = plan_config(view(RECT))
    with pytest.raises(PlanError, match=r"data\['image'\]"):
        plan.image_jobs({"id": 1, "data": {"img": "x.jpg"}})
    with pytest.raises(PlanError, match="no 'data'"):
        plan.image_jobs({"id": 1})
    two = (
        '<View><Image name="a" value="$left"/><Image name="b" value="$right"/>'
        '<RectangleLabels name="la" toName="a"><Label value="Car"/></RectangleLabels>'
        '<RectangleLabels name="lb" toName="b"><Label value="Car"/></RectangleLabels>'
        "</View>"
    )
    jobs = plan_config(two).image_jobs(
        {"id": 9, "data": {"left": "l.jpg", "right": "r.jpg"}}
    )
    assert [(j.id, j.image, [c.key for c in j.calls]) for j in jobs] == [
        ("9/a", "l.jpg", ["la"]),
        ("9/b", "r.jpg", ["lb"]),
    ]


# Interactive -----------------------------------------------------------------------
def rect_item(rid: str, x: float, label: str = "Car", name: str = "label") -> dict:
    return {
        "id": rid,
        "from_name": name,
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": 200,
        "original_height": 100,
        "image_rotation": 0,
        "value": {
            "x": x,
            "y": 10,
            "width": 20,
            "height": 50,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


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


def prompt_item(text: str) -> dict:
    return {
        "id": "p",
        "from_name": "prompt",
        "to_name": "image",
        "type": "textarea",
        "value": {"text": [text]},
    }


PROMPT = (
    '<TextArea name="prompt" toName="image" editable="true" showSubmitButton="true"/>'
)


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


def kp_item(rid: str, x: float, positive: bool = True, label: str = "Car") -> dict:
    return {
        "id": rid,
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "original_width": 1000,
        "original_height": 500,
        "is_positive": positive,
        "value": {"x": x, "y": 50, "width": 0.3, "keypointlabels": [label]},
    }


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


@pytest.mark.parametrize("bad", [True, False, "1", 1.5, [1], {"id": 1}])
def test_a_task_id_must_be_an_integer(bad) -> None:
    task = {"id": bad, "data": {"image": "/data/upload/1/a.png"}}
    assert task_id_of(task) is None
    with pytest.raises(PlanError, match=r"task id .* is not an integer"):
        checked_task_id(task)
    plan = plan_config(
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image"><Label value="car"/>'
        "</RectangleLabels></View>"
    )
    with pytest.raises(PlanError, match="is not an integer"):
        plan.image_jobs(task)
    assert checked_task_id({"id": 7}) == 7 and checked_task_id({}) is None


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


# Free phrases typed into a prompt (issue 11 point 7) -------------------------------
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


# Animal keypoints with a species box (issue 11 point 3) ---------------------------
ANIMAL_JOINTS = "".join(
    f'<Label value="{j.title()}"/>' for j in ("left eye", "nose", "root of tail")
)
ANIMAL_POSE = (
    f'<KeyPointLabels name="kp" toName="image">{ANIMAL_JOINTS}</KeyPointLabels>'
)


def test_animal_keypoints_ask_for_the_species_of_a_rectangle() -> None:
    species = (
        '<RectangleLabels name="box" toName="image"><Label value="Person"/>'
        '<Label value="Cat"/><Label value="Dog" predicted_values="dog,puppy"/>'
        "</RectangleLabels>"
    )
    plan = plan_config(view(species, ANIMAL_POSE))
    kp = plan.control("kp")
    assert kp.call.keypoint_type == "animal"
    assert kp.call.categories == ["Cat", "dog", "puppy"]
    assert kp.box_control == "box"
    assert kp.box_map.resolve("puppy") == "Dog"
    assert kp.box_map.resolve("cat") == "Cat"
    # The people are still detected; the animals come with their joints.
    assert plan.control("box").call.categories == ["Person"]


def test_animal_keypoints_skip_a_rectangle_of_people_only() -> None:
    people = PERSON_BOX.replace('name="box"', 'name="people"')
    animals = (
        '<RectangleLabels name="pets" toName="image"><Label value="Horse"/>'
        "</RectangleLabels>"
    )
    plan = plan_config(view(people, animals, ANIMAL_POSE))
    kp = plan.control("kp")
    assert (kp.box_control, kp.call.categories) == ("pets", ["Horse"])
    assert plan.control("people").call.categories == ["Person"]
    alone = plan_config(view(PERSON_BOX, ANIMAL_POSE)).control("kp")
    assert (alone.box_control, alone.call.categories) == (None, ["animal"])


def test_animal_rex_categories_still_choose_the_species() -> None:
    rect = (
        '<RectangleLabels name="box" toName="image"><Label value="cat"/>'
        '<Label value="dog"/></RectangleLabels>'
    )
    kp = ANIMAL_POSE.replace('name="kp"', 'name="kp" rex_categories="dog"')
    plan = plan_config(view(rect, kp))
    assert plan.control("kp").call.categories == ["dog"]
    assert plan.control("box").call.categories == ["cat"]
