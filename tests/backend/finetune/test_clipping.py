"""Geometry kept inside the image, with a warning for each change."""

from __future__ import annotations

import pytest

from backend.finetune.clipping import EDGE_TOLERANCE_PX, clip_region
from converters.prediction import Prediction, RegionType

W, H = 100.0, 50.0


def _clip(kind, coords, **extra):
    return clip_region(Prediction(kind, "x", coords, **extra), W, H, "r")


def test_a_box_inside_is_kept_as_it_is_even_with_no_area():
    region, warnings = _clip(RegionType.BOX, (10, 10, 10, 20))
    assert region.coords == (10, 10, 10, 20) and warnings == []


def test_a_box_over_the_edge_is_clipped_and_one_outside_dropped():
    region, warnings = _clip(RegionType.BOX, (-20, 40, 30, 70))
    assert region.coords == (0, 40, 30, 50)
    assert warnings == ["r: box clipped to the image"]
    region, warnings = _clip(RegionType.BOX, (-30, 10, -5, 20))
    assert region is None and warnings == ["r: dropped, the box lies outside the image"]
    # only a sliver along the edge left: dropped too
    region, _ = _clip(RegionType.BOX, (-30, 10, EDGE_TOLERANCE_PX, 20))
    assert region is None


def test_float_noise_at_the_edge_is_clamped_quietly():
    region, warnings = _clip(RegionType.BOX, (0, -0.2, W + 0.3, H))
    assert region.coords == (0, 0, W, H) and warnings == []


@pytest.mark.parametrize("xy", [(-3, 10), (10, H + 1), (W + 0.6, 0)])
def test_a_point_outside_is_dropped(xy):
    region, warnings = _clip(RegionType.POINT, xy)
    assert region is None
    assert warnings == ["r: dropped, the point lies outside the image"]


def test_a_polygon_over_the_edge_has_its_vertices_clamped():
    region, warnings = _clip(RegionType.POLYGON, ((90, 10), (120, 20), (90, 40)))
    assert region.coords == ((90, 10), (100, 20), (90, 40))
    assert warnings == ["r: polygon clipped to the image"]
    region, _ = _clip(RegionType.POLYGON, ((110, 10), (120, 20), (130, 40)))
    assert region is None


def test_a_joint_outside_becomes_not_visible_and_the_instance_stays():
    region, warnings = _clip(
        RegionType.KEYPOINT,
        (10, 10, 60, 49),
        keypoints={"nose": (20, 20), "left eye": (20, 55), "right eye": None},
    )
    assert region.keypoints == {"nose": (20, 20), "left eye": None, "right eye": None}
    assert warnings == [
        "r: joint 'left eye' lies outside the image; written as not visible"
    ]
