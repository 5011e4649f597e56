import numpy as np
import pytest

from backend.evaluate.matching import (
    BACKGROUND,
    confusion_matrix,
    iou_matrix,
    match_image,
)
from converters.masks import mask_to_rle
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, pair


def test_a_box_shifted_by_two_pixels_has_the_iou_computed_by_hand():
    # 10x10 box moved 2 px right: overlap 8*10 = 80, union 100 + 100 - 80 = 120.
    ious = iou_matrix([box("cat", 2, 0, 12, 10)], [box("cat", 0, 0, 10, 10)])
    assert ious.shape == (1, 1)
    assert ious[0, 0] == pytest.approx(80 / 120)


def test_masks_are_compared_pixel_by_pixel():
    a = np.zeros((20, 20), dtype=np.uint8)
    b = np.zeros((20, 20), dtype=np.uint8)
    a[0:10, 0:10] = 1
    b[0:10, 5:15] = 1  # overlap 50 pixels, union 150
    pred = box("cat", 5, 0, 15, 10).with_(mask=mask_to_rle(b))
    gt = box("cat", 0, 0, 10, 10).with_(mask=mask_to_rle(a))
    assert iou_matrix([pred], [gt], 20, 20)[0, 0] == pytest.approx(1 / 3)


def test_a_polygon_against_a_box_needs_the_image_size():
    square = Prediction(RegionType.POLYGON, "cat", [(0, 0), (10, 0), (10, 10), (0, 10)])
    with pytest.raises(ValueError, match="height and width"):
        iou_matrix([square], [box("cat", 0, 0, 10, 10)])
    assert iou_matrix([square], [square], 20, 20)[0, 0] == pytest.approx(1.0)


def test_the_higher_score_takes_the_region_and_the_other_is_a_false_positive():
    gt = [box("cat", 0, 0, 10, 10)]
    low = box("cat", 0, 0, 10, 10, score=0.4)  # exact, but scored lower
    high = box("cat", 2, 0, 12, 10, score=0.9)
    m = match_image(pair(gt, [low, high]))
    assert [(t.pred, t.gt) for t in m.matches] == [(1, 0)]
    assert m.matches[0].iou == pytest.approx(2 / 3)
    assert [(fp.pred, fp.wrong_label) for fp in m.false_positives] == [(0, None)]
    assert m.misses == []


def test_below_the_iou_threshold_is_a_miss_and_a_false_positive():
    m = match_image(pair([box("cat", 0, 0, 10, 10)], [box("cat", 2, 0, 12, 10)]), 0.7)
    assert m.matches == [] and m.misses == [0]
    assert len(m.false_positives) == 1


def test_a_mislabelled_box_shows_in_the_confusion_matrix():
    gt = [
        box("cat", 0, 0, 10, 10),
        box("dog", 50, 50, 60, 60),
        box("dog", 80, 80, 90, 90),  # missed
    ]
    pred = [
        box("cat", 0, 0, 10, 10, score=0.9),  # true positive
        box("cat", 50, 50, 60, 60, score=0.8),  # right object, wrong label
        box("dog", 20, 20, 30, 30, score=0.7),  # nothing there
    ]
    m = match_image(pair(gt, pred))
    wrong = [fp for fp in m.false_positives if fp.wrong_label]
    assert [(fp.pred, fp.gt, fp.wrong_label) for fp in wrong] == [(1, 1, "dog")]
    matrix = confusion_matrix([m])
    assert matrix.labels == ["cat", "dog"]
    assert matrix.count("cat", "cat") == 1
    assert matrix.count("dog", "cat") == 1  # truth dog, predicted cat
    assert matrix.count("dog", BACKGROUND) == 1  # only the unclaimed miss
    assert matrix.count(BACKGROUND, "dog") == 1
    assert matrix.rows() == [[1, 0, 0], [1, 0, 1], [0, 1, 0]]
    # every region counted once: 3 predictions (columns), 3 truths (rows)
    rows = np.array(matrix.rows())
    assert rows[:, :2].sum() == 3 and rows[:2, :].sum() == 3


def test_a_plain_box_against_a_mask_is_rasterised():
    # the box's 10 x 10 pixels against a mask of 5 of its 10 columns: 50 / 100
    half = np.zeros((20, 20), dtype=np.uint8)
    half[0:10, 0:5] = 1
    pred = box("cat", 0, 0, 5, 10).with_(mask=mask_to_rle(half))
    assert iou_matrix([pred], [box("cat", 0, 0, 10, 10)], 20, 20)[0, 0] == 0.5


def test_two_boxes_compare_as_rectangles_even_beside_a_polygon():
    """A polygon elsewhere in the image must not rasterise the box pairs:
    (10.4..18.4) against (10..18) is 7.6^2 / (2 * 64 - 7.6^2) exactly."""
    gt = box("cat", 10.4, 10.4, 18.4, 18.4)
    pred = box("cat", 10, 10, 18, 18, score=0.9)
    leaf = Prediction(RegionType.POLYGON, "leaf", [(60, 60), (90, 60), (60, 90)])
    exact = 7.6**2 / (2 * 64 - 7.6**2)
    alone = iou_matrix([pred], [gt], 100, 100)
    beside = iou_matrix([pred, leaf], [gt, leaf], 100, 100)
    assert alone[0, 0] == pytest.approx(exact)
    assert beside[0, 0] == pytest.approx(exact)
    assert beside[1, 1] == pytest.approx(1.0)  # the polygons, rasterised
    assert beside[0, 1] == beside[1, 0] == 0.0
