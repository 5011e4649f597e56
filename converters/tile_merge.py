"""Merge the predictions of the tiles of one image back into one answer.

Input: every tile's predictions, already moved to pixels of the original image
(:func:`converters.tiling.to_original`), optionally with a whole-image pass, and
the tiles themselves (:func:`converters.tiling.tile_grid`). Output: one
prediction per object.

How regions merge
-----------------
Boxes and polygons (matched by their bounding boxes) are merged per label and
geometry, never across labels; OCR regions (``text`` not None) only with OCR
regions. Greedy non-maximum merging: the highest-scoring prediction left starts
a group, which takes in every prediction left that matches it, grows, and is
tested again until nothing more matches. Two regions match when

1. **duplicates**: IoU >= ``iou`` (:data:`MERGE_IOU`): one object seen whole by
   two tiles, or by a tile and the whole-image pass;
2. **part inside a whole**: intersection over the smaller box (IOS) >= ``ios``
   (:data:`MERGE_IOS`) *and the smaller is cut by a tile edge*: a tile saw only
   part of an object that its neighbour, or the whole-image pass, saw whole.
   Plain IoU misses this (a half is at most 0.5 of the whole), and plain IOS (as
   SAHI uses it) also swallows a small object lying on a big one of the same
   label, a child before an adult; requiring the cut keeps those apart;
3. **parts across a seam**: one region is cut by the right (bottom) edge of a
   tile, the other by the left (top) edge of a tile whose overlap it shares,
   each reaches across the whole overlap, and they line up along the seam (their
   extents across it share at least :data:`SEAM_ALIGN` of the shorter): the two
   halves of an object larger than the overlap, which barely overlap, and
   which neither IoU nor IOS would join.

A side of a box is **cut** when the box lies inside a tile and that side is
within :data:`EDGE_TOLERANCE_SHARE` of the tile size of one of the tile's edges,
and that edge is inside the image (the image border cuts nothing). Without
``tiles`` the borders are unknown: every side may be cut, rule 3 never applies,
and the merge is close to SAHI's greedy IOS merge.

A merged group keeps the highest score of its members, the label, and:

* if some member is not cut anywhere (a whole view), the highest-scoring whole
  view's geometry, mask and text: the object as one tile saw it entire;
* otherwise the union of the members: the box around all of them, the outline
  of the union of the polygons, the union of the masks, and for OCR the parts'
  texts joined at the seams (:mod:`converters.tile_text`).

OCR regions merge only when their texts agree (rules 1 and 2) or join at the
seam (rule 3), so two different words side by side, or overlapping, stay apart.
Points merge per label when within ``point_distance`` pixels of the
highest-scoring point, which is kept. Keypoint instances are never tiled (the
caller runs them on the whole image) and pass through unchanged.

Objects larger than the overlap
-------------------------------
An object is seen whole by some tile only if it fits inside one. An object that
fits in the overlap comes back once, at its full extent, through rule 2. An
object larger than the overlap that straddles a seam is cut in every tile: its
parts join through rule 3 when the model finds each part, draws it out to the
tile edge (within the tolerance) and the parts line up; an object over a tile
corner joins from its four parts, one larger than a tile joins part by part.
Where that fails (a part is missed, stops short of the edge, or a thin diagonal
object's parts do not line up) the object comes back as its parts, each with
the extent its tile saw. A whole-image pass sees large objects whole and then
absorbs their parts through rule 2.

Why not SAHI
------------
SAHI (``sahi`` 0.12.8, MIT) is the reference for sliced inference, and its
``GreedyNMMPostprocess`` with IOS is the merge the rules above start from. We do
not depend on it, for two reasons:

* **Install.** It requires ``opencv-python`` (the GUI build), ``shapely``,
  ``fire`` and ``termcolor``. Measured on Python 3.11: a fresh venv grows from
  26 MB to 513 MB with ``pip install sahi``; on our base install it adds about
  300 MB (``opencv-python`` 5.1 alone is 288 MB), and that ``opencv-python``
  writes the same ``cv2`` package as our ``opencv-python-headless``, so the two
  overwrite each other and removing either breaks ``cv2``; its ``cv2`` links
  ``libGL.so.1``, which slim GPU images lack. ``import sahi.slicing`` or
  ``sahi.postprocess.combine`` loads ``cv2``, ``shapely``, PIL and tqdm.
* **Fit.** Its merge takes its own ``ObjectPrediction`` (box, category id, mask)
  and matches boxes by IoU or IOS only: no OCR text, no points, polygons only as
  shapely masks, and no knowledge of tile borders, so an object larger than
  the overlap always comes back in parts and a small object on a big one of
  its label is merged away. The parts we need beyond it are most of this
  module; its slicing is the twenty lines of :func:`converters.tiling.tile_grid`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from converters.masks import (
    mask_to_polygon,
    polygon_to_rle,
    rle_to_mask,
    rle_union,
)
from converters.prediction import Box, Prediction, RegionType
from converters.tile_text import fuller_text, join_at_seam, texts_agree
from converters.tiling import Tile

MERGE_IOU = 0.5
"""Duplicates: two tiles that both see an object whole draw nearly the same box
(IoU 0.8 and up); 0.5 is the usual NMS cut, which two distinct objects of one
label rarely reach."""

MERGE_IOS = 0.5
"""Part inside a whole: at least half of the cut part lies in the other box.
A cut part lies inside its whole view (IOS near 1); SAHI's default of 0.5
leaves room for the noise of a narrow part at a tile edge."""

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

POINT_MERGE_DISTANCE = 10.0
"""Pixels between two points taken for one object: a point marks the object's
centre as each crop shows it, which moves a few pixels between two crops;
neighbouring objects worth separate points (cells, heads) lie further apart."""

POLYGON_UNION_MAX_PIXELS = 4_000_000
"""Polygon parts are united on a raster of their box; a box larger than this
(4 MB of mask) is rasterised at a reduced scale instead of at full size."""

_LEFT, _TOP, _RIGHT, _BOTTOM = range(4)
"""Index of each side in a box ``(x0, y0, x1, y1)``."""


@dataclass
class _Borders:
    """The interior tile edges that can cut a box, and the tolerance in pixels."""

    tiles: np.ndarray  # (T, 4) x0, y0, x1, y1
    interior: np.ndarray  # (T, 4) bool: that edge of the tile is inside the image
    tolerance: float

    @classmethod
    def of(
        cls, tiles: Sequence[Tile | None] | None, tolerance: float | None
    ) -> _Borders | None:
        for i, tile in enumerate(tiles or ()):
            if tile is not None and not isinstance(tile, Tile):
                raise ValueError(f"tiles[{i}] must be a Tile, got {tile!r}")
        known = [t for t in tiles or () if t is not None]
        if not known:
            return None
        boxes = np.array([t.box for t in known], dtype=float)
        low = boxes[:, :2].min(axis=0)
        high = boxes[:, 2:].max(axis=0)
        interior = np.concatenate([boxes[:, :2] > low, boxes[:, 2:] < high], axis=1)
        if tolerance is None:
            side = max(max(t.width, t.height) for t in known)
            tolerance = max(EDGE_TOLERANCE_MIN_PX, EDGE_TOLERANCE_SHARE * side)
        return cls(boxes, interior, tolerance)

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


@dataclass
class _Views:
    """One group's regions as arrays: boxes, areas, and where they are cut."""

    predictions: list[Prediction]
    boxes: np.ndarray  # (n, 4)
    cut: np.ndarray  # (n, 4) bool
    line: np.ndarray  # (n, 4) float, nan where the cutting edge is unknown

    @classmethod
    def of(cls, predictions: list[Prediction], borders: _Borders | None) -> _Views:
        boxes = np.array([p.bbox for p in predictions], dtype=float).reshape(-1, 4)
        if borders is None:  # borders unknown: any side may be cut, by no known edge
            cut = np.ones(boxes.shape, dtype=bool)
            line = np.full(boxes.shape, np.nan)
        else:
            cut, line = borders.cuts(boxes)
        return cls(predictions, boxes, cut, line)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def _seam(
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
    return meets & (_ratio(shared, shorter) >= SEAM_ALIGN)


@dataclass
class _Group:
    """A growing merge group: its members, box around them, cut sides, text."""

    members: list[int]
    box: np.ndarray  # (4,)
    cut: np.ndarray  # (4,) bool
    line: np.ndarray  # (4,)
    text: str | None
    tolerance: float

    @classmethod
    def start(cls, views: _Views, i: int, tolerance: float) -> _Group:
        return cls(
            [i],
            views.boxes[i].copy(),
            views.cut[i].copy(),
            views.line[i].copy(),
            views.predictions[i].text,
            tolerance,
        )

    def touches(self, boxes: np.ndarray) -> np.ndarray:
        """Which ``(n, 4)`` boxes overlap or touch the group's box, give or take
        the tolerance: every rule needs that, so the rest are skipped cheaply."""
        tol = self.tolerance
        return np.all(boxes[:, :2] <= self.box[2:] + tol, axis=1) & np.all(
            boxes[:, 2:] >= self.box[:2] - tol, axis=1
        )

    def matches(
        self, views: _Views, candidates: np.ndarray, iou: float, ios: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each candidate: ``(duplicate_or_part, seam_group_first,
        seam_candidate_first)`` (rules 1-2, rule 3 either way round)."""
        boxes, cut, line = (
            views.boxes[candidates],
            views.cut[candidates],
            views.line[candidates],
        )
        low = np.maximum(boxes[:, :2], self.box[:2])
        high = np.minimum(boxes[:, 2:], self.box[2:])
        inter = _area(np.concatenate([low, high], axis=1))
        own, their = float(_area(self.box)), _area(boxes)
        overlap_iou = _ratio(inter, own + their - inter)
        overlap_ios = _ratio(inter, np.minimum(own, their))
        smaller_cut = np.where(their <= own, cut.any(axis=1), self.cut.any())
        same = (overlap_iou >= iou) | ((overlap_ios >= ios) & smaller_cut)
        tol = self.tolerance
        group_first = np.zeros(len(candidates), dtype=bool)
        candidate_first = np.zeros(len(candidates), dtype=bool)
        for axis in (0, 1):
            group_first |= _seam(self.box, self.line, boxes, line, axis, tol)
            candidate_first |= _seam(boxes, line, self.box, self.line, axis, tol)
        return same, group_first, candidate_first

    def take(self, views: _Views, j: int, text: str | None) -> None:
        """Add member ``j``: the box grows; a side stays cut only where every
        member reaching that far is cut."""
        self.members.append(j)
        self.text = text
        box, tol = views.boxes[j], self.tolerance
        for side in range(4):
            sign = -1.0 if side < _RIGHT else 1.0  # left/top grow down, right/bottom up
            reach = sign * (box[side] - self.box[side])
            if reach > tol:
                self.cut[side] = views.cut[j, side]
                self.line[side] = views.line[j, side]
            elif reach >= -tol:
                self.cut[side] = self.cut[side] and views.cut[j, side]
                if not self.cut[side]:
                    self.line[side] = np.nan
            if reach > 0:
                self.box[side] = box[side]


def _rank(p: Prediction, index: int) -> tuple[bool, float, int]:
    """Sort key: highest score first, unknown scores last, then input order."""
    return (p.score is None, -(p.score or 0.0), index)


def _best_score(predictions: Sequence[Prediction]) -> float | None:
    scores = [p.score for p in predictions if p.score is not None]
    return max(scores) if scores else None


def _text_relation(
    group: _Group,
    candidate: Prediction,
    same: bool,
    group_first: bool,
    candidate_first: bool,
) -> tuple[bool, str | None]:
    """Whether an OCR candidate may join the group, and the group's text after."""
    text = candidate.text or ""
    current = group.text or ""
    if same and texts_agree(current, text):
        return True, fuller_text(current, text)
    for seam, (first, second) in (
        (group_first, (current, text)),
        (candidate_first, (text, current)),
    ):
        joined = join_at_seam(first, second) if seam else None
        if joined is not None:
            return True, joined
    return False, group.text


def _grow(
    group: _Group, views: _Views, alive: np.ndarray, iou: float, ios: float
) -> None:
    """Take in matching regions until none is left that matches the group."""
    ocr = group.text is not None
    while alive.any():
        candidates = np.flatnonzero(alive)
        candidates = candidates[group.touches(views.boxes[candidates])]
        if not candidates.size:
            return
        same, group_first, candidate_first = group.matches(views, candidates, iou, ios)
        hit = same | group_first | candidate_first
        took = False
        for k in np.flatnonzero(hit):  # candidates are in rank order already
            j = int(candidates[k])
            text = group.text
            if ocr:
                ok, text = _text_relation(
                    group,
                    views.predictions[j],
                    bool(same[k]),
                    bool(group_first[k]),
                    bool(candidate_first[k]),
                )
                if not ok:
                    continue
            group.take(views, j, text)
            alive[j] = False
            took = True
        if not took:
            return


def _polygon_union(polygons: list[tuple], box: np.ndarray) -> tuple | None:
    """Outline of the union of ``polygons`` (pixels), rasterised on ``box``."""
    left, top = math.floor(box[_LEFT]), math.floor(box[_TOP])
    extent = (math.ceil(box[_RIGHT]) - left, math.ceil(box[_BOTTOM]) - top)
    scale = min(
        1.0, math.sqrt(POLYGON_UNION_MAX_PIXELS / max(1, extent[0] * extent[1]))
    )
    width, height = (max(1, math.ceil(side * scale)) for side in extent)
    rles = [
        polygon_to_rle(
            [((x - left) * scale, (y - top) * scale) for x, y in polygon], width, height
        )
        for polygon in polygons
    ]
    outline = mask_to_polygon(rle_to_mask(rle_union(rles)))
    if outline is None:
        return None
    return tuple((x / scale + left, y / scale + top) for x, y in outline)


def _merged(group: _Group, views: _Views) -> Prediction:
    """One prediction for a group: its best whole view, else the union of parts."""
    members = [views.predictions[i] for i in group.members]
    score = _best_score(members)
    whole = [i for i in group.members if not views.cut[i].any()]
    if whole:
        best = min(whole, key=lambda i: _rank(views.predictions[i], i))
        return views.predictions[best].with_(score=score)
    keeper = members[0]
    if len(members) == 1:
        return keeper
    box: Box = tuple(float(v) for v in group.box)
    coords: object = box
    if keeper.type is RegionType.POLYGON:
        coords = _polygon_union([p.coords for p in members], group.box) or keeper.coords
    masks = [p.mask for p in members if p.mask is not None]
    return keeper.with_(
        coords=coords,
        score=score,
        text=group.text,
        mask=rle_union(masks) if masks else None,
    )


def _merge_regions(
    predictions: list[Prediction],
    borders: _Borders | None,
    iou: float,
    ios: float,
) -> list[tuple[int, Prediction]]:
    """Greedy merge of one group (one label, geometry, OCR or not); each result
    with the input position of its first member (positions are the group's)."""
    order = sorted(range(len(predictions)), key=lambda i: _rank(predictions[i], i))
    ranked = [predictions[i] for i in order]
    views = _Views.of(ranked, borders)
    tolerance = 0.0 if borders is None else borders.tolerance
    alive = np.ones(len(ranked), dtype=bool)
    out = []
    for i in range(len(ranked)):
        if not alive[i]:
            continue
        alive[i] = False
        group = _Group.start(views, i, tolerance)
        _grow(group, views, alive, iou, ios)
        out.append((min(order[m] for m in group.members), _merged(group, views)))
    return out


def _merge_points(
    predictions: list[Prediction], distance: float
) -> list[tuple[int, Prediction]]:
    """Greedy merge of one label's points: each keeps those within ``distance``."""
    order = sorted(range(len(predictions)), key=lambda i: _rank(predictions[i], i))
    xy = np.array([predictions[i].coords for i in order], dtype=float).reshape(-1, 2)
    alive = np.ones(len(order), dtype=bool)
    out = []
    for k, i in enumerate(order):
        if not alive[k]:
            continue
        keeper = predictions[i]
        near = alive & (np.hypot(*(xy - xy[k]).T) <= distance)
        if keeper.text is not None:
            near &= [texts_agree(keeper.text, predictions[j].text or "") for j in order]
        near[k] = True
        members = [order[m] for m in np.flatnonzero(near)]
        alive &= ~near
        merged = keeper.with_(score=_best_score([predictions[j] for j in members]))
        out.append((min(members), merged))
    return out


def _share(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return float(value)


@dataclass
class _Bucket:
    """Input positions and predictions of one merge group."""

    positions: list[int] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)


def merge_tiled(
    predictions: list[Prediction],
    tiles: list[Tile] | None = None,
    *,
    iou: float = MERGE_IOU,
    point_distance: float = POINT_MERGE_DISTANCE,
    ios: float = MERGE_IOS,
    edge_tolerance: float | None = None,
) -> list[Prediction]:
    """One prediction per object from the predictions of all tiles of one image.

    Args:
        predictions: every tile's predictions in pixels of the original image
            (and, optionally, a whole-image pass's), in any order.
        tiles: the tiles the image was cut into, any order (repeats and None
            entries are ignored, so a list with one tile per prediction works
            too). Without them tile borders are unknown: see the module.
        iou: IoU at or above which two regions are duplicates (rule 1).
        point_distance: pixels within which points of one label merge.
        ios: intersection over the smaller box at or above which a cut part
            joins the region it lies in (rule 2).
        edge_tolerance: pixels within which a box side counts as cut by a tile
            edge; None: EDGE_TOLERANCE_SHARE of the largest tile side, at least
            EDGE_TOLERANCE_MIN_PX. Raise it for a model that stops short of
            the edge where an object is sliced off.

    Returns:
        The merged predictions, each in the place of its first member in the
        input; keypoint instances unchanged in their places.
    """
    iou, ios = _share(iou, "iou"), _share(ios, "ios")
    if isinstance(point_distance, bool) or not isinstance(point_distance, (int, float)):
        raise ValueError(f"point_distance must be a number, got {point_distance!r}")
    if not point_distance >= 0:
        raise ValueError(f"point_distance must be >= 0, got {point_distance!r}")
    if edge_tolerance is not None and (
        isinstance(edge_tolerance, bool)
        or not isinstance(edge_tolerance, (int, float))
        or not edge_tolerance >= 0
    ):
        raise ValueError(
            f"edge_tolerance must be a number >= 0 or None, got {edge_tolerance!r}"
        )
    borders = _Borders.of(tiles, edge_tolerance)
    placed: list[tuple[int, Prediction]] = []
    buckets: dict[tuple, _Bucket] = {}
    for position, p in enumerate(predictions):
        if not isinstance(p, Prediction):
            raise ValueError(f"predictions[{position}] must be a Prediction, got {p!r}")
        if p.type is RegionType.KEYPOINT:
            placed.append((position, p))
            continue
        bucket = buckets.setdefault((p.type, p.label, p.text is not None), _Bucket())
        bucket.positions.append(position)
        bucket.predictions.append(p)
    for (kind, _, _), bucket in buckets.items():
        if kind is RegionType.POINT:
            merged = _merge_points(bucket.predictions, float(point_distance))
        else:
            merged = _merge_regions(bucket.predictions, borders, iou, ios)
        placed.extend((bucket.positions[i], p) for i, p in merged)
    placed.sort(key=lambda item: item[0])
    return [p for _, p in placed]
