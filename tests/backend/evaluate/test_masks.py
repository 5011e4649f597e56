import numpy as np
import pytest

from backend.evaluate.masks import MaskIoU
from backend.evaluate.matching import match_image
from converters.masks import mask_to_rle
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, pair

SIZE = 20  # every image here is 20 x 20 pixels


def masked(label, rows, cols, score=None):
    """A box region carrying the rectangle ``rows`` x ``cols`` as an RLE mask."""
    grid = np.zeros((SIZE, SIZE), dtype=np.uint8)
    grid[rows, cols] = 1
    region = box(label, cols.start, rows.start, cols.stop, rows.stop, score=score)
    return region.with_(mask=mask_to_rle(grid))


def polygon(label, x0, y0, x1, y1):
    """A rectangle as a polygon; integer corners fill pixels x0 .. x1 - 1."""
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    return Prediction(RegionType.POLYGON, label, corners)


def mask_iou(*pairs):
    acc = MaskIoU()
    for p in pairs:
        acc.add(p, match_image(p))
    return acc


def image(gt, pred, key="img"):
    return pair(gt, pred, key=key, width=SIZE, height=SIZE)


def test_two_rectangle_masks_have_the_overlap_computed_by_hand():
    # 10 x 10 masks, one moved 2 px right: overlap 8 * 10 = 80, union 120.
    truth = masked("cat", slice(0, 10), slice(0, 10))
    guess = masked("cat", slice(0, 10), slice(2, 12))
    acc = mask_iou(image([truth], [guess]))
    assert acc.overall() == {"mean_iou": pytest.approx(80 / 120), "matched": 1}
    assert acc.per_label() == {"cat": {"mean_iou": pytest.approx(2 / 3), "matched": 1}}


def test_a_polygon_against_a_mask():
    # The polygon fills 10 x 10 = 100 pixels; the mask is 8 of its 10 columns.
    truth = polygon("cat", 0, 0, 10, 10)
    guess = masked("cat", slice(0, 10), slice(0, 8))
    acc = mask_iou(image([truth], [guess]))
    assert acc.overall() == {"mean_iou": pytest.approx(0.8), "matched": 1}


def test_a_box_against_a_mask_counts_but_two_boxes_do_not():
    truth = [box("cat", 0, 0, 10, 10), box("dog", 10, 10, 20, 20)]
    guess = [masked("cat", slice(0, 10), slice(0, 5)), box("dog", 10, 10, 20, 20)]
    acc = mask_iou(image(truth, guess))  # cat: 50 of the box's 100 pixels
    assert acc.per_label() == {"cat": {"mean_iou": pytest.approx(0.5), "matched": 1}}
    assert mask_iou(image(truth[1:], guess[1:])).per_label() == {}
    assert MaskIoU().overall() == {"mean_iou": None, "matched": 0}


def test_two_labels_over_two_images_average_every_pair():
    cat = image(
        [masked("cat", slice(0, 10), slice(0, 10))],
        [masked("cat", slice(0, 10), slice(2, 12))],  # 2/3
        key="a",
    )
    dog = image(
        [polygon("dog", 0, 0, 10, 10), polygon("dog", 10, 10, 20, 20)],
        [polygon("dog", 0, 0, 10, 10), masked("dog", slice(10, 20), slice(10, 18))],
        key="b",
    )  # 1.0 and 0.8
    acc = mask_iou(cat, dog)
    assert acc.per_label() == {
        "cat": {"mean_iou": pytest.approx(2 / 3), "matched": 1},
        "dog": {"mean_iou": pytest.approx(0.9), "matched": 2},
    }
    assert acc.overall() == {"mean_iou": pytest.approx((2 / 3 + 1.8) / 3), "matched": 3}


def test_a_label_with_masks_but_no_match_is_reported_without_a_mean():
    truth = masked("cat", slice(0, 10), slice(0, 10))
    guess = masked("cat", slice(10, 20), slice(10, 20))  # no overlap
    acc = mask_iou(image([truth], [guess]))
    assert acc.per_label() == {"cat": {"mean_iou": None, "matched": 0}}


def test_a_match_of_another_image_is_refused():
    a = image([polygon("cat", 0, 0, 10, 10)], [polygon("cat", 0, 0, 10, 10)], key="a")
    b = image([], [], key="b")
    with pytest.raises(ValueError, match=r"image 'a' but the pair is 'b'"):
        MaskIoU().add(b, match_image(a))
