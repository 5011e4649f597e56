"""Which tile answers for a region: each tile of a grid owns its *core*.

Neighbouring tiles overlap; the middle of each overlap splits the image, so
every point lies in exactly one tile's core. A region found by a tile is
kept when its centre lies in that tile's core. An object no larger than the
overlap lies whole in the tile owning its centre, so it comes back once, with
its full extent; what a tile saw of an object cut by its edge (a partial box,
or a guess next to the part it saw) has its centre in a neighbour's core and
is dropped. An object larger than the overlap may be cut in every tile: the
tile owning its centre answers with the part it saw, and the whole-image pass
(when on) with all of it; ``converters.tile_merge`` joins those.

The whole-image pass owns only regions **larger than the overlap** (wider or
taller than the grid's smallest overlap along that axis): a smaller region
lies whole in the tile owning its centre, which sees it at full detail, while
the pass sees it shrunk and draws it a few pixels off, too far for the merge
to take the two for one object (IoU under 0.5 on a 12 px object). Its points
are always dropped. The cost: a small object that every tile misses and only
the pass finds is lost.

Pure functions on ``converters.tiling.Tile`` (pixels of the original image,
x1/y1 exclusive) and predictions; no image is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from converters.prediction import Prediction
from converters.tiling import Tile

Core = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` of a tile's core, pixels of the original image."""


def _splits(spans: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[float, float]]:
    """Along one axis: each tile span ``(start, end)`` -> its core ``(low, high)``,
    cut at the middle of the overlap with the spans before and after it."""
    spans = sorted(set(spans))
    cores = {}
    for index, (start, end) in enumerate(spans):
        low = start if index == 0 else (start + spans[index - 1][1]) / 2
        high = end if index == len(spans) - 1 else (spans[index + 1][0] + end) / 2
        cores[(start, end)] = (low, high)
    return cores


def tile_cores(tiles: Sequence[Tile]) -> dict[Tile, Core]:
    """The core of each tile of a grid (rows and columns of equal spans, as
    ``tile_grid`` cuts them); the grid's outer tiles keep the image's edges."""
    columns = _splits([(t.x0, t.x1) for t in tiles])
    rows = _splits([(t.y0, t.y1) for t in tiles])
    cores = {}
    for tile in tiles:
        (x0, x1), (y0, y1) = columns[(tile.x0, tile.x1)], rows[(tile.y0, tile.y1)]
        cores[tile] = (x0, y0, x1, y1)
    return cores


def centre(prediction: Prediction) -> tuple[float, float]:
    """The middle of a region's bounding box (a point's own position)."""
    x0, y0, x1, y1 = prediction.bbox
    return (x0 + x1) / 2, (y0 + y1) / 2


def in_core(prediction: Prediction, core: Core, image_size: tuple[int, int]) -> bool:
    """True when the region's centre lies in ``core``: the low edges included,
    the high edges excluded except at the image's far edges, so a centre on a
    split belongs to one tile only."""
    x, y = centre(prediction)
    x0, y0, x1, y1 = core
    width, height = image_size
    inside_x = x0 <= x < x1 or (x1 >= width and x0 <= x <= x1)
    inside_y = y0 <= y < y1 or (y1 >= height and y0 <= y <= y1)
    return inside_x and inside_y


def _smallest_overlap(spans: list[tuple[int, int]]) -> float:
    """Along one axis: the fewest pixels two neighbouring spans share
    (infinite with one span: a tile then spans the whole image that way)."""
    spans = sorted(set(spans))
    shared = [before[1] - after[0] for before, after in pairwise(spans)]
    return float(min(shared)) if shared else math.inf


def grid_overlap(tiles: Sequence[Tile]) -> tuple[float, float]:
    """``(x, y)``: the smallest overlap of neighbouring tiles along each axis,
    pixels; a region no larger than it lies whole in the tile owning its centre."""
    return (
        _smallest_overlap([(t.x0, t.x1) for t in tiles]),
        _smallest_overlap([(t.y0, t.y1) for t in tiles]),
    )


def owned_positions(
    predictions: Sequence[Prediction],
    sources: Sequence[Tile | None],
    tiles: Sequence[Tile],
    image_size: tuple[int, int],
) -> list[int]:
    """Positions of the predictions their source answers for (``sources``: one
    per prediction): a tile's whose centre lies in its core; the whole-image
    pass's (None, or a source that is not one of ``tiles``) that are larger
    than the overlap along some axis (see the module)."""
    cores = tile_cores(tiles)
    overlap_x, overlap_y = grid_overlap(tiles)
    kept = []
    for position, (prediction, source) in enumerate(
        zip(predictions, sources, strict=True)
    ):
        if source in cores:
            owned = in_core(prediction, cores[source], image_size)
        else:
            x0, y0, x1, y1 = prediction.bbox
            owned = x1 - x0 > overlap_x or y1 - y0 > overlap_y
        if owned:
            kept.append(position)
    return kept


def keep_owned(
    predictions: Sequence[Prediction],
    sources: Sequence[Tile | None],
    tiles: Sequence[Tile],
    image_size: tuple[int, int],
) -> list[Prediction]:
    """The predictions of :func:`owned_positions`, in their order."""
    positions = owned_positions(predictions, sources, tiles, image_size)
    return [predictions[i] for i in positions]
