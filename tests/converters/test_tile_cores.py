"""converters.tile_cores: which tile answers for a region, by hand-made tiles
and predictions."""

from __future__ import annotations

from converters.prediction import Prediction, RegionType
from converters.tile_cores import (
    grid_overlap,
    in_core,
    keep_owned,
    owned_positions,
    tile_cores,
)
from converters.tiling import Tile, tile_grid


def _box(x0, y0, x1, y1, label="cell"):
    return Prediction(RegionType.BOX, label, (x0, y0, x1, y1), score=0.9)


def test_cores_split_each_overlap_in_its_middle():
    # 300 x 100 in 100 px tiles sharing 50 px: starts 0, 50, 100, 150, 200.
    tiles = tile_grid(300, 100, 100, 0.5)
    assert [t.x0 for t in tiles] == [0, 50, 100, 150, 200]
    cores = tile_cores(tiles)
    assert [cores[t] for t in tiles] == [
        (0, 0, 75.0, 100),
        (75.0, 0, 125.0, 100),
        (125.0, 0, 175.0, 100),
        (175.0, 0, 225.0, 100),
        (225.0, 0, 300, 100),
    ]


def test_cores_of_a_grid_whose_last_tile_is_moved_back_to_the_edge():
    # 250 px in 100 px tiles sharing 20: starts 0, 80, 150 (the last flush).
    tiles = tile_grid(250, 250, 100, 0.2)
    cores = tile_cores(tiles)
    assert sorted({(c[0], c[2]) for c in cores.values()}) == [
        (0, 90.0),
        (90.0, 165.0),
        (165.0, 250),
    ]
    assert cores[tiles[4]] == (90.0, 90.0, 165.0, 165.0)  # the middle tile


def test_every_point_is_in_exactly_one_core():
    tiles = tile_grid(250, 250, 100, 0.2)
    cores = tile_cores(tiles)
    for x in (0, 89.9, 90, 164.9, 165, 250):
        for y in (0, 90, 250):
            point = Prediction(RegionType.POINT, "p", (x, y))
            owners = [t for t in tiles if in_core(point, cores[t], (250, 250))]
            assert len(owners) == 1, (x, y, owners)


def test_an_object_cut_by_a_tile_edge_is_answered_by_the_tile_holding_it_whole():
    # Tiles 0..100 and 50..150 (cores split at 75); a 30 px square at 60..90.
    tiles = tile_grid(150, 100, 100, 0.5)
    left, right = tiles
    whole = _box(60, 20, 90, 50)  # the right tile sees it whole: centre 75
    part = _box(60, 20, 100, 50)  # the left tile sees it cut at x=100
    guess = _box(70, 60, 95, 90)  # or guesses beside it (centre 82.5)
    kept = keep_owned([part, guess, whole], [left, left, right], tiles, (150, 100))
    assert kept == [whole]


def test_a_whole_image_pass_owns_only_regions_larger_than_the_overlap():
    # 250 x 250 in 100 px tiles sharing 20 (the last pair 30): overlap 20 a side.
    tiles = tile_grid(250, 250, 100, 0.2)
    assert grid_overlap(tiles) == (20.0, 20.0)
    big = _box(10, 10, 140, 90)
    wide = _box(10, 10, 31, 20)  # 21 px wide: no tile need hold it whole
    small = _box(100, 100, 120, 120)  # 20 x 20: the owning tile holds it whole
    dot = Prediction(RegionType.POINT, "cell", (50, 50))
    found = [big, wide, small, dot]
    for whole_image in (None, Tile(0, 0, 250, 250)):  # None, or not a grid tile
        sources = [whole_image] * len(found)
        assert keep_owned(found, sources, tiles, (250, 250)) == [big, wide]
        assert owned_positions(found, sources, tiles, (250, 250)) == [0, 1]


def test_with_one_row_of_tiles_any_height_lies_whole_in_a_tile():
    tiles = tile_grid(300, 100, 100, 0.5)
    assert grid_overlap(tiles) == (50.0, float("inf"))
    tall, wide = _box(10, 0, 60, 100), _box(10, 0, 61, 10)
    assert keep_owned([tall, wide], [None, None], tiles, (300, 100)) == [wide]


def test_a_region_on_the_far_edge_belongs_to_the_last_tile():
    tiles = tile_grid(150, 100, 100, 0.5)
    cores = tile_cores(tiles)
    edge = Prediction(RegionType.POINT, "p", (150, 100))
    assert [in_core(edge, cores[t], (150, 100)) for t in tiles] == [False, True]
