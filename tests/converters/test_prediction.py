import json

import pytest

from converters.prediction import ParseResult, Prediction, PredictionError, RegionType


def test_box_round_trips_through_plain_json():
    box = Prediction("box", "car", [10, 20, 30.5, 40], score=0.75)
    data = json.loads(json.dumps(box.to_dict()))
    assert data == {
        "type": "box",
        "label": "car",
        "coords": [10.0, 20.0, 30.5, 40.0],
        "score": 0.75,
        "text": None,
    }
    assert Prediction.from_dict(data) == box


def test_polygon_and_point_serialise_as_nested_lists():
    poly = Prediction(RegionType.POLYGON, "word", [[0, 0], [4, 0], [4, 3]], text="hi")
    assert poly.to_dict()["coords"] == [[0.0, 0.0], [4.0, 0.0], [4.0, 3.0]]
    assert poly.bbox == (0.0, 0.0, 4.0, 3.0)
    point = Prediction("point", "bird", (5, 6))
    assert point.to_dict()["coords"] == [5.0, 6.0]
    assert Prediction.from_dict(poly.to_dict()) == poly


def test_keypoint_instance_uses_bbox_keypoints_and_instance_id():
    kp = Prediction(
        "keypoint",
        "person",
        [0, 0, 10, 20],
        keypoints={"nose": (1, 2), "left eye": None},
        instance_id="person1",
    )
    data = kp.to_dict()
    assert "coords" not in data
    assert data["bbox"] == [0.0, 0.0, 10.0, 20.0]
    assert data["keypoints"] == {"nose": [1.0, 2.0], "left eye": None}
    assert data["instance_id"] == "person1"
    assert Prediction.from_dict(data) == kp


def test_mask_is_kept_as_coco_rle_with_text_counts():
    mask = {"size": [4, 5], "counts": b"abc"}
    pred = Prediction("box", "cat", [0, 0, 1, 1], mask=mask)
    assert pred.to_dict()["mask"] == {"size": [4, 5], "counts": "abc"}


def test_span_is_not_part_of_equality_or_json():
    a = Prediction("box", "a", [0, 0, 1, 1], span=(0, 10))
    b = Prediction("box", "a", [0, 0, 1, 1], span=(5, 20))
    assert a == b
    assert "span" not in a.to_dict()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "circle", "label": "a", "coords": [0, 0]}, "circle"),
        ({"type": "box", "label": "a", "coords": [0, 0, 1]}, "box coords"),
        ({"type": "box", "label": "a", "coords": [0, 0, 1, "x"]}, "box coords"),
        ({"type": "point", "label": "a", "coords": [0, float("nan")]}, "finite"),
        ({"type": "polygon", "label": "a", "coords": [[0, 0], [1, 1]]}, "3"),
        ({"type": "box", "label": "a", "coords": [0, 0, 1, 1], "score": 1.5}, "score"),
        ({"type": "box", "label": 3, "coords": [0, 0, 1, 1]}, "label"),
        (
            {"type": "box", "label": "a", "coords": [0, 0, 1, 1], "mask": {"x": 1}},
            "mask",
        ),
    ],
)
def test_invalid_predictions_name_the_bad_field(kwargs, message):
    with pytest.raises((PredictionError, ValueError), match=message):
        Prediction(**kwargs)


def test_from_dict_names_missing_geometry():
    with pytest.raises(PredictionError, match="bbox"):
        Prediction.from_dict({"type": "keypoint", "label": "person"})
    with pytest.raises(PredictionError, match="not one of"):
        Prediction.from_dict({"type": "blob", "coords": [1, 2]})


def test_parse_result_to_dict():
    result = ParseResult([Prediction("point", "a", [1, 2])], ["dropped x"], True)
    assert result.to_dict() == {
        "predictions": [
            {
                "type": "point",
                "label": "a",
                "coords": [1.0, 2.0],
                "score": None,
                "text": None,
            }
        ],
        "warnings": ["dropped x"],
        "truncated": True,
    }
