"""converters.labelstudio: what the writer writes is valid for Label Studio's
SDK and reads back as the same predictions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from label_studio_sdk.label_interface import LabelInterface

from converters import masks
from converters.keypoint_sets import ANIMAL, PERSON
from converters.labelstudio.reader import from_labelstudio
from converters.labelstudio.writer import (
    KEYPOINT_SIZE_PERCENT,
    to_labelstudio,
    to_labelstudio_prediction,
)
from converters.prediction import Prediction, RegionType

W, H = 640, 480

DETECTION_CONFIG = """<View><Image name="image" value="$image"/>
<RectangleLabels name="label" toName="image">
  <Label value="Car"/><Label value="Person"/><Label value="Text"/>
</RectangleLabels>
<TextArea name="transcription" toName="image" perRegion="true"
  displayMode="region-list"/>
</View>"""

POLYGON_CONFIG = """<View><Image name="image" value="$image"/>
<PolygonLabels name="poly" toName="image"><Label value="Car"/></PolygonLabels>
<TextArea name="transcription" toName="image" perRegion="true"
  displayMode="region-list"/>
</View>"""

BRUSH_CONFIG = """<View><Image name="image" value="$image"/>
<BrushLabels name="brush" toName="image"><Label value="Car"/></BrushLabels>
</View>"""

POINT_CONFIG = """<View><Image name="image" value="$image"/>
<KeyPointLabels name="kp" toName="image"><Label value="Banana"/></KeyPointLabels>
</View>"""

OCR_CONFIG = """<View><Image name="image" value="$ocr"/>
<Labels name="label" toName="image">
  <Label value="Text"/><Label value="Handwriting"/>
</Labels>
<Rectangle name="bbox" toName="image"/>
<Polygon name="poly" toName="image"/>
<TextArea name="transcription" toName="image" editable="true" perRegion="true"
  displayMode="region-list"/>
</View>"""


def _keypoint_config(kp_set) -> str:
    joints = "".join(f'<Label value="{j}"/>' for j in kp_set.joints)
    return f"""<View><Image name="image" value="$image"/>
<RectangleLabels name="box" toName="image"><Label value="{kp_set.name}"/>
</RectangleLabels>
<KeyPointLabels name="kp" toName="image">{joints}</KeyPointLabels>
</View>"""


def _validate(config: str, results: list[dict]) -> None:
    prediction = to_labelstudio_prediction(results, model_version="test")
    errors = LabelInterface(config).validate_prediction(prediction, return_errors=True)
    assert errors == []


def _assert_same(got: list[Prediction], expected: list[Prediction]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert a.type is b.type
        assert a.label == b.label
        assert a.text == b.text
        assert a.score == pytest.approx(b.score)
        assert np.allclose(np.asarray(a.coords), np.asarray(b.coords), atol=1e-9)
        assert a.mask == b.mask
        assert a.instance_id == b.instance_id
        if b.keypoints is not None:
            assert list(a.keypoints) == list(b.keypoints)
            for name, xy in b.keypoints.items():
                if xy is None:
                    assert a.keypoints[name] is None
                else:
                    assert a.keypoints[name] == pytest.approx(xy)


def _person(n: int, dx: float = 0.0) -> Prediction:
    joints = {
        j: None if i % 4 == 3 else (100 + dx + i * 3.5, 50 + i * 11.25)
        for i, j in enumerate(PERSON.joints)
    }
    return Prediction(
        type="keypoint",
        label="person",
        coords=(90 + dx, 40, 170 + dx, 260),
        keypoints=joints,
        instance_id=f"person{n}",
        score=0.75,
    )


# Each config kind: valid for the SDK, and reads back the same -----------------
def test_boxes_with_ocr_text_validate_and_round_trip():
    preds = [
        Prediction(type="box", label="Car", coords=(64, 96, 256, 168), score=0.91),
        Prediction(
            type="box",
            label="Text",
            coords=(10.5, 20.25, 99.75, 40),
            score=0.88,
            text="ABC-123",
        ),
    ]
    results = to_labelstudio(
        preds,
        from_name="label",
        to_name="image",
        width=W,
        height=H,
        text_from_name="transcription",
    )
    assert [r["type"] for r in results] == [
        "rectanglelabels",
        "rectanglelabels",
        "textarea",
    ]
    assert results[1]["id"] == results[2]["id"]
    assert results[2]["value"]["text"] == ["ABC-123"]
    _validate(DETECTION_CONFIG, results)
    parsed = from_labelstudio(results)
    assert parsed.warnings == []
    _assert_same(parsed.predictions, preds)


def test_polygons_validate_and_round_trip():
    preds = [
        Prediction(
            type="polygon",
            label="Car",
            coords=[(10, 10), (40.5, 12), (35, 40)],
            score=0.4,
            text="hello",
        ),
    ]
    results = to_labelstudio(
        preds,
        from_name="poly",
        to_name="image",
        width=W,
        height=H,
        text_from_name="transcription",
    )
    assert results[0]["value"]["closed"] is True
    _validate(POLYGON_CONFIG, results)
    _assert_same(from_labelstudio(results).predictions, preds)


def test_mask_as_polygon_uses_the_largest_contour():
    mask = np.zeros((H, W), np.uint8)
    mask[100:200, 300:400] = 1
    mask[10:14, 10:14] = 1
    box = Prediction(
        type="box",
        label="Car",
        coords=(300, 100, 400, 200),
        mask=masks.mask_to_rle(mask),
    )
    empty = Prediction(
        type="box",
        label="Car",
        coords=(1, 2, 3, 4),
        mask=masks.mask_to_rle(np.zeros((H, W))),
    )
    results = to_labelstudio(
        [box, empty],
        from_name="poly",
        to_name="image",
        width=W,
        height=H,
        output="polygonlabels",
    )
    _validate(POLYGON_CONFIG, results)
    back = from_labelstudio(results).predictions
    xs = [x for x, _ in back[0].coords]
    assert min(xs) == pytest.approx(300.5) and max(xs) == pytest.approx(399.5)
    # An empty mask falls back to the box corners.
    assert back[1].bbox == pytest.approx((1, 2, 3, 4))


def test_brush_masks_validate_and_round_trip():
    mask = np.zeros((H, W), np.uint8)
    yy, xx = np.mgrid[:H, :W]
    mask[(xx - 300) ** 2 + (yy - 200) ** 2 <= 50**2] = 1
    rle = masks.mask_to_rle(mask)
    preds = [
        Prediction(
            type="box", label="Car", coords=masks.rle_bbox(rle), mask=rle, score=0.6
        )
    ]
    results = to_labelstudio(
        preds,
        from_name="brush",
        to_name="image",
        width=W,
        height=H,
        output="brushlabels",
    )
    assert results[0]["value"]["format"] == "rle"
    _validate(BRUSH_CONFIG, results)
    _assert_same(from_labelstudio(results).predictions, preds)


def test_brush_without_mask_rasterises_the_box():
    box = Prediction(type="box", label="Car", coords=(10, 20, 30, 60))
    results = to_labelstudio(
        [box],
        from_name="brush",
        to_name="image",
        width=W,
        height=H,
        output="brushlabels",
    )
    (back,) = from_labelstudio(results).predictions
    assert masks.rle_area(back.mask) == 20 * 40
    assert back.coords == (10, 20, 30, 60)


def test_points_validate_and_round_trip():
    preds = [Prediction(type="point", label="Banana", coords=(320, 240), score=0.3)]
    results = to_labelstudio(preds, from_name="kp", to_name="image", width=W, height=H)
    assert results[0]["value"] == {
        "x": 50.0,
        "y": 50.0,
        "width": KEYPOINT_SIZE_PERCENT,
        "keypointlabels": ["Banana"],
    }
    _validate(POINT_CONFIG, results)
    _assert_same(from_labelstudio(results).predictions, preds)


@pytest.mark.parametrize("kp_set", [PERSON, ANIMAL], ids=lambda s: s.name)
def test_keypoint_instances_validate_and_round_trip(kp_set):
    def instance(n: int, dx: float) -> Prediction:
        joints = {
            j: None if i % 5 == 4 else (100 + dx + i * 3.5, 50 + i * 11.25)
            for i, j in enumerate(kp_set.joints)
        }
        return Prediction(
            type="keypoint",
            label=kp_set.name,
            coords=(90 + dx, 40, 170 + dx, 260),
            keypoints=joints,
            instance_id=f"{kp_set.name}{n}",
            score=0.75,
        )

    preds = [instance(1, 0.0), instance(2, 200.0)]
    results = to_labelstudio(
        preds,
        from_name="kp",
        to_name="image",
        width=W,
        height=H,
        keypoint_box_from_name="box",
    )
    boxes = [r for r in results if r["type"] == "rectanglelabels"]
    joints = [r for r in results if r["type"] == "keypointlabels"]
    visible = sum(xy is not None for xy in preds[0].keypoints.values())
    assert len(boxes) == 2 and len(joints) == 2 * visible
    assert {j["parentID"] for j in joints} == {b["id"] for b in boxes}
    assert len({r["id"] for r in results}) == len(results)
    _validate(_keypoint_config(kp_set), results)
    parsed = from_labelstudio(results)
    assert parsed.warnings == []
    _assert_same(parsed.predictions, preds)


def test_keypoints_without_box_control_read_back_as_points():
    results = to_labelstudio(
        [_person(1)], from_name="kp", to_name="image", width=W, height=H
    )
    assert all("parentID" not in r for r in results)
    back = from_labelstudio(results).predictions
    assert {p.type for p in back} == {RegionType.POINT}
    assert [p.label for p in back] == [
        j for j, xy in _person(1).keypoints.items() if xy is not None
    ]


def test_joint_labels_mapped_to_config_case_read_back_canonically():
    results = to_labelstudio(
        [_person(1)],
        from_name="kp",
        to_name="image",
        width=W,
        height=H,
        keypoint_box_from_name="box",
        label_map=str.title,
    )
    assert results[1]["value"]["keypointlabels"] == ["Nose"]
    (back,) = from_labelstudio(results).predictions
    assert back.label == "Person"
    assert list(back.keypoints) == list(PERSON.joints)


@pytest.mark.parametrize("kind", ["box", "polygon"])
def test_stock_ocr_template_validates_and_round_trips(kind):
    coords = (64, 96, 256, 168) if kind == "box" else [(10, 10), (40, 12), (35, 40)]
    preds = [
        Prediction(
            type=kind, label="Text", coords=coords, score=0.8, text="Hello\nworld"
        )
    ]
    geometry = "bbox" if kind == "box" else "poly"
    results = to_labelstudio(
        preds,
        from_name="label",
        to_name="image",
        width=W,
        height=H,
        output="labels",
        geometry_from_name=geometry,
        text_from_name="transcription",
    )
    expected = "rectangle" if kind == "box" else "polygon"
    assert [r["type"] for r in results] == [expected, "labels", "textarea"]
    assert len({r["id"] for r in results}) == 1
    _validate(OCR_CONFIG, results)
    parsed = from_labelstudio(results)
    assert parsed.warnings == []
    _assert_same(parsed.predictions, preds)


def test_validator_used_above_rejects_labels_not_in_the_config():
    box = Prediction(type="box", label="Bicycle", coords=(1, 1, 5, 5))
    results = to_labelstudio(
        [box], from_name="label", to_name="image", width=W, height=H
    )
    prediction = to_labelstudio_prediction(results, model_version="test")
    errors = LabelInterface(DETECTION_CONFIG).validate_prediction(
        prediction, return_errors=True
    )
    assert errors and "Bicycle" in errors[0]


_coord = st.floats(min_value=0, max_value=1, allow_nan=False)


@st.composite
def _regions(draw):
    width = draw(st.integers(1, 5000))
    height = draw(st.integers(1, 5000))
    preds = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["box", "polygon", "point"]))
        score = draw(st.none() | _coord)
        text = draw(st.none() | st.text(min_size=1, max_size=8))
        if kind == "box":
            xs = sorted(draw(_coord) * width for _ in range(2))
            ys = sorted(draw(_coord) * height for _ in range(2))
            coords = (xs[0], ys[0], xs[1], ys[1])
        elif kind == "polygon":
            n = draw(st.integers(3, 8))
            coords = [(draw(_coord) * width, draw(_coord) * height) for _ in range(n)]
        else:
            coords = (draw(_coord) * width, draw(_coord) * height)
        label = draw(st.sampled_from(["Car", "Person", "a b"]))
        preds.append(
            Prediction(type=kind, label=label, coords=coords, score=score, text=text)
        )
    return width, height, preds


@settings(max_examples=200, deadline=None)
@given(_regions())
def test_round_trip_property(case):
    width, height, preds = case
    results = to_labelstudio(
        preds,
        from_name="label",
        to_name="image",
        width=width,
        height=height,
        text_from_name="transcription",
    )
    assert len({r["id"] for r in results if r["type"] != "textarea"}) == len(preds)
    for r in results:
        value = r["value"]
        for key in ("x", "y"):
            if key in value:
                assert 0 <= value[key] <= 100
    parsed = from_labelstudio(results)
    assert parsed.warnings == []
    for got, want in zip(parsed.predictions, preds, strict=True):
        assert got.type is want.type and got.label == want.label
        assert got.text == want.text and got.score == want.score
        scale = max(width, height)
        assert np.allclose(
            np.asarray(got.coords), np.asarray(want.coords), rtol=0, atol=1e-9 * scale
        )
