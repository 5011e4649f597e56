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
   extents across it share at least :data:`~converters.tile_seams.SEAM_ALIGN`
   of the shorter): the two halves of an object larger than the overlap, which
   barely overlap, and which neither IoU nor IOS would join.

**Sources.** With ``sources`` (the tile that found each prediction, None for
the whole-image pass, as :mod:`worker.tiling_step` passes them):

* a side of a box is **cut** when it is within
  :data:`~converters.tile_seams.EDGE_TOLERANCE_SHARE` of the tile size of an
  edge of *its own* tile, and that edge is inside the image (the image border
  cuts nothing). A neighbour's edge running through the box cuts nothing: a
  child found whole a few pixels from it is not taken for a cut part of the
  adult around it. The pass's regions are never cut;
* regions of **one source never merge** with each other, by any rule: a
  tile's answer is taken as it is, like an untiled one (two people at IoU 0.54
  stay two). A group takes at most one region of each source, best first.

Without ``sources`` a side is cut when the box lies inside some tile and the
side is near one of that tile's interior edges, and any two regions may merge.
Without ``tiles`` either, the borders are unknown: every side may be cut, rule
3 never applies, and the merge is close to SAHI's greedy IOS merge.

A merged group keeps the highest score of its members, the label, and:

* if some member is not cut anywhere (a whole view), the highest-scoring whole
  view's geometry, mask and text: the object as one tile saw it entire. A
  tile's whole view wins over the whole-image pass's, whatever their scores:
  the pass sees the object shrunk, its box a few pixels off, its text misread;
* otherwise the union of the members: the box around all of them, the outline
  of the union of the polygons, the union of the masks, and for OCR the parts'
  texts joined at the seams (:mod:`converters.tile_text`).

OCR regions merge only when their texts agree (rules 1 and 2) or join at the
seam (rule 3), so two different words side by side, or overlapping, stay apart.
Points merge per label when within ``point_distance`` pixels of the
highest-scoring point, which is kept (sources are not consulted). Keypoint
instances are never tiled (the caller runs them on the whole image) and pass
through unchanged.

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

Known limit: two *distinct* objects of one label that both reach across the
same seam and overlap there (two trucks, one behind the other) look like the
two parts of one object to rule 3, and without the whole-image pass they come
back joined into one box around both; with the pass on, its whole views keep
them apart wherever it sees them.

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
  module, :mod:`converters.tile_seams` (where tile edges cut) and
  :mod:`converters.tile_groups` (growing and uniting groups); its slicing is
  the twenty lines of :func:`converters.tiling.tile_grid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from converters.prediction import Prediction, RegionType
from converters.tile_groups import best_score, merge_regions, rank
from converters.tile_seams import WHOLE_IMAGE, Borders
from converters.tile_text import texts_agree
from converters.tiling import Tile

MERGE_IOU = 0.5
"""Duplicates: two tiles that both see an object whole draw nearly the same box
(IoU 0.8 and up); 0.5 is the usual NMS cut, which two distinct objects of one
label rarely reach."""

MERGE_IOS = 0.5
"""Part inside a whole: at least half of the cut part lies in the other box.
A cut part lies inside its whole view (IOS near 1); SAHI's default of 0.5
leaves room for the noise of a narrow part at a tile edge."""

POINT_MERGE_DISTANCE = 10.0
"""Pixels between two points taken for one object: a point marks the object's
centre as each crop shows it, which moves a few pixels between two crops;
neighbouring objects worth separate points (cells, heads) lie further apart."""


def _merge_points(
    predictions: list[Prediction], distance: float
) -> list[tuple[int, Prediction]]:
    """Greedy merge of one label's points: each keeps those within ``distance``."""
    order = sorted(range(len(predictions)), key=lambda i: rank(predictions[i], i))
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
        merged = keeper.with_(score=best_score([predictions[j] for j in members]))
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
    origins: list[int] = field(default_factory=list)


def merge_tiled(
    predictions: list[Prediction],
    tiles: list[Tile] | None = None,
    *,
    sources: Sequence[Tile | None] | None = None,
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
            too). Without them (and without ``sources``) tile borders are
            unknown: see the module.
        sources: the tile that found each prediction, None for the
            whole-image pass; one per prediction. With them a box side is cut
            only by its own tile's edges (never in the pass's regions),
            regions of one source never merge with each other, and a whole
            tile view wins over the pass's (see the module). None: unknown.
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
    if sources is not None and len(sources) != len(predictions):
        raise ValueError(
            f"sources must give one tile (or None) per prediction: "
            f"{len(sources)} for {len(predictions)} predictions"
        )
    borders = Borders.of(tiles, edge_tolerance, sources or ())
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
        if sources is not None:
            source = sources[position]
            bucket.origins.append(
                WHOLE_IMAGE if source is None else borders.index[source]
            )
    for (kind, _, _), bucket in buckets.items():
        if kind is RegionType.POINT:
            merged = _merge_points(bucket.predictions, float(point_distance))
        else:
            origin = bucket.origins if sources is not None else None
            merged = merge_regions(bucket.predictions, borders, iou, ios, origin)
        placed.extend((bucket.positions[i], p) for i, p in merged)
    placed.sort(key=lambda item: item[0])
    return [p for _, p in placed]
