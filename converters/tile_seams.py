"""Where tile edges cut the boxes of a tiled image's predictions.

The geometry behind :mod:`converters.tile_merge` (whose docstring states the
rules): which sides of a box are cut by which interior tile edges
(:class:`Borders`, :class:`Views`), and whether two parts cut on either side of
a seam line up (rule 3, :func:`across_seam`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from converters.prediction import Prediction
from converters.tiling import Tile

SEAM_ALIGN = 0.5
"""Parts across a seam must share half of the shorter of their extents along the
seam: both tiles see the same slice of the object in their overlap, so the
parts of one compact object line up; side-by-side objects of one row usually
do not meet both tile edges at once."""

EDGE_TOLERANCE_SHARE = 0.02
"""A box side within 2% of the tile size of a tile edge counts as cut there
(20 px on 1024 px tiles, 2 px on 112 px ones): Rex-Omni draws coordinates in
thousandths of the tile, and a model may stop a few pixels short of the edge
where it sees an object sliced off."""

EDGE_TOLERANCE_MIN_PX = 1.0
"""The tolerance is never under a pixel, the rounding of pixel coordinates."""

LEFT, TOP, RIGHT, BOTTOM = range(4)
"""Index of each side in a box ``(x0, y0, x1, y1)``."""


@dataclass
class Borders:
    """The interior tile edges that can cut a box, and the tolerance in pixels."""

    tiles: np.ndarray  # (T, 4) x0, y0, x1, y1
    interior: np.ndarray  # (T, 4) bool: that edge of the tile is inside the image
    tolerance: float
    index: dict[Tile, int]  # each tile's row in ``tiles``

    @classmethod
    def of(
        cls,
        tiles: Sequence[Tile | None] | None,
        tolerance: float | None,
        sources: Sequence[Tile | None] = (),
    ) -> Borders | None:
        """The borders of ``tiles`` and of the ``sources`` (a tile per
        prediction, None for the whole-image pass); None when no tile is known."""
        for name, listed in (("tiles", tiles or ()), ("sources", sources)):
            for i, tile in enumerate(listed):
                if tile is not None and not isinstance(tile, Tile):
                    raise ValueError(f"{name}[{i}] must be a Tile, got {tile!r}")
        listed = (*(tiles or ()), *sources)
        known = list(dict.fromkeys(t for t in listed if t is not None))
        if not known:
            return None
        boxes = np.array([t.box for t in known], dtype=float)
        low = boxes[:, :2].min(axis=0)
        high = boxes[:, 2:].max(axis=0)
        interior = np.concatenate([boxes[:, :2] > low, boxes[:, 2:] < high], axis=1)
        if tolerance is None:
            side = max(max(t.width, t.height) for t in known)
            tolerance = max(EDGE_TOLERANCE_MIN_PX, EDGE_TOLERANCE_SHARE * side)
        return cls(boxes, interior, tolerance, {t: i for i, t in enumerate(known)})

    def cuts(self, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``(n, 4)`` boxes: ``(cut, line)``, each ``(n, 4)``: whether each side
        is cut by a tile edge, and that edge's coordinate (nan where not cut)."""
        tol = self.tolerance
        inside = np.all(
            (boxes[:, None, :2] >= self.tiles[None, :, :2] - tol)
            & (boxes[:, None, 2:] <= self.tiles[None, :, 2:] + tol),
            axis=2,
        )
        near = np.abs(boxes[:, None, :] - self.tiles[None, :, :]) <= tol
        hits = near & inside[:, :, None] & self.interior[None, :, :]  # (n, T, 4)
        cut = hits.any(axis=1)
        first = hits.argmax(axis=1)  # (n, 4): a tile that cuts that side
        line = np.where(cut, self.tiles[first, np.arange(4)[None, :]], np.nan)
        return cut, line

    def cuts_by_source(
        self, boxes: np.ndarray, origin: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`cuts`, each box tested against the edges of its own tile
        only (``origin``: its row in ``tiles``, or :data:`WHOLE_IMAGE`, whose
        regions no tile edge cuts)."""
        from_tile = origin >= 0
        rows = np.where(from_tile, origin, 0)
        edges = self.tiles[rows]
        near = np.abs(boxes - edges) <= self.tolerance
        cut = near & self.interior[rows] & from_tile[:, None]
        return cut, np.where(cut, edges, np.nan)


WHOLE_IMAGE = -1
"""The origin of a whole-image pass's region (tiles are numbered from 0)."""


@dataclass
class Views:
    """One group's regions as arrays: boxes, where they are cut, and where
    they come from."""

    predictions: list[Prediction]
    boxes: np.ndarray  # (n, 4)
    cut: np.ndarray  # (n, 4) bool
    line: np.ndarray  # (n, 4) float, nan where the cutting edge is unknown
    origin: np.ndarray  # (n,) int: the source tile's row, WHOLE_IMAGE, or < -1
    # (sources unknown: each region its own origin)

    @classmethod
    def of(
        cls,
        predictions: list[Prediction],
        borders: Borders | None,
        origin: np.ndarray | None = None,
    ) -> Views:
        """``origin``: each region's source (see the field), None when unknown:
        then a side is cut by any tile's edge, or by anything without tiles."""
        boxes = np.array([p.bbox for p in predictions], dtype=float).reshape(-1, 4)
        if origin is None:
            origin = -2 - np.arange(len(predictions))
            if borders is None:  # borders unknown: any side may be cut
                cut = np.ones(boxes.shape, dtype=bool)
                line = np.full(boxes.shape, np.nan)
            else:
                cut, line = borders.cuts(boxes)
        elif borders is None:  # sources known, no tile: the pass's regions only
            cut = np.zeros(boxes.shape, dtype=bool)
            line = np.full(boxes.shape, np.nan)
        else:
            cut, line = borders.cuts_by_source(boxes, origin)
        return cls(predictions, boxes, cut, line, np.asarray(origin, dtype=int))

    @property
    def from_whole_image(self) -> np.ndarray:
        """(n,) bool: found by the whole-image pass."""
        return self.origin == WHOLE_IMAGE


def area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )


def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def across_seam(
    first: np.ndarray,
    first_line: np.ndarray,
    second: np.ndarray,
    second_line: np.ndarray,
    axis: int,
    tol: float,
) -> np.ndarray:
    """Rule 3: ``first`` is the part left of (axis 0) or above (axis 1) a seam,
    cut by a tile's far edge at ``b``; ``second`` is cut by a tile's near edge at
    ``a <= b``; each reaches across the overlap ``a .. b``; they line up along it."""
    lo, hi = axis, axis + 2
    across_lo, across_hi = 1 - axis, 3 - axis
    b = first_line[..., hi]
    a = second_line[..., lo]
    with np.errstate(invalid="ignore"):  # nan lines (not cut) compare False
        meets = (
            (a <= b + tol)
            & (first[..., lo] <= a + tol)
            & (second[..., hi] >= b - tol)
            & (first[..., lo] < second[..., lo])
            & (first[..., hi] < second[..., hi])
        )
    shared = np.clip(
        np.minimum(first[..., across_hi], second[..., across_hi])
        - np.maximum(first[..., across_lo], second[..., across_lo]),
        0,
        None,
    )
    shorter = np.minimum(
        first[..., across_hi] - first[..., across_lo],
        second[..., across_hi] - second[..., across_lo],
    )
    return meets & (ratio(shared, shorter) >= SEAM_ALIGN)
