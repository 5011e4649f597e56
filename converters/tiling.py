"""Tiled inference, the pure part: where the tiles of an image lie, when to tile,
and how a prediction made on a tile maps back to the original image.

Rex-Omni sees at most ``max_pixels`` (about 2 megapixels): a larger image is
shrunk until its small objects vanish. Tiling cuts the image into overlapping
crops of ``tile_size`` pixels, runs the model on each crop, maps every answer
back with :func:`to_original` and merges the duplicates in the overlaps with
:func:`converters.tile_merge.merge_tiled`.

All sizes and coordinates here are pixels of the original image (after EXIF
orientation), x to the right, y down; a tile's ``x1``/``y1`` are exclusive, as
in ``PIL.Image.crop``.

Why not SAHI's ``sahi.slicing.get_slice_bboxes``: the grid is twenty lines,
while importing ``sahi.slicing`` loads OpenCV's GUI build, shapely, PIL and tqdm;
:mod:`converters.tile_merge` gives the full measured reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from converters.masks import rle_paste
from converters.prediction import Prediction, RegionType

TILE_MODES = ("auto", "on", "off")
"""``on`` always tiles, ``off`` never, ``auto`` tiles an image when the model's
resize to ``max_pixels`` would shrink it by more than ``min_shrink``."""

MAX_TILE_OVERLAP = 0.9
"""Largest overlap share: at 0.9 the stride is a tenth of the tile, a hundred
model calls per tile-sized area of the image; more is a typo, not a setting."""

OVERLAP_ROUNDING = 1e-9
"""Added before flooring ``overlap * tile_size`` so that 0.29 * 100 (which is
28.999999999999996 in floats) counts as the 29 pixels the user meant."""


def _whole(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``, else ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class Tile:
    """A crop of the original image: ``x0, y0, x1, y1`` in pixels of the original
    image (``x1``, ``y1`` exclusive), ints.

    ``image_width``/``image_height`` are the size of the image the tile was cut
    from, when known (:func:`tile_grid` sets them); :func:`to_original` needs them
    to place a tile's mask in the original image. They take no part in equality,
    so ``Tile(0, 0, 10, 10)`` equals the same crop from :func:`tile_grid`.
    """

    x0: int
    y0: int
    x1: int
    y1: int
    image_width: int | None = field(default=None, compare=False)
    image_height: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("x0", "y0", "x1", "y1"):
            _whole(getattr(self, name), f"tile {name}", 0)
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(
                f"tile must have x1 > x0 and y1 > y0, got "
                f"({self.x0}, {self.y0}, {self.x1}, {self.y1})"
            )
        if self.image_width is not None:
            _whole(self.image_width, "tile image_width", self.x1)
        if self.image_height is not None:
            _whole(self.image_height, "tile image_height", self.y1)

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)``: what ``PIL.Image.crop`` takes."""
        return (self.x0, self.y0, self.x1, self.y1)


def _spans(length: int, tile_size: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the tiles along one axis: every ``stride`` pixels, the
    last one moved back to end at ``length``; one span when the axis fits a tile."""
    if length <= tile_size:
        return [(0, length)]
    starts = [*range(0, length - tile_size, stride), length - tile_size]
    return [(start, start + tile_size) for start in starts]


def _checked(
    width: int, height: int, tile_size: int, overlap: float
) -> tuple[int, int, int, int]:
    """``width, height, tile_size, stride`` checked; ValueError names a bad one."""
    width = _whole(width, "width", 1)
    height = _whole(height, "height", 1)
    tile_size = _whole(tile_size, "tile_size", 1)
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)):
        raise ValueError(f"overlap must be a number, got {overlap!r}")
    if not 0.0 <= overlap <= MAX_TILE_OVERLAP:
        raise ValueError(
            f"overlap must be a share of the tile in 0..{MAX_TILE_OVERLAP}, "
            f"got {overlap!r}"
        )
    shared = math.floor(overlap * tile_size + OVERLAP_ROUNDING)
    return width, height, tile_size, tile_size - shared  # >= 1: shared <= 0.9 side


def _span_count(length: int, tile_size: int, stride: int) -> int:
    """``len(_spans(length, tile_size, stride))`` without building them."""
    if length <= tile_size:
        return 1
    return -(-(length - tile_size) // stride) + 1


def tile_count(width: int, height: int, tile_size: int, overlap: float) -> int:
    """``len(tile_grid(width, height, tile_size, overlap))``, counted without
    building a tile: the cap is checked before a grid of millions is made.
    Raises ValueError as :func:`tile_grid` does."""
    width, height, tile_size, stride = _checked(width, height, tile_size, overlap)
    return _span_count(width, tile_size, stride) * _span_count(
        height, tile_size, stride
    )


def tile_grid(width: int, height: int, tile_size: int, overlap: float) -> list[Tile]:
    """The tiles covering a ``width`` x ``height`` image, row-major.

    Tiles are ``tile_size`` x ``tile_size`` pixels (a side is shorter only where
    the image itself is shorter). Neighbours share ``floor(overlap * tile_size)``
    pixels; the last row and column are moved back to end at the image edge, so
    they share more with their neighbour instead of leaving a thin sliver. An
    image no larger than a tile is one tile, the whole image.

    Raises ValueError naming the bad argument: sizes below 1 or not integers,
    ``overlap`` outside ``0 .. MAX_TILE_OVERLAP``.
    """
    width, height, tile_size, stride = _checked(width, height, tile_size, overlap)
    return [
        Tile(x0, y0, x1, y1, image_width=width, image_height=height)
        for y0, y1 in _spans(height, tile_size, stride)
        for x0, x1 in _spans(width, tile_size, stride)
    ]


def shrink_factor(width: int, height: int, max_pixels: int) -> float:
    """How much the model's resize to ``max_pixels`` shrinks this image, per side.

    ``sqrt(width * height / max_pixels)`` when the image has more pixels than
    that, else 1.0: the ``beta`` of :func:`converters.geometry.smart_resize`,
    before its rounding to multiples of 28. Always >= 1.0.
    """
    width = _whole(width, "width", 1)
    height = _whole(height, "height", 1)
    max_pixels = _whole(max_pixels, "max_pixels", 1)
    if width * height <= max_pixels:
        return 1.0
    return math.sqrt(width * height / max_pixels)


def should_tile(
    mode: str, width: int, height: int, max_pixels: int, min_shrink: float
) -> bool:
    """Whether to tile this image: ``mode`` is ``on``, ``off`` or ``auto`` (any case).

    ``auto`` tiles when :func:`shrink_factor` is above ``min_shrink``. Raises
    ValueError naming a bad mode or a ``min_shrink`` below 1.
    """
    choice = mode.strip().lower() if isinstance(mode, str) else mode
    if choice not in TILE_MODES:
        raise ValueError(f"tile mode {mode!r} is not one of: {', '.join(TILE_MODES)}")
    if choice != "auto":
        return choice == "on"
    if isinstance(min_shrink, bool) or not isinstance(min_shrink, (int, float)):
        raise ValueError(f"min_shrink must be a number, got {min_shrink!r}")
    if not min_shrink >= 1.0:
        raise ValueError(f"min_shrink must be at least 1.0, got {min_shrink!r}")
    return shrink_factor(width, height, max_pixels) > min_shrink


def _shift(point: tuple[float, float], tile: Tile) -> tuple[float, float]:
    return (point[0] + tile.x0, point[1] + tile.y0)


def _image_size(tile: Tile, image_size: tuple[int, int] | None) -> tuple[int, int]:
    if image_size is not None:
        width, height = image_size
    elif tile.image_width is not None and tile.image_height is not None:
        width, height = tile.image_width, tile.image_height
    else:
        raise ValueError(
            "a mask needs the original image size: build the tile with "
            "tile_grid() or pass image_size=(width, height)"
        )
    return width, height


def to_original(
    p: Prediction, tile: Tile, *, image_size: tuple[int, int] | None = None
) -> Prediction:
    """A prediction in pixels of the tile crop, moved to pixels of the original image.

    Boxes, points, polygon vertices, keypoint instances (box and every joint) are
    shifted by the tile's corner; nothing is clipped. A mask (COCO RLE at the
    tile's size) becomes an RLE at the original size, placed at the tile's
    corner; the original size is ``image_size`` ``(width, height)`` or else the
    tile's ``image_width``/``image_height``. Raises ValueError for a mask whose
    size is not the tile's.
    """
    changes: dict[str, Any] = {}
    if p.type in (RegionType.BOX, RegionType.KEYPOINT):
        x0, y0, x1, y1 = p.coords
        changes["coords"] = (x0 + tile.x0, y0 + tile.y0, x1 + tile.x0, y1 + tile.y0)
    elif p.type is RegionType.POINT:
        changes["coords"] = _shift(p.coords, tile)
    else:
        changes["coords"] = tuple(_shift(vertex, tile) for vertex in p.coords)
    if p.keypoints is not None:
        changes["keypoints"] = {
            name: None if xy is None else _shift(xy, tile)
            for name, xy in p.keypoints.items()
        }
    if p.mask is not None:
        if list(p.mask["size"]) != [tile.height, tile.width]:
            raise ValueError(
                f"mask size {p.mask['size']} (h, w) is not the tile's "
                f"[{tile.height}, {tile.width}]"
            )
        width, height = _image_size(tile, image_size)
        changes["mask"] = rle_paste(p.mask, tile.x0, tile.y0, width, height)
    return p.with_(**changes)
