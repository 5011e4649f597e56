"""merge_tiled on hand-made predictions, in pixels of the original image.

The grids are small so every number can be checked by hand: tiles of 100 px with
overlap 0.2 share 20 px, so the first two columns are x 0..100 and 80..180 and
their overlap is the strip x 80..100; a box side counts as cut within 2 px
(EDGE_TOLERANCE_SHARE of 100 px) of an edge inside the image.
"""

import numpy as np
import pytest

from converters import masks
from converters.prediction import Prediction
from converters.tile_merge import merge_tiled
from converters.tiling import tile_grid

ROW = tile_grid(180, 100, 100, 0.2)
"""Two tiles side by side: x 0..100 and 80..180, y 0..100."""

SQUARE = tile_grid(180, 180, 100, 0.2)
"""Four tiles: x and y each 0..100 and 80..180."""

LONG = tile_grid(260, 100, 100, 0.2)
"""Three tiles side by side: x 0..100, 80..180, 160..260."""


def box(coords, score=0.5, label="car", text=None, mask=None) -> Prediction:
    return Prediction("box", label, coords, score=score, text=text, mask=mask)


def boxes(predictions) -> list[tuple]:
    return [(p.label, p.coords, p.score) for p in predictions]


def test_tiles_of_the_grids_are_as_the_docstring_says():
    assert [t.box for t in ROW] == [(0, 0, 100, 100), (80, 0, 180, 100)]
    assert [t.box for t in LONG][2] == (160, 0, 260, 100)


# Boxes ------------------------------------------------------------------------
def test_duplicate_in_the_overlap_becomes_one_with_the_highest_score():
    # An object inside the strip, seen whole by both tiles: the better view
    # stays as drawn (no union inflating it), with the higher score.
    merged = merge_tiled(
        [box((85, 10, 95, 30), 0.6), box((85.5, 10, 95, 30.5), 0.9)], ROW
    )
    assert boxes(merged) == [("car", (85.5, 10.0, 95.0, 30.5), 0.9)]


def test_object_cut_by_one_tile_edge_comes_back_at_its_full_extent():
    # Object x 90..110: the left tile sees x 90..100 (cut by its edge at 100),
    # the right tile sees it whole. The part even has the higher score.
    merged = merge_tiled(
        [box((90, 40, 100, 60), 0.9), box((90, 40, 110, 60), 0.6)], ROW
    )
    assert boxes(merged) == [("car", (90.0, 40.0, 110.0, 60.0), 0.9)]


def test_object_larger_than_the_overlap_is_joined_across_the_seam():
    # Object x 50..130 is in no tile whole: left part 50..100 (cut at 100),
    # right part 80..130 (cut at 80). IoU 0.27 and IOS 0.4: only the seam
    # rule joins them.
    left, right = box((50, 40, 100, 60), 0.6), box((80, 40, 130, 60), 0.9)
    assert boxes(merge_tiled([left, right], ROW)) == [
        ("car", (50.0, 40.0, 130.0, 60.0), 0.9)
    ]


def test_seam_parts_drawn_a_pixel_short_of_the_tile_edge_still_join():
    parts = [box((50, 40, 98.5, 61), 0.6), box((81, 39, 130, 60), 0.9)]
    assert boxes(merge_tiled(parts, ROW)) == [("car", (50.0, 39.0, 130.0, 61.0), 0.9)]


def test_edge_tolerance_decides_what_counts_as_cut():
    # The right part stops 5 px short of the right tile's left edge (80): beyond
    # the 2 px default it is no part, within a 6 px tolerance it is.
    parts = [box((50, 40, 100, 60), 0.6), box((85, 40, 130, 60), 0.9)]
    assert boxes(merge_tiled(parts, ROW)) == boxes(parts)
    assert boxes(merge_tiled(parts, ROW, edge_tolerance=6)) == [
        ("car", (50.0, 40.0, 130.0, 60.0), 0.9)
    ]


def test_object_over_a_tile_corner_is_joined_from_its_four_parts():
    parts = [
        box((50, 50, 100, 100), 0.5),
        box((80, 50, 130, 100), 0.6),
        box((50, 80, 100, 130), 0.7),
        box((80, 80, 130, 130), 0.8),
    ]
    assert boxes(merge_tiled(parts, SQUARE)) == [
        ("car", (50.0, 50.0, 130.0, 130.0), 0.8)
    ]


def test_object_across_three_tiles_is_joined_part_by_part():
    parts = [
        box((50, 40, 100, 60), 0.7),  # left tile, cut at 100
        box((80, 40, 180, 60), 0.6),  # middle tile, cut at 80 and 180
        box((160, 40, 210, 60), 0.9),  # right tile, cut at 160
    ]
    assert boxes(merge_tiled(parts, LONG)) == [("car", (50.0, 40.0, 210.0, 60.0), 0.9)]


def test_object_larger_than_the_overlap_comes_back_as_parts_when_they_miss_the_edge():
    # The right part stops at 90 instead of the tile edge at 80: nothing says it
    # is a part, they overlap too little for IoU/IOS, so two parts come back.
    parts = [box((50, 40, 100, 60), 0.6), box((90, 40, 130, 60), 0.9)]
    assert boxes(merge_tiled(parts, ROW)) == boxes(parts)


def test_seam_parts_that_do_not_line_up_are_not_joined():
    # Left part spans y 40..60, right part y 70..90: two objects, not one.
    parts = [box((50, 40, 100, 60), 0.6), box((80, 70, 130, 90), 0.9)]
    assert boxes(merge_tiled(parts, ROW)) == boxes(parts)


def test_whole_image_pass_absorbs_the_parts_and_keeps_its_box():
    whole = box((52, 41, 128, 59), 0.5)  # in no tile: a whole view
    parts = [box((50, 40, 100, 60), 0.9), box((80, 40, 130, 60), 0.8)]
    assert boxes(merge_tiled([*parts, whole], ROW)) == [
        ("car", (52.0, 41.0, 128.0, 59.0), 0.9)
    ]


def test_two_adjacent_distinct_objects_are_not_merged():
    a = box((60, 40, 79, 60), 0.8)  # left of the strip: left tile only
    b = box((81, 40, 99, 60), 0.7)  # in the strip: both tiles see it whole
    b_again = box((81.5, 40, 99, 60), 0.6)
    assert boxes(merge_tiled([a, b, b_again], ROW)) == boxes([a, b])
    # Touching at the right tile's left edge: b2 looks cut there, but a does not
    # end at a tile's right edge, so there is no seam to join across.
    a2, b2 = box((60, 40, 80, 60), 0.8), box((80, 40, 99, 60), 0.7)
    assert boxes(merge_tiled([a2, b2], ROW)) == boxes([a2, b2])
    assert boxes(merge_tiled([a2, b2])) == boxes([a2, b2])


def test_small_object_on_a_big_one_of_its_label_stays_when_tiles_are_known():
    # A child before an adult, both "person", inside the left tile, nowhere near
    # a tile edge: IOS is 1, but the small one is not a cut part.
    big, small = (
        box((10, 10, 70, 90), 0.9, "person"),
        box((20, 20, 40, 40), 0.8, "person"),
    )
    assert boxes(merge_tiled([big, small], ROW)) == boxes([big, small])
    # Without tiles any box may be cut (SAHI's greedy IOS merge): merged.
    assert boxes(merge_tiled([big, small])) == [("person", big.coords, 0.9)]


def test_without_tiles_a_cut_part_still_merges_into_its_whole():
    merged = merge_tiled([box((90, 40, 100, 60), 0.9), box((90, 40, 110, 60), 0.6)])
    assert boxes(merged) == [("car", (90.0, 40.0, 110.0, 60.0), 0.9)]


def test_labels_are_never_merged_across():
    same_box = [box((85, 10, 95, 30), 0.9, "car"), box((85, 10, 95, 30), 0.8, "truck")]
    assert boxes(merge_tiled(same_box, ROW)) == boxes(same_box)
    seam_parts = [
        box((50, 40, 100, 60), 0.6, "car"),
        box((80, 40, 130, 60), 0.9, "bus"),
    ]
    assert boxes(merge_tiled(seam_parts, ROW)) == boxes(seam_parts)


def test_scores_max_of_the_known_and_none_when_all_unknown():
    merged = merge_tiled([box((85, 10, 95, 30), None), box((85, 10, 95, 30), 0.4)], ROW)
    assert [p.score for p in merged] == [0.4]
    merged = merge_tiled(
        [box((85, 10, 95, 30), None), box((85, 10, 95, 30), None)], ROW
    )
    assert [p.score for p in merged] == [None]


def test_each_result_takes_the_place_of_its_first_member():
    a = box((10, 10, 20, 20), 0.3)
    b = box((85, 10, 95, 30), 0.5)
    kp = Prediction("keypoint", "person", (0, 0, 5, 5), keypoints={"nose": (1, 1)})
    b_again = box((85, 10, 95, 30), 0.9)
    merged = merge_tiled([a, b, kp, b_again], ROW)
    assert merged == [a, b_again.with_(score=0.9), kp]


def test_tiles_given_once_per_prediction_work_like_the_grid():
    parts = [box((50, 40, 100, 60), 0.6), box((80, 40, 130, 60), 0.9)]
    whole = box((40, 30, 140, 70), 0.3)
    per_prediction = [ROW[0], ROW[1], None]
    assert merge_tiled([*parts, whole], per_prediction) == merge_tiled(
        [*parts, whole], ROW
    )


# Sources: the tile that found each prediction, None for the whole-image pass --
def test_a_side_is_cut_only_by_the_edges_of_the_tile_that_found_it():
    # A child found whole by the left tile, 1 px right of the right tile's left
    # edge (80), inside an adult the pass found: only the left tile's edges (0,
    # 100) count for the child, so it is not a cut part and stays.
    child = box((81, 30, 89, 60), 0.8, "person")
    adult = box((60, 10, 99, 90), 0.9, "person")
    assert boxes(merge_tiled([child, adult], ROW, sources=[ROW[0], None])) == boxes(
        [child, adult]
    )
    # Tested against every tile, the right tile's edge cuts it: merged away.
    assert boxes(merge_tiled([child, adult], ROW)) == [("person", adult.coords, 0.9)]


def test_a_whole_image_pass_region_is_never_cut():
    # The pass's child ends at the left tile's edge (100); the right tile's
    # adult starts 1 px off its own left edge (80), so only the adult is cut.
    child = box((85, 40, 100, 60), 0.8, "person")
    adult = box((81, 20, 140, 80), 0.9, "person")
    assert boxes(merge_tiled([child, adult], ROW, sources=[None, ROW[1]])) == boxes(
        [child, adult]
    )
    assert boxes(merge_tiled([child, adult], ROW)) == [("person", adult.coords, 0.9)]


def test_one_sources_overlapping_regions_stay_apart():
    # Two people at IoU 0.54 in the left tile's answer stay two, as untiled;
    # the right tile's view of the first (IoU 0.56 with the second too) joins
    # the first only: once a source is in a group, its other regions are not.
    # (The right tile's view starts 1.5 px off its edge at 80: cut, so the
    # left tile's whole view is kept, with the better score.)
    a = box((81, 10, 91, 50), 0.9, "person")
    b = box((84, 10, 94, 50), 0.8, "person")
    a_again = box((81.5, 10, 91, 50.5), 0.95, "person")
    assert boxes(merge_tiled([a, b], ROW, sources=[ROW[0], ROW[0]])) == boxes([a, b])
    merged = merge_tiled([a, b, a_again], ROW, sources=[ROW[0], ROW[0], ROW[1]])
    assert boxes(merged) == [("person", a.coords, 0.95), boxes([b])[0]]
    # Two regions of the pass stay apart too; sources unknown, all merge.
    assert len(merge_tiled([a, b], ROW, sources=[None, None])) == 2
    assert len(merge_tiled([a, b, a_again], ROW)) == 1


def test_a_tile_view_wins_over_a_higher_scoring_whole_image_pass():
    # The pass sees the object shrunk and draws it a few pixels off: the tile's
    # geometry is kept, with the better score.
    tile_view = box((20, 20, 40, 40), 0.8)
    pass_view = box((17, 18, 42, 41), 0.85)
    merged = merge_tiled([tile_view, pass_view], ROW, sources=[ROW[0], None])
    assert boxes(merged) == [("car", (20.0, 20.0, 40.0, 40.0), 0.85)]
    # A view cut by its tile's edge still gives way to the pass's whole one.
    part, whole = box((90, 40, 100, 60), 0.9), box((88, 39, 111, 61), 0.6)
    merged = merge_tiled([part, whole], ROW, sources=[ROW[0], None])
    assert boxes(merged) == [("car", (88.0, 39.0, 111.0, 61.0), 0.9)]


def test_ocr_keeps_the_tiles_reading_over_the_whole_image_pass():
    line = box((10, 20, 70, 30), 0.8, "line", text="Invoice number 12345")
    for reading in ("lnvoice nurnber 1Z345", "Invoice no 12345"):
        coarse = box((8, 19, 72, 31), 0.9, "line", text=reading)
        (merged,) = merge_tiled([line, coarse], ROW, sources=[ROW[0], None])
        assert (merged.text, merged.coords, merged.score) == (
            "Invoice number 12345",
            (10.0, 20.0, 70.0, 30.0),
            0.9,
        )


def test_sources_must_be_tiles_one_per_prediction():
    with pytest.raises(ValueError, match=r"one tile .* per prediction: 1 for 2"):
        merge_tiled([box((0, 0, 1, 1)), box((2, 2, 3, 3))], ROW, sources=[ROW[0]])
    with pytest.raises(ValueError, match=r"sources\[0\]"):
        merge_tiled([box((0, 0, 1, 1))], ROW, sources=[(0, 0, 100, 100)])


def test_merging_again_changes_nothing():
    scene = [
        box((50, 40, 100, 60), 0.6),
        box((80, 40, 130, 60), 0.9),
        box((85, 70, 95, 90), 0.6),
        box((85.5, 70, 95, 90.5), 0.7),
        box((10, 10, 30, 30), 0.8, "truck"),
    ]
    once = merge_tiled(scene, ROW)
    assert len(once) == 3
    assert merge_tiled(once, ROW) == once


# Polygons and masks --------------------------------------------------------------
def square(x0, y0, x1, y1, score, label="leaf"):
    return Prediction(
        "polygon", label, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], score=score
    )


def test_duplicate_polygons_keep_the_best_view():
    merged = merge_tiled(
        [square(84, 10, 96, 30, 0.6), square(85, 10, 96, 30, 0.9)], ROW
    )
    assert merged == [square(85, 10, 96, 30, 0.9)]


def test_polygon_parts_across_the_seam_become_their_union_outline():
    parts = [square(50, 40, 100, 60, 0.6), square(80, 40, 130, 60, 0.9)]
    (merged,) = merge_tiled(parts, ROW)
    assert merged.score == 0.9
    # The outline runs through the centres of the border pixels: half a pixel in.
    assert merged.bbox == pytest.approx((50.5, 40.5, 129.5, 59.5))
    area = masks.rle_area(masks.polygon_to_rle(merged.coords, 180, 100))
    assert area == pytest.approx(80 * 20, rel=0.1)


def test_masks_of_seam_parts_are_united():
    left, right = np.zeros((100, 180), np.uint8), np.zeros((100, 180), np.uint8)
    left[40:60, 50:100] = 1
    right[40:60, 80:130] = 1
    parts = [
        box((50, 40, 100, 60), 0.6, mask=masks.mask_to_rle(left)),
        box((80, 40, 130, 60), 0.9, mask=masks.mask_to_rle(right)),
    ]
    (merged,) = merge_tiled(parts, ROW)
    np.testing.assert_array_equal(masks.rle_to_mask(merged.mask), left | right)
    assert masks.rle_area(merged.mask) == 80 * 20


# Points -------------------------------------------------------------------------
def point(x, y, score, label="cell"):
    return Prediction("point", label, (x, y), score=score)


def test_points_merge_by_distance_keeping_the_best_one():
    merged = merge_tiled([point(90, 50, 0.8), point(93, 54, 0.9)], ROW)  # 5 px apart
    assert merged == [point(93, 54, 0.9)]


def test_points_further_apart_or_of_other_labels_stay():
    far = [point(90, 50, 0.8), point(120, 50, 0.9)]
    assert merge_tiled(far, ROW) == far
    labels = [point(90, 50, 0.8, "cell"), point(90, 50, 0.9, "nucleus")]
    assert merge_tiled(labels, ROW) == labels


def test_point_distance_is_inclusive_and_settable():
    pair = [point(90, 50, 0.8), point(96, 58, 0.9)]  # exactly 10 px apart
    assert merge_tiled(pair, ROW) == [point(96, 58, 0.9)]
    assert merge_tiled(pair, ROW, point_distance=9.9) == pair


# OCR --------------------------------------------------------------------------
def line(coords, text, score=0.5, label="line"):
    return box(coords, score, label, text=text)


def test_ocr_line_cut_at_the_seam_joins_box_and_text():
    parts = [
        line((40, 40, 100, 60), "Hello wo", 0.6),
        line((80, 40, 150, 60), "lo world", 0.9),
    ]
    (merged,) = merge_tiled(parts, ROW)
    assert (merged.coords, merged.text, merged.score) == (
        (40.0, 40.0, 150.0, 60.0),
        "Hello world",
        0.9,
    )


def test_ocr_line_cut_with_a_misread_sliced_character_still_joins():
    parts = [
        line((40, 40, 100, 60), "Hello wc", 0.6),
        line((80, 40, 150, 60), "lo world", 0.9),
    ]
    assert [p.text for p in merge_tiled(parts, ROW)] == ["Hello world"]


def test_ocr_parts_sharing_no_text_at_the_seam_stay_parts():
    parts = [
        line((40, 40, 100, 60), "Hello wo", 0.6),
        line((80, 40, 150, 60), "orld", 0.9),
    ]
    assert merge_tiled(parts, ROW) == parts


def test_ocr_duplicate_and_cut_word_merge_into_the_whole_reading():
    duplicate = [
        line((85, 10, 99, 30), "STOP", 0.7),
        line((85, 10, 99, 30), "stop", 0.6),
    ]
    assert [p.text for p in merge_tiled(duplicate, ROW)] == ["STOP"]
    # Word x 85..110: the left tile reads its cut part "wor", the right tile all.
    cut = [line((85, 40, 100, 60), "wor", 0.9), line((85, 40, 110, 60), "world", 0.6)]
    (merged,) = merge_tiled(cut, ROW)
    assert (merged.coords, merged.text, merged.score) == (
        (85.0, 40.0, 110.0, 60.0),
        "world",
        0.9,
    )


def test_ocr_different_words_side_by_side_or_overlapping_stay_apart():
    side_by_side = [
        line((40, 40, 70, 60), "cat", 0.9),
        line((72, 40, 99, 60), "dog", 0.8),
    ]
    assert merge_tiled(side_by_side, ROW) == side_by_side
    overlapping = [
        line((85, 40, 99, 60), "cat", 0.9),
        line((86, 40, 99, 60), "dog", 0.8),
    ]
    assert merge_tiled(overlapping, ROW) == overlapping


def test_ocr_regions_never_merge_with_plain_regions_of_the_same_label():
    both = [
        line((85, 10, 95, 30), "A1", 0.9, label="plate"),
        box((85, 10, 95, 30), 0.8, "plate"),
    ]
    assert merge_tiled(both, ROW) == both


# Keypoints and arguments ---------------------------------------------------------
def test_keypoint_instances_pass_through_unchanged():
    person = Prediction(
        "keypoint",
        "person",
        (85, 10, 99, 60),
        score=0.9,
        keypoints={"nose": (90, 15), "left_eye": None},
        instance_id="person1",
    )
    twin = person.with_(score=0.8, instance_id="person2")
    assert merge_tiled([person, twin], ROW) == [person, twin]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"iou": 0.0}, "iou"),
        ({"iou": 1.5}, "iou"),
        ({"ios": -0.1}, "ios"),
        ({"point_distance": -1}, "point_distance"),
        ({"point_distance": "5"}, "point_distance"),
        ({"edge_tolerance": -1}, "edge_tolerance"),
    ],
)
def test_bad_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        merge_tiled([box((0, 0, 1, 1))], ROW, **kwargs)


def test_bad_items_are_named():
    with pytest.raises(ValueError, match=r"predictions\[1\]"):
        merge_tiled([box((0, 0, 1, 1)), {"type": "box"}], ROW)
    with pytest.raises(ValueError, match=r"tiles\[0\]"):
        merge_tiled([box((0, 0, 1, 1))], [(0, 0, 10, 10)])


def test_nothing_in_nothing_out():
    assert merge_tiled([], ROW) == []
    assert merge_tiled([]) == []


def _apart(rng, count, width, height, gap) -> list[tuple]:
    """``count`` boxes of 5 to 150 px, at least ``gap`` apart in x or in y."""
    objects: list[tuple] = []
    while len(objects) < count:
        w, h = rng.uniform(5, 150, 2)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        new = (x, y, x + w, y + h)
        if all(
            new[0] >= o[2] + gap
            or o[0] >= new[2] + gap
            or new[1] >= o[3] + gap
            or o[1] >= new[3] + gap
            for o in objects
        ):
            objects.append(new)
    return objects


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_exact_tile_views_of_separate_objects_merge_back_to_the_objects(seed):
    # Each tile reports exactly the part of each object it shows (parts under
    # 2 px are missed, as a model would). Objects further apart than the 20 px
    # overlap can be told apart, so every object must come back exactly once, at
    # its full extent: seen whole by some tile, or joined from its parts.
    rng = np.random.default_rng(seed)
    grid = tile_grid(500, 400, 100, 0.2)
    objects = _apart(rng, 25, 500, 400, gap=25)
    views = []
    for tile in grid:
        for x0, y0, x1, y1 in objects:
            part = (
                max(x0, tile.x0),
                max(y0, tile.y0),
                min(x1, tile.x1),
                min(y1, tile.y1),
            )
            if part[2] - part[0] >= 2 and part[3] - part[1] >= 2:
                views.append(box(part, float(rng.uniform(0.3, 1.0))))
    merged = merge_tiled(views, grid)
    got = np.array(sorted(p.coords for p in merged))
    np.testing.assert_allclose(got, np.array(sorted(objects)), atol=1e-9)
