"""Each task's examples: the prompt inference sends, and an answer the parser
reads back into the annotated regions (within one bin)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from backend.finetune import MAX_REFERENCE_BOXES, Example, build_examples
from backend.planner import plan_config
from converters.geometry import smart_resize
from converters.keypoint_sets import PERSON
from converters.parser import parse_output
from converters.prediction import RegionType
from converters.prompts import VISUAL_PROMPT_KEY
from converters.tasks import Task
from tests.backend.finetune.helpers import (
    H,
    W,
    brush,
    close_box,
    close_point,
    point,
    polygon,
    rect,
    text,
)
from tests.backend.planner.helpers import JOINTS, OCR_TEMPLATE, view
from worker.pipeline import call_prompt

CARS = (
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car" predicted_values="car,truck"/><Label value="Person"/>'
    '<Label value="Dog"/></RectangleLabels>'
)


def _build(config, results, *, width=W, height=H, **kwargs):
    plan = plan_config(config)
    built = build_examples(
        plan,
        results,
        to_name="image",
        image="/data/upload/1/a.jpg",
        width=width,
        height=height,
        task_id=7,
        **kwargs,
    )
    return plan, built


def _only(built, task):
    found = [e for e in built.examples if e.task is task]
    assert len(found) == 1, [e.task for e in built.examples]
    return found[0]


def _parse(example, width=W, height=H, category=None):
    parsed = parse_output(
        example.answer, example.task, width, height, category=category
    )
    assert parsed.warnings == [] and not parsed.truncated
    return parsed.predictions


def test_detection_answers_every_asked_phrase_and_none_for_absent_ones():
    annotated = {
        "c1": ((20, 30, 100, 90), "Car"),
        "c2": ((300, 10, 380, 60), "Car"),
        "p1": ((150, 40, 190, 180), "Person"),
    }
    results = [rect(rid, *box, label) for rid, (box, label) in annotated.items()]
    plan, built = _build(view(CARS), results, visual_prompts=False)
    example = _only(built, Task.DETECTION)
    # Car has boxes: written under its first alias; "truck" is not asked
    assert example.categories == ("car", "Person", "Dog")
    assert example.prompt == (
        "Detect car, Person, Dog. Output the bounding box coordinates in "
        "[x0, y0, x1, y1] format."
    )
    assert "<|object_ref_start|>Dog<|object_ref_end|><|box_start|>None<|box_end|>" in (
        example.answer
    )
    got = _parse(example)
    control = plan.control("label")
    # read back and mapped to labels as inference maps them
    as_labels = sorted((control.region_label(p.label), p.coords) for p in got)
    want = sorted((label, box) for box, label in annotated.values())
    assert [label for label, _ in as_labels] == [label for label, _ in want]
    for (_, g), (_, w) in zip(as_labels, want, strict=True):
        assert close_box(g, w)
    assert built.warnings == [] and built.dropped == 0


def test_an_absent_label_asks_all_its_aliases_and_each_answers_none():
    plan, built = _build(view(CARS), [rect("p", 10, 10, 50, 50, "Person")])
    example = _only(built, Task.DETECTION)
    assert example.categories == ("car", "truck", "Person", "Dog")
    # exactly the prompt the worker builds for the planned call
    image = Image.new("RGB", (W, H))
    assert example.prompt == call_prompt(plan.control("label").call, image)
    got = _parse(example)
    assert [p.label for p in got] == ["Person"]
    for phrase in ("car", "truck", "Dog"):
        assert (
            f"<|object_ref_start|>{phrase}<|object_ref_end|><|box_start|>None"
            in example.answer
        )


def test_an_empty_annotation_answers_none_for_every_phrase():
    _, built = _build(view(CARS), [])
    example = _only(built, Task.DETECTION)
    assert example.answer.count("None") == 4 and example.regions == ()
    assert _parse(example) == []


def test_polygons_brush_masks_and_rotated_boxes_are_detected_by_their_box():
    config = view(
        '<PolygonLabels name="poly" toName="image"><Label value="Lake"/>'
        "</PolygonLabels>",
        '<BrushLabels name="brush" toName="image"><Label value="Road"/></BrushLabels>',
        CARS,
    )
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[120:160, 30:250] = 1
    results = [
        polygon("l1", [(100, 20), (200, 40), (150, 110)], "Lake"),
        brush("r1", mask, "Road"),
        # 90 degrees clockwise about (300, 50): covers x 260..300, y 50..130
        rect("c1", 300, 50, 380, 90, "Car", rotation=90),
    ]
    _, built = _build(config, results, visual_prompts=False)
    by_control = {e.control: e for e in built.examples}
    lake = _parse(by_control["poly"])
    assert [p.label for p in lake] == ["Lake"]
    assert close_box(lake[0].coords, (100, 20, 200, 110))
    road = _parse(by_control["brush"])
    assert close_box(road[0].coords, (30, 120, 250, 160))
    car = [p for p in _parse(by_control["label"]) if p.type is RegionType.BOX]
    assert close_box(car[0].coords, (260, 50, 300, 130))


def test_points_become_pointing_examples():
    config = view(
        '<KeyPointLabels name="kp" toName="image"><Label value="Apple"/>'
        '<Label value="Pear"/></KeyPointLabels>'
    )
    results = [point("a1", 40, 50, "Apple"), point("a2", 300.5, 150.25, "Apple")]
    _, built = _build(config, results)
    example = _only(built, Task.POINTING)
    assert example.prompt == "Point to Apple, Pear."
    got = _parse(example)
    assert [p.type for p in got] == [RegionType.POINT] * 2
    assert close_point(got[0].coords, (40, 50)) and close_point(
        got[1].coords, (300.5, 150.25)
    )
    assert (
        "<|object_ref_start|>Pear<|object_ref_end|><|box_start|>None" in example.answer
    )


def test_keypoint_instances_with_their_joints():
    config = view(
        '<RectangleLabels name="box" toName="image"><Label value="Person"/>'
        '<Label value="Bag"/></RectangleLabels>',
        f'<KeyPointLabels name="kp" toName="image">{JOINTS}</KeyPointLabels>',
    )
    results = [
        rect("p1", 100, 20, 200, 190, "Person", name="box"),
        point("j1", 150, 40, "Nose", parent="p1"),
        point("j2", 140, 35, "Left_Eye", parent="p1"),
        rect("p2", 250, 30, 300, 180, "Person", name="box"),
        rect("b1", 10, 10, 40, 40, "Bag", name="box"),
    ]
    plan, built = _build(config, results, visual_prompts=False)
    example = _only(built, Task.KEYPOINT)
    assert example.categories == ("person",) and example.keypoint_type == "person"
    assert example.prompt == call_prompt(
        plan.control("kp").call, Image.new("RGB", (W, H))
    )
    got = _parse(example, category="person")
    assert [p.label for p in got] == ["person", "person"]
    first, second = got
    assert close_box(first.coords, (100, 20, 200, 190))
    assert list(first.keypoints) == list(PERSON.joints)
    assert close_point(first.keypoints["nose"], (150, 40))
    assert close_point(first.keypoints["left eye"], (140, 35))
    assert first.keypoints["right eye"] is None
    # a box without joints: an instance whose joints are all hidden
    assert close_box(second.coords, (250, 30, 300, 180))
    assert set(second.keypoints.values()) == {None}
    # the rest of the rectangle's labels are still a detection
    detection = _only(built, Task.DETECTION)
    assert detection.categories == ("Bag",)
    assert [p.label for p in _parse(detection)] == ["Bag"]


def test_joints_without_an_instance_box_give_no_keypoint_example():
    config = view(f'<KeyPointLabels name="kp" toName="image">{JOINTS}</KeyPointLabels>')
    _, built = _build(config, [point("j1", 150, 40, "Nose")])
    assert built.examples == []
    assert built.dropped == 1
    assert "cannot be grouped into instances" in built.warnings[0]


def test_ocr_box_reads_every_region_with_text():
    bbox = rect("t1", 20, 20, 120, 50, name="bbox")
    quad = polygon("t2", [(200, 100), (300, 100), (300, 140), (200, 140)], name="poly")
    blank = rect("t3", 10, 150, 60, 190, name="bbox")
    results = [
        bbox,
        text(bbox, "HELLO"),
        quad,
        text(quad, "wörld 42"),
        blank,
    ]
    plan, built = _build(OCR_TEMPLATE, results)
    example = _only(built, Task.OCR_BOX)
    assert example.prompt == "Detect all text line and recognize them."
    assert example.prompt == call_prompt(
        plan.control("bbox").call, Image.new("RGB", (W, H))
    )
    got = _parse(example, category="text line")
    assert [(p.text, p.label) for p in got] == [
        ("HELLO", "text line"),
        ("wörld 42", "text line"),
    ]
    assert close_box(got[0].coords, (20, 20, 120, 50))
    assert close_box(got[1].coords, (200, 100, 300, 140))
    assert built.dropped == 1 and "without text" in built.warnings[0]


def test_ocr_polygon_keeps_the_outline():
    config = view(
        '<Polygon name="poly" toName="image"/>',
        '<TextArea name="transcription" toName="image" perRegion="true"/>',
    )
    outline = [(200, 100), (320, 110), (310, 150), (195, 140)]
    quad = polygon("t1", outline, name="poly")
    _, built = _build(config, [quad, text(quad, "EXIT")])
    example = _only(built, Task.OCR_POLYGON)
    got = _parse(example, category="text line")
    assert got[0].text == "EXIT" and got[0].type is RegionType.POLYGON
    for g, w in zip(got[0].coords, outline, strict=True):
        assert close_point(g, w)


def test_no_keypoint_or_ocr_example_without_regions():
    _, built = _build(OCR_TEMPLATE, [])
    assert built.examples == []


def test_visual_prompting_examples_use_a_subset_of_the_same_boxes():
    boxes = [(10 + 80 * i, 20, 60 + 80 * i, 90 + 10 * i) for i in range(5)]
    results = [rect(f"c{i}", *b, "Person") for i, b in enumerate(boxes)]
    _, built = _build(view(CARS), results, seed=3)
    example = _only(built, Task.VISUAL_PROMPTING)
    references = example.visual_prompt_boxes
    assert 1 <= len(references) <= MAX_REFERENCE_BOXES
    assert all(tuple(r) in boxes for r in references)
    assert example.prompt.startswith('Given reference boxes {"object_1": ["<')
    got = _parse(example)
    assert {p.label for p in got} == {VISUAL_PROMPT_KEY}
    assert len(got) == len(boxes)
    for g, w in zip(sorted(p.coords for p in got), sorted(boxes), strict=True):
        assert close_box(g, w)
    # the same seed picks the same references; the examples are plain data
    _, again = _build(view(CARS), results, seed=3)
    assert again.examples == built.examples
    picks = {
        _only(_build(view(CARS), results, seed=s)[1], Task.VISUAL_PROMPTING).prompt
        for s in range(8)
    }
    assert len(picks) > 1


def test_bins_are_fractions_of_the_original_image_whatever_its_resize():
    small = [rect("c", 40, 20, 200, 100, "Car")]
    big = [rect("c", 400, 200, 2000, 1000, "Car", width=4000, height=2000)]
    _, at_small = _build(view(CARS), small, visual_prompts=False)
    _, at_big = _build(view(CARS), big, width=4000, height=2000, visual_prompts=False)
    # the encoder sees these two at different sizes, and the answers are the same
    assert smart_resize(H, W) != smart_resize(2000, 4000)
    assert at_small.examples[0].answer == at_big.examples[0].answer
    got = _parse(at_big.examples[0], width=4000, height=2000)
    assert close_box(got[0].coords, (400, 200, 2000, 1000), 4000, 2000)


def test_geometry_outside_the_image_is_clipped_or_dropped_with_a_warning():
    results = [
        rect("in", 10, 10, 50, 50, "Car"),
        rect("over", 350, 150, 450, 260, "Car"),  # past the right and bottom edges
        rect("out", 420, 10, 480, 50, "Car"),  # entirely right of the image
        rect("noise", 0, 0, 400.2, 200.1, "Dog"),  # float noise at the edge
        rect("other", 10, 10, 20, 20, "Horse"),  # no label of this control
    ]
    _, built = _build(view(CARS), results, visual_prompts=False)
    example = _only(built, Task.DETECTION)
    got = sorted(p.coords for p in _parse(example) if p.label == "car")
    assert len(got) == 2
    assert close_box(got[1], (350, 150, 400, 200))
    assert built.dropped == 2
    joined = "\n".join(built.warnings)
    assert "task 7 region 'over': box clipped to the image" in joined
    assert "task 7 region 'out': dropped, the box lies outside the image" in joined
    assert "'Horse' is not asked" in joined
    assert "noise" not in joined


def test_examples_are_plain_json_data():
    _, built = _build(view(CARS), [rect("c", 40, 20, 200, 100, "Car")])
    for example in built.examples:
        data = json.loads(json.dumps(example.to_dict()))
        assert Example.from_dict(data) == example
        assert data["image"] == "/data/upload/1/a.jpg" and data["task_id"] == 7


def test_text_that_would_break_the_grammar_skips_the_example_with_a_warning():
    box = rect("t1", 20, 20, 120, 50, name="bbox")
    _, built = _build(OCR_TEMPLATE, [box, text(box, "stop<|im_end|>here")])
    assert built.examples == []
    assert "contains the special token <|im_end|>; skipped" in built.warnings[-1]
