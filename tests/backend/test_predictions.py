"""Worker results + plan -> one Label Studio prediction per task."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface

from backend.planner import plan_config, plan_interactive
from backend.predictions import RegionIds, empty_prediction, task_prediction
from common.jobspec import CallResult, ImageResult
from converters.keypoint_sets import ANIMAL, PERSON
from converters.masks import mask_to_rle
from converters.prediction import Prediction, RegionType
from converters.tasks import Task
from tests.backend.planner.helpers import prompt_item, rect_item

W, H = 640, 480
VERSION = "rexlabel-test-1"
IMAGE = '<Image name="image" value="$image"/>'


def view(*tags: str) -> str:
    return "<View>" + IMAGE + "".join(tags) + "</View>"


def box(label: str, xyxy=(64, 48, 320, 240), score=0.9, text=None) -> Prediction:
    return Prediction(
        type=RegionType.BOX, label=label, coords=xyxy, score=score, text=text
    )


def image_result(*calls: CallResult, error: str | None = None) -> ImageResult:
    return ImageResult(id="1", width=W, height=H, calls=list(calls), error=error)


def instance(
    label: str, keypoints: dict, coords=(0, 0, 320, 480), score: float = 0.8
) -> CallResult:
    """One keypoint call holding one instance of ``label`` with ``keypoints``."""
    found = Prediction(
        type=RegionType.KEYPOINT,
        label=label,
        coords=coords,
        score=score,
        keypoints=keypoints,
        instance_id=f"{label}1",
    )
    return CallResult(key="kp", task=Task.KEYPOINT, predictions=[found])


def valid(config: str, results: list[dict]) -> None:
    """Label Studio's own validator accepts the regions."""
    li = LabelInterface(config)
    assert li.validate_prediction({"result": results, "score": 0.5}) is True, results


RECT = view(
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car" predicted_values="car,truck"/><Label value="Person"/>'
    "</RectangleLabels>"
)


def test_detection_labels_mapped_and_unmatched_reported() -> None:
    plan = plan_config(RECT)
    call = CallResult(
        key="label",
        task=Task.DETECTION,
        predictions=[
            box("truck"),
            box("PERSON", (0, 0, 32, 48), score=0.5),
            box("zebra", score=0.99),
        ],
    )
    out = task_prediction(plan, [image_result(call)], VERSION)
    results = out.prediction["result"]
    assert [r["value"]["rectanglelabels"] for r in results] == [["Car"], ["Person"]]
    assert results[0]["value"]["x"] == 10.0
    assert results[0]["value"]["width"] == 40.0
    assert out.prediction["model_version"] == VERSION
    assert out.prediction["score"] == 0.7
    assert out.errors == []
    (warning,) = out.warnings
    assert "'zebra' match no label" in warning
    valid(RECT, results)


def test_score_threshold_drops_low_scores() -> None:
    plan = plan_config(
        RECT.replace(
            'toName="image">', 'toName="image" model_score_threshold="0.6">', 1
        )
    )
    call = CallResult(
        key="label",
        task=Task.DETECTION,
        predictions=[box("car", score=0.59), box("car")],
    )
    assert (
        len(task_prediction(plan, [image_result(call)], VERSION).prediction["result"])
        == 1
    )


def labels_of(results: list[dict]) -> list[list[str]]:
    return [r["value"]["rectanglelabels"] for r in results]


def test_label_thresholds_cut_per_label_then_the_control_threshold() -> None:
    plan = plan_config(
        RECT, {"model_score_threshold": 0.5, "model_score_thresholds": {"Car": 0.85}}
    )
    call = CallResult(
        key="label",
        task=Task.DETECTION,
        predictions=[
            box("car", score=0.8),  # Car needs 0.85: dropped
            box("truck", score=0.9),  # a Car too: kept
            box("Person", score=0.55),  # no entry: the project's 0.5
            box("Person", score=0.45),
        ],
    )
    out = task_prediction(plan, [image_result(call)], VERSION)
    assert labels_of(out.prediction["result"]) == [["Car"], ["Person"]]
    assert [r["score"] for r in out.prediction["result"]] == [0.9, 0.55]


def test_label_thresholds_cut_interactive_answers() -> None:
    extra = {"model_score_thresholds": {"Person": 0.8}}
    plan = plan_interactive(RECT, {"result": [rect_item("d", 60, "Person")]}, extra)
    found = [box("object_1", score=0.7), box("object_1", (0, 0, 30, 30), score=0.85)]
    call = CallResult(key="label", task=Task.VISUAL_PROMPTING, predictions=found)
    results = task_prediction(plan, [image_result(call)], VERSION).prediction["result"]
    assert labels_of(results) == [["Person"]]
    assert results[0]["score"] == 0.85


def test_failed_image_gives_the_empty_prediction() -> None:
    out = task_prediction(
        plan_config(RECT), [image_result(error="HTTP 401 from Label Studio")], VERSION
    )
    assert (
        out.prediction
        == empty_prediction(VERSION)
        == {
            "result": [],
            "score": 0,
            "model_version": VERSION,
        }
    )
    assert out.errors == ["image 1: HTTP 401 from Label Studio"]


def test_truncated_answer_is_a_warning() -> None:
    call = CallResult(
        key="label",
        task=Task.DETECTION,
        predictions=[box("car")],
        truncated=True,
        finish_reason="length",
    )
    out = task_prediction(plan_config(RECT), [image_result(call)], VERSION)
    assert len(out.prediction["result"]) == 1
    assert "cut off (length)" in out.warnings[0]


OCR = view(
    '<Labels name="label" toName="image">'
    '<Label value="Text" predicted_values="text line"/></Labels>',
    '<Rectangle name="bbox" toName="image"/>',
    '<TextArea name="transcription" toName="image" editable="true" perRegion="true"/>',
)


def test_ocr_regions_share_an_id_across_geometry_labels_and_text() -> None:
    plan = plan_config(OCR)
    call = CallResult(
        key="bbox",
        task=Task.OCR_BOX,
        predictions=[
            box("text line", text="HELLO"),
            box("text line", (0, 0, 10, 10), text="HELLO"),
        ],
    )
    out = task_prediction(plan, [image_result(call)], VERSION)
    results = out.prediction["result"]
    assert [r["type"] for r in results] == ["rectangle", "labels", "textarea"] * 2
    assert len({r["id"] for r in results[:3]}) == 1
    assert results[0]["id"] != results[3]["id"]
    assert results[1]["value"]["labels"] == ["Text"]
    assert results[2]["value"]["text"] == ["HELLO"]
    valid(OCR, results)


def test_label_thresholds_cut_labelled_ocr_regions_by_their_labels_tag() -> None:
    plan = plan_config(OCR, {"model_score_thresholds": {"Text": 0.6}})
    call = CallResult(
        key="bbox",
        task=Task.OCR_BOX,
        predictions=[
            box("text line", score=0.5, text="LOW"),
            box("text line", (0, 0, 10, 10), score=0.7, text="HIGH"),
        ],
    )
    results = task_prediction(plan, [image_result(call)], VERSION).prediction["result"]
    assert [r["value"]["text"] for r in results if r["type"] == "textarea"] == [
        ["HIGH"]
    ]


STOCK_OCR = view(
    '<Labels name="label" toName="image">'
    '<Label value="Text" background="green"/>'
    '<Label value="Handwriting" background="blue"/></Labels>',
    '<Rectangle name="bbox" toName="image" strokeWidth="3"/>',
    '<Polygon name="poly" toName="image" strokeWidth="3"/>',
    '<TextArea name="transcription" toName="image" editable="true" '
    'perRegion="true" required="true" maxSubmissions="1" rows="5" '
    'placeholder="Recognized Text" displayMode="region-list"/>',
)
"""Label Studio's stock OCR template, as written (no predicted_values)."""


@pytest.mark.parametrize(
    "config",
    [
        STOCK_OCR,
        STOCK_OCR.replace('<Label value="Handwriting" background="blue"/>', ""),
    ],
    ids=["stock-template", "one-label"],
)
def test_stock_ocr_template_regions_carry_the_text_label(config) -> None:
    """Regions came back without a label: "text line" matched no label."""
    plan = plan_config(config)
    call = CallResult(
        key="bbox", task=Task.OCR_BOX, predictions=[box("text line", text="HELLO")]
    )
    results = task_prediction(plan, [image_result(call)], VERSION).prediction["result"]
    assert [r["type"] for r in results] == ["rectangle", "labels", "textarea"]
    assert results[1]["value"]["labels"] == ["Text"]
    assert len({r["id"] for r in results}) == 1
    valid(config, results)


def test_ocr_labels_stay_off_when_no_label_is_named() -> None:
    config = STOCK_OCR.replace('"Text"', '"Printed"')
    plan = plan_config(config)
    call = CallResult(
        key="bbox", task=Task.OCR_BOX, predictions=[box("text line", text="HI")]
    )
    results = task_prediction(plan, [image_result(call)], VERSION).prediction["result"]
    assert [r["type"] for r in results] == ["rectangle", "textarea"]


def test_ocr_without_labels_tag_is_plain_geometry_plus_text() -> None:
    config = view(
        '<Polygon name="poly" toName="image"/>',
        '<TextArea name="transcription" toName="image" perRegion="true"/>',
    )
    polygon = Prediction(
        type=RegionType.POLYGON,
        label="text line",
        coords=[(0, 0), (64, 0), (64, 48)],
        text="ok",
    )
    call = CallResult(key="poly", task=Task.OCR_POLYGON, predictions=[polygon])
    results = task_prediction(
        plan_config(config), [image_result(call)], VERSION
    ).prediction["result"]
    assert [r["type"] for r in results] == ["polygon", "textarea"]
    assert "polygonlabels" not in results[0]["value"]
    assert results[0]["value"]["points"][1] == [10.0, 0.0]
    valid(config, results)


def test_keypoint_joints_take_the_configs_spelling() -> None:
    config = view(
        '<KeyPointLabels name="kp" toName="image">'
        '<Label value="Nose"/><Label value="Left Eye"/></KeyPointLabels>'
    )
    call = instance(
        "person",
        {
            "nose": (64, 48),
            "left eye": (128, 96),
            "right eye": (1, 1),
            "left ear": None,
        },
        (0, 0, 320, 480),
        0.8,
    )
    out = task_prediction(plan_config(config), [image_result(call)], VERSION)
    results = out.prediction["result"]
    # "right eye" is not in the config: dropped and counted in the warnings.
    assert [r["value"]["keypointlabels"] for r in results] == [["Nose"], ["Left Eye"]]
    # No RectangleLabels for the person box: joints stand alone.
    assert all("parentID" not in r for r in results)
    assert out.warnings == [
        "KeyPointLabels 'kp': 1 keypoint(s) of joints the config does not list "
        "dropped ('right eye' x1)"
    ]
    valid(config, results)


README_POSE_JOINTS = (
    "nose",
    "left eye",
    "right eye",
    "left shoulder",
    "right shoulder",
    "left hip",
    "right hip",
)
"""A 7-joint person config: no knees, whose names look like the eyes'."""


@pytest.mark.parametrize(
    "spell",
    [str.title, lambda j: j.replace(" ", "_"), lambda j: j.replace(" ", "-").upper()],
    ids=["Left Eye", "left_eye", "LEFT-EYE"],
)
def test_joints_never_fuzzy_match_another_joint(spell) -> None:
    """The model's "left knee" once became "left eye" (a fuzzy match): a joint
    the config does not list is dropped and counted, whatever its spelling."""
    labels = "".join(f'<Label value="{spell(j)}"/>' for j in README_POSE_JOINTS)
    config = view(f'<KeyPointLabels name="kp" toName="image">{labels}</KeyPointLabels>')
    plan = plan_config(config)
    assert plan.controls[0].call.task is Task.KEYPOINT  # recognised as the person set
    call = instance(
        "person",
        {
            "left eye": (10, 10),
            "left knee": (20, 300),
            "right knee": (40, 300),
            "right eye": (30, 10),
        },
        (0, 0, 320, 480),
        0.8,
    )
    out = task_prediction(plan, [image_result(call)], VERSION)
    found = {
        r["value"]["keypointlabels"][0]: (r["value"]["x"], r["value"]["y"])
        for r in out.prediction["result"]
    }
    assert set(found) == {spell("left eye"), spell("right eye")}
    assert found[spell("left eye")] == pytest.approx((10 / 640 * 100, 10 / 480 * 100))
    assert out.warnings == [
        "KeyPointLabels 'kp': 2 keypoint(s) of joints the config does not list "
        "dropped ('left knee' x1, 'right knee' x1)"
    ]
    valid(config, out.prediction["result"])


def test_a_hand_joint_is_not_read_as_its_neighbour() -> None:
    """In a hand subset, "ring finger's root" became "pinky finger's root"."""
    config = view(
        '<KeyPointLabels name="kp" toName="image">'
        '<Label value="pinky finger\'s root"/><Label value="wrist"/>'
        "</KeyPointLabels>"
    )
    call = instance(
        "hand",
        {"ring finger's root": (50, 50), "wrist": (50, 90)},
        (0, 0, 100, 100),
        0.9,
    )
    out = task_prediction(plan_config(config), [image_result(call)], VERSION)
    labels = [r["value"]["keypointlabels"] for r in out.prediction["result"]]
    assert labels == [["wrist"]]
    assert '"ring finger\'s root" x1' in out.warnings[0]


def person(x0: float, score: float, instance_id: str = "person1") -> Prediction:
    """A person instance in the 320 px wide column starting at ``x0``."""
    return Prediction(
        type=RegionType.KEYPOINT,
        label=instance_id.rstrip("0123456789"),
        coords=(x0, 0, x0 + 320, 480),
        score=score,
        keypoints={
            j: None if i % 4 == 3 else (x0 + 10 + i * 15, 20 + i * 25)
            for i, j in enumerate(PERSON.joints)
        },
        instance_id=instance_id,
    )


def pose_with_boxes(box_labels: str, joints: tuple[str, ...]) -> str:
    """A config boxing keypoint instances: RectangleLabels ``box`` holding
    ``box_labels`` (XML), KeyPointLabels ``kp`` with ``joints`` title-cased."""
    return view(
        f'<RectangleLabels name="box" toName="image">{box_labels}</RectangleLabels>',
        '<KeyPointLabels name="kp" toName="image">'
        + "".join(f'<Label value="{j.title()}"/>' for j in joints)
        + "</KeyPointLabels>",
    )


POSE_WITH_BOXES = pose_with_boxes(
    '<Label value="Person"/><Label value="Car" predicted_values="car"/>',
    PERSON.joints,
)


def test_keypoint_instances_become_a_box_with_parented_joints() -> None:
    plan = plan_config(POSE_WITH_BOXES)
    image = image_result(
        CallResult(
            key="kp",
            task=Task.KEYPOINT,
            predictions=[
                person(0, 0.8),
                person(320, 0.6, "person2"),
                person(0, 0.7, "dog1"),  # not a category asked: reported
            ],
        ),
        CallResult(key="box", task=Task.DETECTION, predictions=[box("car")]),
    )
    # Bulk jobs store results as JSON lines: go through the same round trip.
    image = ImageResult.from_dict(image.to_dict())
    out = task_prediction(plan, [image], VERSION)
    results = out.prediction["result"]
    boxes = {r["id"]: r for r in results if r["type"] == "rectanglelabels"}
    joints = [r for r in results if r["type"] == "keypointlabels"]
    people = [b for b in boxes.values() if b["value"]["rectanglelabels"] == ["Person"]]
    cars = [b for b in boxes.values() if b["value"]["rectanglelabels"] == ["Car"]]
    assert len(people) == 2 and len(cars) == 1
    assert all(b["from_name"] == "box" for b in boxes.values())
    visible = sum(xy is not None for xy in person(0, 0.8).keypoints.values())
    assert len(joints) == 2 * visible
    assert {j["parentID"] for j in joints} == {b["id"] for b in people}
    for joint in joints:
        parent = boxes[joint["parentID"]]["value"]
        assert parent["x"] <= joint["value"]["x"] <= parent["x"] + parent["width"]
        assert joint["from_name"] == "kp"
    assert joints[1]["value"]["keypointlabels"] == ["Left Eye"]
    assert len({r["id"] for r in results}) == len(results)
    # Region score: the instances and the car, not every joint again.
    assert out.prediction["score"] == pytest.approx((0.8 + 0.6 + 0.9) / 3)
    (warning,) = out.warnings
    assert "'dog' match no label (Person)" in warning
    assert out.errors == []
    valid(POSE_WITH_BOXES, results)


def test_brush_mask_and_polygon_from_sam() -> None:
    config = view(
        '<BrushLabels name="brush" toName="image"><Label value="Car"/></BrushLabels>',
        '<PolygonLabels name="poly" toName="image">'
        '<Label value="Car"/></PolygonLabels>',
    )
    mask = np.zeros((H, W), dtype=bool)
    mask[100:200, 50:150] = True
    with_mask = box("car", (50, 100, 150, 200)).with_(mask=mask_to_rle(mask))
    calls = [
        CallResult(key="brush", task=Task.DETECTION, predictions=[with_mask]),
        CallResult(
            key="poly", task=Task.DETECTION, predictions=[box("car")]
        ),  # no SAM: corners
    ]
    results = task_prediction(
        plan_config(config), [image_result(*calls)], VERSION
    ).prediction["result"]
    assert [r["type"] for r in results] == ["brushlabels", "polygonlabels"]
    assert results[0]["value"]["format"] == "rle"
    assert len(results[1]["value"]["points"]) == 4
    valid(config, results)


def test_visual_prompt_relabels_and_drops_the_drawn_box() -> None:
    drawn = {
        "id": "d",
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": W,
        "original_height": H,
        "value": {
            "x": 10,
            "y": 10,
            "width": 40,
            "height": 40,
            "rotation": 0,
            "rectanglelabels": ["Person"],
        },
    }
    plan = plan_interactive(RECT, {"result": [drawn]})
    found = [box("object_1", (64, 48, 320, 240)), box("object_1", (400, 300, 500, 400))]
    call = CallResult(key="label", task=Task.VISUAL_PROMPTING, predictions=found)
    results = task_prediction(plan, [image_result(call)], VERSION).prediction["result"]
    assert len(results) == 1
    assert results[0]["value"]["rectanglelabels"] == ["Person"]


def test_unknown_call_key_is_a_warning() -> None:
    call = CallResult(key="ghost", task=Task.DETECTION, predictions=[box("car")])
    out = task_prediction(plan_config(RECT), [image_result(call)], VERSION)
    assert out.prediction["result"] == []
    assert "unknown call 'ghost'" in out.warnings[0]


CAR_BOXES_AND_POINTS = view(
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car"/></RectangleLabels>',
    '<KeyPointLabels name="kp" toName="image"><Label value="Car"/></KeyPointLabels>',
)


def test_unwritable_prediction_is_an_error_for_that_control_only() -> None:
    config = CAR_BOXES_AND_POINTS
    point = Prediction(type=RegionType.POINT, label="Car", coords=(5, 5), score=0.5)
    calls = [
        CallResult(
            key="label", task=Task.DETECTION, predictions=[point]
        ),  # a point as a box
        CallResult(key="kp", task=Task.POINTING, predictions=[point]),
    ]
    out = task_prediction(plan_config(config), [image_result(*calls)], VERSION)
    assert [r["type"] for r in out.prediction["result"]] == ["keypointlabels"]
    assert "RectangleLabels 'label'" in out.errors[0]


def test_an_image_with_one_failed_call_keeps_the_other_calls() -> None:
    config = CAR_BOXES_AND_POINTS
    failure = "call 'kp' (pointing: car) failed on image 'a.jpg': engine error"
    boxes = CallResult(key="label", task=Task.DETECTION, predictions=[box("car")])
    out = task_prediction(
        plan_config(config), [image_result(boxes, error=failure)], VERSION
    )
    assert [r["type"] for r in out.prediction["result"]] == ["rectanglelabels"]
    assert out.errors == [f"image 1: {failure}"]


def test_a_fuzzy_phrase_match_is_reported() -> None:
    config = view(
        '<RectangleLabels name="label" toName="image">'
        '<Label value="robot-shope"/><Label value="car"/></RectangleLabels>'
    )
    call = CallResult(
        key="label", task=Task.DETECTION, predictions=[box("robot-shape")]
    )
    out = task_prediction(plan_config(config), [image_result(call)], VERSION)
    assert out.prediction["result"][0]["value"]["rectanglelabels"] == ["robot-shope"]
    assert out.warnings == [
        "RectangleLabels 'label': model phrase(s) read by fuzzy match: "
        "'robot-shape' -> 'robot-shope'"
    ]


@pytest.mark.parametrize(
    "labels",
    [("Left_Front_Paw", "Root-Of-Tail"), ("Wrist", "Thumb_Root")],
    ids=["animal", "hand"],
)
def test_animal_and_hand_spellings_plan_keypoints(labels) -> None:
    tags = "".join(f'<Label value="{label}"/>' for label in labels)
    plan = plan_config(
        view(f'<KeyPointLabels name="kp" toName="image">{tags}</KeyPointLabels>')
    )
    assert plan.controls[0].call.task is Task.KEYPOINT


RECT_CONFIG = view(
    '<RectangleLabels name="label" toName="image">'
    '<Label value="car"/></RectangleLabels>'
)


def _ids(prediction: dict) -> set[str]:
    return {r["id"] for r in prediction["result"]}


def test_an_interactive_answer_never_reuses_the_pre_annotation_ids() -> None:
    """An accepted suggestion with a pre-annotated region's id replaced the box
    the user had just moved: the same regions get other ids per prediction."""
    call = CallResult(key="label", task=Task.DETECTION, predictions=[box("car")])
    task = {"id": 7, "data": {"image": "x.png"}}
    plan = plan_config(RECT_CONFIG)

    def predict(context=None) -> dict:
        ids = RegionIds.for_task(task, VERSION, context)
        return task_prediction(plan, [image_result(call)], VERSION, ids).prediction

    pre = predict()
    assert _ids(pre) == _ids(predict())  # the same prediction re-sent: stable
    moved = {**pre["result"][0], "value": {**pre["result"][0]["value"], "x": 50.0}}
    context = {"result": [moved, {"type": "textarea", "value": {"text": ["car"]}}]}
    answer = predict(context)
    assert _ids(answer).isdisjoint(_ids(pre))
    other_task = RegionIds.for_task({**task, "id": 8}, VERSION)
    assert _ids(
        task_prediction(plan, [image_result(call)], VERSION, other_task).prediction
    ).isdisjoint(_ids(pre))


def test_ids_in_annotations_and_drafts_are_never_reused() -> None:
    kp_config = view(
        '<RectangleLabels name="box" toName="image"><Label value="person"/>'
        "</RectangleLabels>"
        '<KeyPointLabels name="kp" toName="image">'
        '<Label value="nose"/><Label value="left eye"/></KeyPointLabels>'
    )
    call = instance(
        "person", {"nose": (64, 48), "left eye": (70, 40)}, (0, 0, 320, 480), 0.8
    )
    plan = plan_config(kp_config)
    task = {"id": 3, "data": {"image": "x.png"}}
    first = task_prediction(
        plan, [image_result(call)], VERSION, RegionIds.for_task(task, VERSION)
    ).prediction
    box_id = next(r["id"] for r in first["result"] if r["type"] == "rectanglelabels")
    # A person kept that box (and an odd, malformed entry) in the annotation.
    task["annotations"] = [{"result": [{"id": box_id}, "junk", {"id": 5}]}, None]
    task["drafts"] = [{"result": [{"id": f"{box_id}r1"}]}]
    again = task_prediction(
        plan, [image_result(call)], VERSION, RegionIds.for_task(task, VERSION)
    ).prediction
    assert box_id not in _ids(again) and f"{box_id}r1" not in _ids(again)
    new_box = next(r["id"] for r in again["result"] if r["type"] == "rectanglelabels")
    assert new_box == f"{box_id}r2"
    assert {r["parentID"] for r in again["result"] if "parentID" in r} == {new_box}
    valid(kp_config, again["result"])


def animal(species: str, x0: float, instance_id: str) -> Prediction:
    """An animal instance (every joint visible) in the column starting at ``x0``."""
    return Prediction(
        type=RegionType.KEYPOINT,
        label=species,
        coords=(x0, 100, x0 + 200, 400),
        score=0.7,
        keypoints={
            j: (x0 + 10 + i * 10, 110 + i * 15) for i, j in enumerate(ANIMAL.joints)
        },
        instance_id=instance_id,
    )


ANIMAL_POSE_WITH_SPECIES = pose_with_boxes(
    '<Label value="Person"/><Label value="Cat"/><Label value="Dog"/>', ANIMAL.joints
)


def test_animal_instances_are_grouped_under_their_species_box() -> None:
    """Animal joints without rex_categories ask for the rectangle's species and
    hang under each animal's box, as person joints do (issue 11 point 3)."""
    plan = plan_config(ANIMAL_POSE_WITH_SPECIES)
    assert plan.control("kp").call.categories == ["Cat", "Dog"]
    image = image_result(
        CallResult(
            key="kp",
            task=Task.KEYPOINT,
            predictions=[animal("cat", 0, "cat1"), animal("Dog", 300, "dog1")],
        ),
        CallResult(key="box", task=Task.DETECTION, predictions=[box("Person")]),
    )
    out = task_prediction(plan, [ImageResult.from_dict(image.to_dict())], VERSION)
    results = out.prediction["result"]
    boxes = {
        r["id"]: r["value"]["rectanglelabels"]
        for r in results
        if "x" in r["value"] and r["type"] == "rectanglelabels"
    }
    joints = [r for r in results if r["type"] == "keypointlabels"]
    assert sorted(boxes.values()) == [["Cat"], ["Dog"], ["Person"]]
    assert len(joints) == 2 * len(ANIMAL.joints)
    parents = Counter(boxes[j["parentID"]][0] for j in joints)
    assert parents == {"Cat": len(ANIMAL.joints), "Dog": len(ANIMAL.joints)}
    assert joints[0]["value"]["keypointlabels"] == ["Left Eye"]
    assert out.warnings == [] and out.errors == []
    valid(ANIMAL_POSE_WITH_SPECIES, results)


def test_a_free_phrase_answer_takes_the_label_it_names() -> None:
    """The model is asked "red sports car" as typed and answers that phrase;
    the region is a Car (issue 11 point 7)."""
    config = view(
        RECT.removeprefix("<View>" + IMAGE).removesuffix("</View>"),
        '<TextArea name="prompt" toName="image" editable="true"/>',
    )
    plan = plan_interactive(config, {"result": [prompt_item("red sports car")]})
    call = CallResult(
        key="label", task=Task.DETECTION, predictions=[box("red sports car")]
    )
    out = task_prediction(plan, [image_result(call)], VERSION)
    (region,) = out.prediction["result"]
    assert region["value"]["rectanglelabels"] == ["Car"]
    assert out.warnings == []
    valid(config, out.prediction["result"])
