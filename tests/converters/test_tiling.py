import itertools

import numpy as np
import pytest

from converters import masks
from converters.prediction import Prediction
from converters.tiling import (
    Tile,
    should_tile,
    shrink_factor,
    tile_count,
    tile_grid,
    to_original,
)


def _coverage(tiles: list[Tile], width: int, height: int) -> np.ndarray:
    """How many tiles cover each pixel of the image."""
    count = np.zeros((height, width), np.int32)
    for t in tiles:
        count[t.y0 : t.y1, t.x0 : t.x1] += 1
    return count


# tile_grid --------------------------------------------------------------------
def test_grid_columns_by_hand_last_one_flush_with_the_edge():
    # 1000 px, tiles of 512, overlap 0.2 -> 102 px shared, stride 410:
    # starts 0 and 410; the next (820) would pass the edge, so the last tile
    # moves back to end at 1000 and starts at 488.
    tiles = tile_grid(1000, 300, 512, 0.2)
    assert [t.box for t in tiles] == [
        (0, 0, 512, 300),
        (410, 0, 922, 300),
        (488, 0, 1000, 300),
    ]


def test_grid_is_row_major_and_covers_the_image_exactly():
    tiles = tile_grid(700, 500, 256, 0.25)
    # 64 px shared, stride 192: x starts 0, 192, 384, 444; y starts 0, 192, 244.
    xs = [0, 192, 384, 444]
    ys = [0, 192, 244]
    assert [(t.x0, t.y0) for t in tiles] == [(x, y) for y in ys for x in xs]
    assert all(t.width == t.height == 256 for t in tiles)
    count = _coverage(tiles, 700, 500)
    assert count.min() >= 1  # every pixel covered
    assert max(t.x1 for t in tiles) == 700 and max(t.y1 for t in tiles) == 500
    assert all(t.image_width == 700 and t.image_height == 500 for t in tiles)


def test_neighbours_share_the_asked_overlap_the_last_at_least_that():
    tiles = tile_grid(1000, 100, 200, 0.3)  # 60 px shared, stride 140
    shared = [a.x1 - b.x0 for a, b in itertools.pairwise(tiles)]
    assert shared[:-1] == [60] * (len(shared) - 1)
    assert shared[-1] >= 60
    assert tiles[-1].x1 == 1000


def test_overlap_share_is_floored_as_the_user_wrote_it():
    # 0.29 * 100 is 28.999999999999996 in floats: still 29 pixels shared.
    tiles = tile_grid(300, 50, 100, 0.29)
    assert tiles[1].x0 == 71


def test_exact_fit_without_overlap_gives_touching_tiles():
    tiles = tile_grid(1024, 512, 512, 0.0)
    assert [t.box for t in tiles] == [(0, 0, 512, 512), (512, 0, 1024, 512)]


def test_tiny_image_is_one_tile_the_whole_image():
    assert [t.box for t in tile_grid(300, 200, 512, 0.2)] == [(0, 0, 300, 200)]
    assert [t.box for t in tile_grid(1, 1, 1, 0.9)] == [(0, 0, 1, 1)]


def test_image_smaller_than_a_tile_on_one_side_only():
    tiles = tile_grid(1000, 300, 512, 0.0)
    assert {(t.height, t.y0) for t in tiles} == {(300, 0)}
    assert [t.x0 for t in tiles] == [0, 488]


@pytest.mark.parametrize(
    ("args", "name"),
    [
        ((0, 10, 5, 0.1), "width"),
        ((10, -1, 5, 0.1), "height"),
        ((10, 10, 0, 0.1), "tile_size"),
        ((10.0, 10, 5, 0.1), "width"),
        ((10, 10, True, 0.1), "tile_size"),
        ((10, 10, 5, -0.1), "overlap"),
        ((10, 10, 5, 0.95), "overlap"),
        ((10, 10, 5, 1.0), "overlap"),
        ((10, 10, 5, "0.2"), "overlap"),
    ],
)
def test_grid_rejects_bad_arguments_by_name(args, name):
    with pytest.raises(ValueError, match=name):
        tile_grid(*args)


def test_tile_checks_itself_and_compares_by_crop_only():
    assert Tile(0, 0, 10, 10) == tile_grid(10, 10, 10, 0.0)[0]
    assert (Tile(5, 6, 15, 26).width, Tile(5, 6, 15, 26).height) == (10, 20)
    with pytest.raises(ValueError, match="x1 > x0"):
        Tile(10, 0, 10, 5)
    with pytest.raises(ValueError, match="image_width"):
        Tile(0, 0, 10, 10, image_width=5)


# shrink_factor / should_tile ------------------------------------------------
def test_shrink_factor_by_hand():
    assert shrink_factor(1000, 1000, 1_000_000) == 1.0  # fits exactly
    assert shrink_factor(100, 50, 1_000_000) == 1.0  # smaller: never enlarged
    assert shrink_factor(4000, 3000, 3_000_000) == pytest.approx(2.0)  # 4x area
    assert shrink_factor(8000, 8000, 1_000_000) == pytest.approx(8.0)


def test_shrink_factor_rejects_bad_sizes_by_name():
    with pytest.raises(ValueError, match="max_pixels"):
        shrink_factor(10, 10, 0)
    with pytest.raises(ValueError, match="height"):
        shrink_factor(10, 0, 100)


def test_should_tile_modes():
    # 4000x3000 against 3 MP shrinks by 2.0.
    assert should_tile("on", 10, 10, 3_000_000, 1.5) is True
    assert should_tile("off", 40_000, 30_000, 3_000_000, 1.5) is False
    assert should_tile("auto", 4000, 3000, 3_000_000, 1.5) is True
    assert should_tile("auto", 4000, 3000, 3_000_000, 2.0) is False  # not above
    assert should_tile("auto", 1000, 1000, 3_000_000, 1.0) is False  # fits
    assert should_tile(" Auto ", 4000, 3000, 3_000_000, 1.5) is True


def test_should_tile_names_a_bad_mode():
    with pytest.raises(ValueError, match=r"'sometimes'.*auto, on, off"):
        should_tile("sometimes", 10, 10, 100, 1.5)
    with pytest.raises(ValueError, match="min_shrink"):
        should_tile("auto", 10, 10, 100, 0.5)


# to_original ------------------------------------------------------------------
TILE = Tile(100, 50, 164, 98, image_width=200, image_height=120)
"""A 64x48 crop whose corner is at (100, 50) in a 200x120 image."""


def test_box_moves_by_the_tile_corner_other_fields_kept():
    p = Prediction("box", "car", (1, 2, 11, 22), score=0.7, text="AB12")
    out = to_original(p, TILE)
    assert out.coords == (101.0, 52.0, 111.0, 72.0)
    assert (out.label, out.score, out.text) == ("car", 0.7, "AB12")
    assert p.coords == (1.0, 2.0, 11.0, 22.0)  # the input is left as it was


def test_point_and_polygon_move_by_the_tile_corner():
    point = to_original(Prediction("point", "cell", (3.5, 4)), TILE)
    assert point.coords == (103.5, 54.0)
    polygon = to_original(
        Prediction("polygon", "leaf", [(0, 0), (10, 0), (10, 5.5)]), TILE
    )
    assert polygon.coords == ((100.0, 50.0), (110.0, 50.0), (110.0, 55.5))


def test_keypoint_instance_moves_box_and_every_joint():
    p = Prediction(
        "keypoint",
        "person",
        (0, 0, 20, 40),
        keypoints={"nose": (10, 5), "left_eye": None},
        instance_id="person1",
    )
    out = to_original(p, TILE)
    assert out.coords == (100.0, 50.0, 120.0, 90.0)
    assert out.keypoints == {"nose": (110.0, 55.0), "left_eye": None}
    assert out.instance_id == "person1"


def test_mask_becomes_an_rle_of_the_original_size_at_the_tile():
    crop = np.zeros((48, 64), np.uint8)
    crop[0:3, 0:2] = 1  # the tile's top-left corner
    crop[40:48, 60:64] = 1  # its bottom-right corner
    p = Prediction("box", "car", (0, 0, 64, 48), mask=masks.mask_to_rle(crop))
    out = to_original(p, TILE)
    assert out.mask["size"] == [120, 200]
    expected = np.zeros((120, 200), np.uint8)
    expected[50:53, 100:102] = 1
    expected[90:98, 160:164] = 1
    np.testing.assert_array_equal(masks.rle_to_mask(out.mask), expected)


def test_mask_size_from_the_argument_when_the_tile_has_none():
    crop = np.ones((2, 3), np.uint8)
    p = Prediction("box", "car", (0, 0, 3, 2), mask=masks.mask_to_rle(crop))
    out = to_original(p, Tile(4, 1, 7, 3), image_size=(8, 5))
    assert masks.rle_area(out.mask) == 6
    assert masks.rle_bbox(out.mask) == (4.0, 1.0, 7.0, 3.0)
    with pytest.raises(ValueError, match="image_size"):
        to_original(p, Tile(4, 1, 7, 3))


def test_mask_of_another_size_than_the_tile_is_refused():
    p = Prediction(
        "box", "car", (0, 0, 3, 2), mask=masks.mask_to_rle(np.ones((5, 5), np.uint8))
    )
    with pytest.raises(ValueError, match=r"mask size \[5, 5\].*\[48, 64\]"):
        to_original(p, TILE)


@pytest.mark.parametrize(
    ("width", "height", "side", "overlap"),
    [
        (1, 1, 1400, 0.2),
        (1400, 1400, 1400, 0.2),
        (2801, 1400, 1400, 0.0),
        (1000, 300, 512, 0.2),
        (700, 500, 256, 0.25),
        (300, 50, 100, 0.29),
        (3000, 3000, 1400, 0.9),
    ],
)
def test_tile_count_is_the_grids_length(width, height, side, overlap):
    assert tile_count(width, height, side, overlap) == len(
        tile_grid(width, height, side, overlap)
    )


def test_tile_count_needs_no_grid():
    # 1401 px wide: 2 columns; 45842 high at stride 1120: ceil(44442 / 1120) + 1
    assert tile_count(1401, 45842, 1400, 0.2) == 2 * 41
    # 13379 px at 112 px, stride 12: (ceil(13267 / 12) + 1)² tiles, none built
    assert tile_count(13379, 13379, 112, 0.9) == 1107**2
    with pytest.raises(ValueError, match="overlap must be a share"):
        tile_count(100, 100, 10, 0.95)
