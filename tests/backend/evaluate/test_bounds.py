"""Untrusted sizes and regions refused before they are rasterised."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from backend.evaluate.bounds import (
    GeometryError,
    check_coco,
    check_region,
    check_size,
    dimension,
    rle_problem,
    rle_total,
)
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, point


def polygon(label, *vertices):
    return Prediction(RegionType.POLYGON, label, list(vertices))


def encoded(mask):
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


# -- compressed RLE counts -----------------------------------------------------
@pytest.mark.parametrize(("height", "width"), [(1, 1), (5, 7), (100, 200), (480, 640)])
def test_rle_total_reads_pycocotools_counts_back(height, width):
    rng = np.random.default_rng(height)
    block = np.zeros((height, width))
    block[height // 4 : height // 2 + 1, width // 3 :] = 1
    for mask in (
        np.zeros((height, width)),
        np.ones((height, width)),
        rng.random((height, width)) > 0.5,  # many short runs, negative deltas
        block,
    ):
        rle = encoded(mask)
        assert rle_total(rle["counts"].decode()) == height * width


def test_rle_total_refuses_what_is_no_rle():
    good = encoded(np.ones((100, 200)))["counts"].decode()  # "0Pac0"
    assert rle_total(good) == 20000
    assert rle_total(good + "5") == 20005  # one run too many: a wrong total
    assert rle_total("!!!garbage") is None  # characters below '0'
    assert rle_total("zzzz") is None  # characters above 'o'
    assert rle_total("P") is None  # a value left open (continuation bit)
    assert rle_total("PPPPPPPP0") is None  # a value longer than 7 characters
    assert rle_total("猫") is None
    assert rle_total("") == 0


def test_rle_problem_names_size_and_counts():
    rle = {k: v for k, v in encoded(np.ones((100, 200))).items()}
    rle["counts"] = rle["counts"].decode()
    assert rle_problem(rle, 200, 100) is None
    assert "size [50, 50] (h, w) is not the image's [100, 200]" in rle_problem(
        {**rle, "size": [50, 50]}, 200, 100
    )
    short = rle_problem({**rle, "counts": "0"}, 200, 100)
    assert short == "counts '0' are 0 pixels, expected 20000 pixels"
    assert "not a compressed RLE" in rle_problem({**rle, "counts": "!!"}, 200, 100)
    runs = {"size": [100, 200], "counts": [5, 19995]}
    assert "compressed RLE string" in rle_problem(runs, 200, 100)
    assert rle_problem(runs, 200, 100, uncompressed=True) is None
    short_runs = {**runs, "counts": [5, 10]}
    assert "15 pixels" in rle_problem(short_runs, 200, 100, uncompressed=True)


# -- sizes -----------------------------------------------------------------------
def test_dimension_takes_json_integers_only():
    assert dimension(200, "width") == 200
    assert dimension(200.0, "width") == 200
    assert dimension(None, "width") == 0
    for bad in ("200", 200.7, True, [200]):
        with pytest.raises(GeometryError, match="width must be an integer"):
            dimension(bad, "width")


def test_sizes_past_the_pixel_limit_are_refused():
    check_size(200, 100, max_pixels=20000)
    with pytest.raises(GeometryError, match="200x101 is more than the 20000"):
        check_size(200, 101, max_pixels=20000)
    with pytest.raises(GeometryError, match="negative"):
        check_size(-200, -100)


# -- regions ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "region",
    [
        box("cat", -3, -2, 203, 101),  # drawn a few pixels past the edges
        box("cat", -200, -100, 400, 200),  # exactly one image size out
        point("cat", 399, 199),
        polygon("cat", (0, 0), (400, 0), (400, 200)),
    ],
)
def test_overhang_up_to_the_image_size_passes(region):
    check_region(0, region, 200, 100)


@pytest.mark.parametrize(
    ("region", "named"),
    [
        (box("cat", 20, 10, 1e308, 50), "bottom-right corner (1e+308, 50)"),
        (box("cat", -200.5, 10, 60, 50), "top-left corner (-200.5, 10)"),
        (polygon("cat", (1, 1), (1e9, 1), (5, 5)), "vertex 1 (1e+09, 1)"),
        (point("cat", 10, 201), "point (10, 201)"),
    ],
)
def test_far_outside_is_refused_naming_the_region(region, named):
    with pytest.raises(GeometryError) as error:
        check_region(3, region, 200, 100)
    message = str(error.value)
    assert message.startswith(f"region 3 ('cat' {region.type.value}): {named}")
    assert "x from -200 to 400, y from -100 to 200" in message


def test_keypoint_joints_are_bounded_too():
    instance = Prediction(
        RegionType.KEYPOINT,
        "person",
        (10, 10, 50, 50),
        keypoints={"nose": (20, 20), "tail": (5e6, 20)},
    )
    with pytest.raises(GeometryError, match=r"joint 'tail' \(5e\+06, 20\)"):
        check_region(0, instance, 200, 100)


def test_an_inverted_box_is_refused():
    with pytest.raises(GeometryError, match="negative width or height"):
        check_region(0, box("cat", 60, 10, 20, 50), 200, 100)


def test_a_mask_of_another_size_is_refused():
    rle = encoded(np.ones((50, 50)))
    region = Prediction(RegionType.BOX, "cat", (0, 0, 50, 50), mask=rle)
    with pytest.raises(GeometryError, match=r"region 0 .*: mask size \[50, 50\]"):
        check_region(0, region, 200, 100)


# -- COCO, checked before from_coco rasterises it ------------------------------
def coco(image=None, segmentation=None):
    ann = {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}
    if segmentation is not None:
        ann["segmentation"] = segmentation
    return {
        "images": [
            image or {"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}
        ],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "cat"}],
    }


def test_coco_image_sizes_are_checked():
    check_coco(coco())
    huge = {"id": 1, "file_name": "a.jpg", "width": 100000, "height": 100000}
    with pytest.raises(GeometryError, match=r"image 1 \(a.jpg\): image size 100000"):
        check_coco(coco(huge))
    text = {"id": 1, "file_name": "a.jpg", "width": "200", "height": 100}
    with pytest.raises(GeometryError, match="width must be an integer, got '200'"):
        check_coco(coco(text))


@pytest.mark.parametrize(
    ("segmentation", "expected"),
    [
        ({"size": [100000, 100000], "counts": "0"}, "segmentation size"),
        ({"size": [100, 200], "counts": "!!"}, "not a compressed RLE"),
        ([[0, 0, 10, 0, 10, 10], [0, 0, 1e12, 0, 5, 5]], "polygon 1: vertex 1"),
        ([[0, 0, 10, 0, 10]], "flat list"),
    ],
)
def test_coco_segmentations_are_checked(segmentation, expected):
    with pytest.raises(GeometryError) as error:
        check_coco(coco(segmentation=segmentation))
    assert str(error.value).startswith("annotation 7 (image 1): ")
    assert expected in str(error.value)
