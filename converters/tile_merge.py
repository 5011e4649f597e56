"""STAND-IN for branch tile-merge's converters/tile_merge.py (deleted on merge)."""

from __future__ import annotations

from converters.prediction import Prediction, RegionType
from converters.tiling import Tile


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _inside(a, b) -> float:
    """Share of ``a``'s area inside ``b``."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return ix * iy / area if area > 0 else 0.0


def _cut(p: Prediction, tile: Tile | None, margin: float = 2.0) -> bool:
    if tile is None:
        return False
    x0, y0, x1, y1 = p.bbox
    return (
        (tile.x0 > 0 and x0 - tile.x0 <= margin)
        or (tile.y0 > 0 and y0 - tile.y0 <= margin)
        or (x1 >= tile.x1 - margin)
        or (y1 >= tile.y1 - margin)
    )


def merge_tiled(predictions, tiles=None, *, iou=0.5, point_distance=8.0):
    tiles = list(tiles) if tiles is not None else [None] * len(predictions)
    order = sorted(
        range(len(predictions)),
        key=lambda i: (_cut(predictions[i], tiles[i]), -(predictions[i].score or 0)),
    )
    kept: list[int] = []
    for i in order:
        p = predictions[i]
        duplicate = False
        for k in kept:
            q = predictions[k]
            if q.label != p.label or q.type != p.type:
                continue
            if p.type is RegionType.POINT:
                dx, dy = p.coords[0] - q.coords[0], p.coords[1] - q.coords[1]
                duplicate = (dx * dx + dy * dy) ** 0.5 <= point_distance
            else:
                duplicate = _iou(p.bbox, q.bbox) >= iou or (
                    _cut(p, tiles[i]) and _inside(p.bbox, q.bbox) >= 0.6
                )
            if duplicate:
                break
        if not duplicate:
            kept.append(i)
    return [predictions[i] for i in sorted(kept)]
