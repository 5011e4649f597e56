import random

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from backend.evaluate.effort import effort
from backend.evaluate.matching import match_image
from backend.evaluate.ocr import ocr_errors, text_errors
from backend.evaluate.points import _Pixels, point_hits
from converters.masks import mask_to_rle
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, pair, point


def test_points_hit_boxes_polygons_and_masks_of_their_label_once_each():
    blob = np.zeros((100, 100), dtype=np.uint8)
    blob[70:80, 70:80] = 1
    gt = [
        box("cat", 0, 0, 10, 10),
        Prediction(RegionType.POLYGON, "dog", [(20, 20), (40, 20), (20, 40)]),
        box("dog", 60, 60, 90, 90).with_(mask=mask_to_rle(blob)),
        box("cow", 0, 50, 10, 60),  # nobody points at it: a region not hit
    ]
    pred = [
        point("cat", 5, 5, score=0.9),  # hit
        point("cat", 6, 6, score=0.5),  # same box again: a false point
        point("dog", 22, 22),  # inside the triangle: hit
        point("dog", 38, 38),  # in the triangle's box, not in it: false
        point("dog", 75, 75),  # on the mask: hit
        point("dog", 62, 62),  # in the mask's box, off the mask: false
        point("cat", 25, 25),  # inside a dog: false for cat
    ]
    hits = point_hits([pair(gt, pred)], ["cat", "dog", "cow"])
    assert dict(hits.hits) == {"cat": 1, "dog": 2}
    assert dict(hits.false_points) == {"cat": 2, "dog": 2}
    assert dict(hits.regions) == {"cat": 1, "dog": 2, "cow": 1}
    assert hits.hit_rate("dog") == 1.0
    assert hits.hit_rate("cow") == 0.0
    assert hits.hit_rate() == pytest.approx(3 / 4)


def test_points_score_the_pointed_labels_by_default():
    hits = point_hits([pair([box("cat", 0, 0, 10, 10), box("cow", 0, 0, 5, 5)], [])])
    assert hits.hit_rate() is None and not hits.regions


def test_cer_and_wer_of_hand_made_strings():
    # one letter of 11 wrong; one word of 2
    errors = text_errors(["hello world"], ["hallo world"])
    assert (errors.cer, errors.wer) == pytest.approx((1 / 11, 1 / 2))
    # summed over pairs: 1 + 3 character edits over 11 + 3 characters
    errors = text_errors(["hello world", "abc"], ["hallo world", ""])
    assert errors.cer == pytest.approx(4 / 14)
    assert text_errors([], []).cer is None


def test_ocr_reads_text_of_matched_regions_only():
    gt = [
        box("word", 0, 0, 10, 10, text="STOP"),
        box("word", 20, 0, 30, 10, text="HERE"),  # missed: not counted
    ]
    pred = [
        box("word", 0, 0, 10, 10, score=0.9, text="ST0P"),
        box("word", 50, 50, 60, 60, score=0.9, text="NOISE"),  # unmatched
    ]
    p = pair(gt, pred)
    overall, per_label = ocr_errors([p], [match_image(p)])
    assert overall.pairs == 1 and overall.cer == pytest.approx(1 / 4)
    assert overall.wer == 1.0
    assert per_label["word"] == overall


def test_effort_counts_unchanged_edited_deleted_and_added():
    gt = [
        box("cat", 0, 0, 10, 10),
        box("cat", 20, 0, 30, 10),
        box("dog", 40, 0, 50, 10),
        box("dog", 60, 60, 70, 70),  # drawn by hand
    ]
    pred = [
        box("cat", 0, 0, 10, 10, score=0.9),  # IoU 1: unchanged
        box("cat", 22, 0, 32, 10, score=0.9),  # IoU 2/3: edited
        box("cat", 40, 0, 50, 10, score=0.9),  # relabelled: edited
        box("dog", 80, 0, 90, 10, score=0.9),  # deleted
    ]
    result = effort([match_image(pair(gt, pred))])
    assert (result.unchanged, result.edited, result.deleted, result.added) == (
        1,
        2,
        1,
        1,
    )
    assert (result.unchanged_share, result.edited_share) == (1 / 4, 2 / 4)
    assert result.deleted_share == 1 / 4 and result.added_share == 1 / 4


def test_a_polygon_rasterised_in_its_window_has_the_full_images_pixels():
    """Points test polygons inside their bounding window (cheap on big
    images): every pixel must agree with pycocotools on the whole image."""
    rng = random.Random(5)
    height, width = 60, 80
    for _ in range(30):
        vertices = [
            (rng.uniform(-10, width + 10), rng.uniform(-10, height + 10))
            for _ in range(rng.randint(3, 7))
        ]
        region = Prediction(RegionType.POLYGON, "leaf", vertices)
        flat = [v for xy in vertices for v in xy]
        full = mask_utils.decode(
            mask_utils.merge(mask_utils.frPyObjects([flat], height, width))
        )
        pixels = _Pixels(height, width)
        window = np.array(
            [
                [pixels.covers(0, region, col, row) for col in range(width)]
                for row in range(height)
            ]
        )
        assert (window == full.astype(bool)).all()
