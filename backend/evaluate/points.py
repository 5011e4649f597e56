"""Predicted points against ground-truth regions: hits and false points.

A point hits a ground-truth box, polygon or mask of its label when it lies
inside (a box's edges count; a polygon or mask by the pixel under the point,
as pycocotools rasterises it at the image size). Each region is hit at most
once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools import mask as mask_utils

from backend.evaluate.pairs import ImagePair, score_of
from converters.prediction import Prediction, RegionType


@dataclass
class PointHits:
    """Per label: ``hits`` (points inside a region of their label, one per
    region), ``false_points`` (the other points) and ``regions`` (ground-truth
    regions that could be hit)."""

    hits: Counter = field(default_factory=Counter)
    false_points: Counter = field(default_factory=Counter)
    regions: Counter = field(default_factory=Counter)

    def hit_rate(self, label: str | None = None) -> float | None:
        """Share of ground-truth regions hit (0..1), overall or for one label;
        None without regions."""
        if label is None:
            hits, regions = sum(self.hits.values()), sum(self.regions.values())
        else:
            hits, regions = self.hits[label], self.regions[label]
        return hits / regions if regions else None


class _Pixels:
    """The pixels of one image's polygons and masks, rasterised once each and
    only when a point asks: a polygon inside its own bounding window (integer
    shifts keep pycocotools' pixels), a mask decoded once."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self._cache: dict[int, tuple[np.ndarray, int, int]] = {}

    def covers(self, key: int, region: Prediction, col: int, row: int) -> bool:
        if key not in self._cache:
            self._cache[key] = self._raster(region)
        pixels, left, top = self._cache[key]
        r, c = row - top, col - left
        return (
            0 <= r < pixels.shape[0] and 0 <= c < pixels.shape[1] and bool(pixels[r, c])
        )

    def _raster(self, region: Prediction) -> tuple[np.ndarray, int, int]:
        if region.mask is not None:
            return mask_utils.decode(dict(region.mask)), 0, 0
        x0, y0, x1, y1 = region.bbox
        left, top = max(0, math.floor(x0)), max(0, math.floor(y0))
        right = min(self.width, math.ceil(x1) + 1)
        bottom = min(self.height, math.ceil(y1) + 1)
        if right <= left or bottom <= top:
            return np.zeros((0, 0), dtype=np.uint8), left, top
        flat = [v for x, y in region.coords for v in (x - left, y - top)]
        rle = mask_utils.frPyObjects([flat], bottom - top, right - left)
        return mask_utils.decode(mask_utils.merge(rle)), left, top


def _inside(point: Prediction, key: int, region: Prediction, pixels: _Pixels) -> bool:
    x, y = point.coords
    if region.mask is None and region.type in (RegionType.BOX, RegionType.KEYPOINT):
        x0, y0, x1, y1 = region.coords
        return x0 <= x <= x1 and y0 <= y <= y1
    col, row = math.floor(x), math.floor(y)  # pixel i spans i .. i + 1
    if not (0 <= col < pixels.width and 0 <= row < pixels.height):
        return False
    return pixels.covers(key, region, col, row)


class PointTally:
    """:class:`PointHits` fed one image at a time. Regions of every label are
    counted; :meth:`result` keeps the labels scored."""

    def __init__(self, labels: Sequence[str] | None = None) -> None:
        self.wanted = None if labels is None else set(labels)
        self.counts = PointHits()
        self.pointed: set[str] = set()

    def add(self, pair: ImagePair) -> None:
        wanted = self.wanted
        regions = [
            g
            for g in pair.ground_truth
            if g.type is not RegionType.POINT and (wanted is None or g.label in wanted)
        ]
        regions.sort(key=_area)
        for g in regions:
            self.counts.regions[g.label] += 1
        points = [p for p in _points(pair) if wanted is None or p.label in wanted]
        self.pointed.update(p.label for p in points)
        hit: set[int] = set()
        pixels = _Pixels(pair.height, pair.width)
        for p in sorted(points, key=lambda p: -score_of(p)):
            for n, g in enumerate(regions):
                if n not in hit and g.label == p.label and _inside(p, n, g, pixels):
                    hit.add(n)
                    self.counts.hits[p.label] += 1
                    break
            else:
                self.counts.false_points[p.label] += 1

    def result(self) -> PointHits:
        """The counts of the scored labels: those given, else those of
        predicted points."""
        labels = self.pointed if self.wanted is None else self.wanted
        return PointHits(
            Counter({k: v for k, v in self.counts.hits.items() if k in labels}),
            Counter({k: v for k, v in self.counts.false_points.items() if k in labels}),
            Counter({k: v for k, v in self.counts.regions.items() if k in labels}),
        )


def point_hits(
    pairs: Iterable[ImagePair], labels: Sequence[str] | None = None
) -> PointHits:
    """Score the point predictions of ``pairs``.

    Points are taken by score, highest first; each hits the smallest unhit
    region of its label containing it. ``labels`` are those scored (regions of
    other labels are not counted); None scores the labels of predicted points.
    """
    tally = PointTally(labels)
    for pair in pairs:
        tally.add(pair)
    return tally.result()


def _points(pair: ImagePair) -> list[Prediction]:
    return [p for p in pair.predictions if p.type is RegionType.POINT]


def _area(region: Prediction) -> float:
    x0, y0, x1, y1 = region.bbox
    return (x1 - x0) * (y1 - y0)
