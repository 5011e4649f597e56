"""Greedy merging of one bucket of tiled regions (boxes or polygons).

The grouping behind :mod:`converters.tile_merge` (whose docstring states the
rules): a :class:`Group` grows from the highest-ranked region left by taking in
the regions that match it (rules 1-3, OCR texts permitting), and
:func:`merge_regions` turns each group into one prediction: its best whole
view, else the union of its parts (box, polygon outline, mask, joined text).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from converters.masks import (
    mask_to_polygon,
    polygon_to_rle,
    rle_to_mask,
    rle_union,
)
from converters.prediction import Box, Prediction, RegionType
from converters.tile_seams import (
    BOTTOM,
    LEFT,
    RIGHT,
    TOP,
    Borders,
    Views,
    across_seam,
    area,
    ratio,
)
from converters.tile_text import fuller_text, join_at_seam, texts_agree

POLYGON_UNION_MAX_PIXELS = 4_000_000
"""Polygon parts are united on a raster of their box; a box larger than this
(4 MB of mask) is rasterised at a reduced scale instead of at full size."""


@dataclass
class Group:
    """A growing merge group: its members, box around them, cut sides, text."""

    members: list[int]
    box: np.ndarray  # (4,)
    cut: np.ndarray  # (4,) bool
    line: np.ndarray  # (4,)
    text: str | None
    tolerance: float
    origins: set[int]  # the sources of the members (Views.origin)

    @classmethod
    def start(cls, views: Views, i: int, tolerance: float) -> Group:
        return cls(
            [i],
            views.boxes[i].copy(),
            views.cut[i].copy(),
            views.line[i].copy(),
            views.predictions[i].text,
            tolerance,
            {int(views.origin[i])},
        )

    def fresh(self, origins: np.ndarray) -> np.ndarray:
        """Which origins are not yet in the group: one source's regions never
        merge with each other (a tile's answer, like an untiled one, is taken
        as it is: two people overlapping are two)."""
        return ~np.isin(origins, list(self.origins))

    def touches(self, boxes: np.ndarray) -> np.ndarray:
        """Which ``(n, 4)`` boxes overlap or touch the group's box, give or take
        the tolerance: every rule needs that, so the rest are skipped cheaply."""
        tol = self.tolerance
        return np.all(boxes[:, :2] <= self.box[2:] + tol, axis=1) & np.all(
            boxes[:, 2:] >= self.box[:2] - tol, axis=1
        )

    def matches(
        self, views: Views, candidates: np.ndarray, iou: float, ios: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each candidate: ``(duplicate_or_part, seam_group_first,
        seam_candidate_first)`` (rules 1-2, rule 3 either way round); all False
        for a candidate from a source already in the group."""
        boxes, cut, line = (
            views.boxes[candidates],
            views.cut[candidates],
            views.line[candidates],
        )
        low = np.maximum(boxes[:, :2], self.box[:2])
        high = np.minimum(boxes[:, 2:], self.box[2:])
        inter = area(np.concatenate([low, high], axis=1))
        own, their = float(area(self.box)), area(boxes)
        overlap_iou = ratio(inter, own + their - inter)
        overlap_ios = ratio(inter, np.minimum(own, their))
        smaller_cut = np.where(their <= own, cut.any(axis=1), self.cut.any())
        same = (overlap_iou >= iou) | ((overlap_ios >= ios) & smaller_cut)
        tol = self.tolerance
        group_first = np.zeros(len(candidates), dtype=bool)
        candidate_first = np.zeros(len(candidates), dtype=bool)
        for axis in (0, 1):
            group_first |= across_seam(self.box, self.line, boxes, line, axis, tol)
            candidate_first |= across_seam(boxes, line, self.box, self.line, axis, tol)
        fresh = self.fresh(views.origin[candidates])
        return same & fresh, group_first & fresh, candidate_first & fresh

    def take(self, views: Views, j: int, text: str | None) -> None:
        """Add member ``j``: the box grows; a side stays cut only where every
        member reaching that far is cut."""
        self.members.append(j)
        self.origins.add(int(views.origin[j]))
        self.text = text
        box, tol = views.boxes[j], self.tolerance
        for side in range(4):
            sign = -1.0 if side < RIGHT else 1.0  # left/top grow down, right/bottom up
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


def rank(p: Prediction, index: int) -> tuple[bool, float, int]:
    """Sort key: highest score first, unknown scores last, then input order."""
    return (p.score is None, -(p.score or 0.0), index)


def best_score(predictions: Sequence[Prediction]) -> float | None:
    scores = [p.score for p in predictions if p.score is not None]
    return max(scores) if scores else None


def _text_relation(
    group: Group,
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
    group: Group, views: Views, alive: np.ndarray, iou: float, ios: float
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
            if int(views.origin[j]) in group.origins:  # its source joined meanwhile
                continue
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
    left, top = math.floor(box[LEFT]), math.floor(box[TOP])
    extent = (math.ceil(box[RIGHT]) - left, math.ceil(box[BOTTOM]) - top)
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


def _merged(group: Group, views: Views) -> Prediction:
    """One prediction for a group: its best whole view (a tile's before the
    whole-image pass's, which sees the object shrunk), else the union of parts."""
    members = [views.predictions[i] for i in group.members]
    score = best_score(members)
    whole = [i for i in group.members if not views.cut[i].any()]
    whole = [i for i in whole if not views.from_whole_image[i]] or whole
    if whole:
        best = min(whole, key=lambda i: rank(views.predictions[i], i))
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


def merge_regions(
    predictions: list[Prediction],
    borders: Borders | None,
    iou: float,
    ios: float,
    origin: Sequence[int] | None = None,
) -> list[tuple[int, Prediction]]:
    """Greedy merge of one group (one label, geometry, OCR or not); each result
    with the input position of its first member (positions are the group's).
    ``origin``: each prediction's source (:class:`Views`), None when unknown."""
    order = sorted(range(len(predictions)), key=lambda i: rank(predictions[i], i))
    ranked = [predictions[i] for i in order]
    ranked_origin = None if origin is None else np.array([origin[i] for i in order])
    views = Views.of(ranked, borders, ranked_origin)
    tolerance = 0.0 if borders is None else borders.tolerance
    alive = np.ones(len(ranked), dtype=bool)
    out = []
    for i in range(len(ranked)):
        if not alive[i]:
            continue
        alive[i] = False
        group = Group.start(views, i, tolerance)
        _grow(group, views, alive, iou, ios)
        out.append((min(order[m] for m in group.members), _merged(group, views)))
    return out
