"""converters.labelstudio.reader: results written by Label Studio itself."""

import math

import pytest

from converters.labelstudio.reader import from_labelstudio
from converters.prediction import RegionType


def test_rotated_rectangle_becomes_clockwise_polygon():
    result = {
        "id": "r",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 200,
        "original_height": 100,
        "value": {
            "x": 10,
            "y": 20,
            "width": 20,
            "height": 10,
            "rotation": 90,
            "rectanglelabels": ["Car"],
        },
    }
    (poly,) = from_labelstudio([result]).predictions
    assert poly.type is RegionType.POLYGON
    # Pixels: top-left (20, 20), 40 x 10; 90 degrees clockwise (y down) sends the
    # top edge downwards and the left edge to the left.
    expected = [(20, 20), (20, 60), (10, 60), (10, 20)]
    for got, want in zip(poly.coords, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-9)
    thirty = dict(result, value=dict(result["value"], rotation=30))
    (poly,) = from_labelstudio([thirty]).predictions
    x1, y1 = poly.coords[1]
    assert (x1, y1) == pytest.approx(
        (20 + 40 * math.cos(math.pi / 6), 20 + 40 * math.sin(math.pi / 6))
    )


def test_unknown_and_whole_image_results_are_skipped_with_warnings():
    results = [
        {
            "from_name": "quality",
            "to_name": "image",
            "type": "choices",
            "value": {"choices": ["good"]},
        },
        {
            "id": "t",
            "from_name": "caption",
            "to_name": "image",
            "type": "textarea",
            "value": {"text": ["a cat"]},
        },
        {
            "id": "b",
            "from_name": "label",
            "to_name": "image",
            "type": "rectanglelabels",
            "original_width": 100,
            "original_height": 100,
            "value": {
                "x": 1,
                "y": 2,
                "width": 3,
                "height": 4,
                "rectanglelabels": ["Car"],
            },
        },
    ]
    parsed = from_labelstudio(results)
    assert [p.label for p in parsed.predictions] == ["Car"]
    assert len(parsed.warnings) == 2
    assert "'choices'" in parsed.warnings[0]
    assert "'t'" in parsed.warnings[1]


def test_missing_size_uses_fallback_or_warns():
    result = {
        "id": "b",
        "type": "rectanglelabels",
        "value": {
            "x": 10,
            "y": 10,
            "width": 10,
            "height": 10,
            "rectanglelabels": ["Car"],
        },
    }
    parsed = from_labelstudio([result])
    assert parsed.predictions == []
    assert "original_width" in parsed.warnings[0]
    (box,) = from_labelstudio([result], width=200, height=100).predictions
    assert box.coords == pytest.approx((20, 10, 40, 20))


def test_keypoint_with_unknown_parent_reads_as_point():
    result = {
        "id": "k",
        "type": "keypointlabels",
        "parentID": "nope",
        "original_width": 100,
        "original_height": 100,
        "value": {"x": 10, "y": 10, "width": 1, "keypointlabels": ["nose"]},
    }
    parsed = from_labelstudio([result])
    assert parsed.predictions[0].type is RegionType.POINT
    assert "'nope'" in parsed.warnings[0]


def test_several_labels_keep_the_first_with_a_warning():
    result = {
        "id": "m",
        "type": "rectanglelabels",
        "original_width": 100,
        "original_height": 100,
        "value": {
            "x": 1,
            "y": 1,
            "width": 5,
            "height": 5,
            "rectanglelabels": ["Car", "Truck"],
        },
    }
    parsed = from_labelstudio([result])
    assert parsed.predictions[0].label == "Car"
    assert "'m'" in parsed.warnings[0] and "Truck" in parsed.warnings[0]
