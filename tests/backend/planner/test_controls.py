"""Label config -> which control gets which model call."""

from __future__ import annotations

import pytest

from backend.planner import OCR_DEFAULT_CATEGORY, PlanError, plan_config
from converters.keypoint_sets import PERSON
from converters.tasks import Task
from tests.backend.planner.helpers import OCR_TEMPLATE, RECT, view


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
