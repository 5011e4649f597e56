"""STAND-IN for branch tile-merge's converters/tiling.py (deleted on merge)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from converters.prediction import Prediction, RegionType


@dataclass(frozen=True)
class Tile:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    if length <= tile:
        return [0]
    stride = max(1, tile - round(tile * overlap))
    count = math.ceil((length - tile) / stride) + 1
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_grid(width: int, height: int, tile_size: int, overlap: float) -> list[Tile]:
    return [
        Tile(x, y, min(width, x + tile_size), min(height, y + tile_size))
        for y in _starts(height, tile_size, overlap)
        for x in _starts(width, tile_size, overlap)
    ]


def shrink_factor(width: int, height: int, max_pixels: int) -> float:
    return max(1.0, math.sqrt(width * height / max_pixels))


def should_tile(mode, width, height, max_pixels, min_shrink) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    return shrink_factor(width, height, max_pixels) > min_shrink


def to_original(p: Prediction, tile: Tile) -> Prediction:
    dx, dy = tile.x0, tile.y0
    if p.type in (RegionType.BOX, RegionType.KEYPOINT):
        x0, y0, x1, y1 = p.coords
        coords = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
    elif p.type is RegionType.POINT:
        coords = (p.coords[0] + dx, p.coords[1] + dy)
    else:
        coords = tuple((x + dx, y + dy) for x, y in p.coords)
    return p.with_(coords=coords)
