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

Pure functions on ``converters.tiling.Tile`` (pixels of the original image,
x1/y1 exclusive) and predictions; no image is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

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


def keep_owned(
    predictions: Sequence[Prediction],
    sources: Sequence[Tile],
    tiles: Sequence[Tile],
    image_size: tuple[int, int],
) -> list[Prediction]:
    """The predictions whose centre lies in the core of the tile that found
    them (``sources``: one per prediction). A source that is not one of
    ``tiles`` (the whole-image pass) owns the whole image."""
    cores = tile_cores(tiles)
    return [
        prediction
        for prediction, source in zip(predictions, sources, strict=True)
        if source not in cores or in_core(prediction, cores[source], image_size)
    ]
