"""Greedy matching of predicted regions to ground-truth regions, per image.

IoU (intersection over union, 0..1) comes from ``pycocotools.mask.iou``: boxes
as continuous ``[x, y, w, h]`` rectangles (pixels of the original image) when
neither side has a polygon or mask, else every region rasterised at the image
size (a box as its rectangle, a polygon filled, a mask as it is). Points never
overlap anything here; :mod:`backend.evaluate.points` scores them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from backend.evaluate.pairs import ImagePair, score_of
from converters.prediction import Prediction, RegionType

MATCH_IOU = 0.5
"""Default IoU for a prediction to count as finding a ground-truth region: the
PASCAL VOC / COCO AP50 criterion the issue states for counts and thresholds."""

WRONG_LABEL_IOU = 0.5
"""A prediction left unmatched that overlaps a region of another label at least
this much found the right object with the wrong label (a confusion entry)."""

BACKGROUND = "background"
"""The confusion matrix's row (predicted where nothing was) and column (missed)."""

_BOX_TYPES = (RegionType.BOX, RegionType.KEYPOINT)


@dataclass(frozen=True)
class Match:
    """A true positive: prediction ``pred`` found ground truth ``gt`` (indices
    into the image's lists) of the same ``label`` with this ``iou`` (0..1)."""

    pred: int
    gt: int
    label: str
    iou: float
    score: float


@dataclass(frozen=True)
class FalsePositive:
    """A prediction that found nothing of its label. ``wrong_label`` is the
    label of ground truth ``gt`` it overlaps at ``iou`` >= :data:`WRONG_LABEL_IOU`
    (that region is then among the misses, claimed by this prediction), else None."""

    pred: int
    label: str
    score: float
    wrong_label: str | None = None
    gt: int | None = None
    iou: float = 0.0


@dataclass
class ImageMatch:
    """The outcome for one image: true positives, false positives and misses
    (indices of ground truth no prediction of its label found)."""

    key: str
    matches: list[Match] = field(default_factory=list)
    false_positives: list[FalsePositive] = field(default_factory=list)
    misses: list[int] = field(default_factory=list)
    gt_labels: list[str] = field(default_factory=list)


def _xywh(p: Prediction) -> list[float]:
    x0, y0, x1, y1 = p.bbox
    return [x0, y0, x1 - x0, y1 - y0]


def _is_box(p: Prediction) -> bool:
    return p.type in (*_BOX_TYPES, RegionType.POINT) and p.mask is None


def _rle(p: Prediction, height: int, width: int) -> dict[str, Any]:
    if p.mask is not None:
        return dict(p.mask)
    if p.type is RegionType.POLYGON:
        flat = [v for point in p.coords for v in point]
        return mask_utils.merge(mask_utils.frPyObjects([flat], height, width))
    box = np.array([_xywh(p)], dtype=np.float64)  # pycocotools: a list fails
    return mask_utils.frPyObjects(box, height, width)[0]


def iou_matrix(
    predictions: Sequence[Prediction],
    ground_truth: Sequence[Prediction],
    height: int | None = None,
    width: int | None = None,
) -> np.ndarray:
    """IoU (0..1) of every prediction (rows) with every ground truth (columns).

    Two boxes: exact rectangle IoU, whatever else the image holds. A pair with
    a polygon or mask on either side: both regions rasterised at ``height`` x
    ``width`` (pixels of the original image), which must then be given.
    """
    if not predictions or not ground_truth:
        return np.zeros((len(predictions), len(ground_truth)))
    crowd = [0] * len(ground_truth)
    dt = np.array([_xywh(p) for p in predictions], dtype=np.float64)
    gt = np.array([_xywh(p) for p in ground_truth], dtype=np.float64)
    ious = np.asarray(mask_utils.iou(dt, gt, crowd), dtype=np.float64)
    area_rows = [r for r, p in enumerate(predictions) if not _is_box(p)]
    area_cols = [c for c, g in enumerate(ground_truth) if not _is_box(g)]
    if not area_rows and not area_cols:
        return ious
    if height is None or width is None:
        raise ValueError("comparing polygons or masks needs the image height and width")
    rows = range(len(predictions)) if area_cols else area_rows
    cols = range(len(ground_truth)) if area_rows else area_cols
    dt_rle = {r: _rle(predictions[r], height, width) for r in rows}
    gt_rle = {c: _rle(ground_truth[c], height, width) for c in cols}
    all_rows, all_cols = list(dt_rle), list(gt_rle)
    if area_rows:
        ious[area_rows, :] = mask_utils.iou(
            [dt_rle[r] for r in area_rows], [gt_rle[c] for c in all_cols], crowd
        )
    if area_cols:
        ious[:, area_cols] = mask_utils.iou(
            [dt_rle[r] for r in all_rows],
            [gt_rle[c] for c in area_cols],
            [0] * len(area_cols),
        )
    return ious


def _regions(items: Sequence[Prediction]) -> list[tuple[int, Prediction]]:
    """The (index, region) pairs matching compares: all but points."""
    return [(i, p) for i, p in enumerate(items) if p.type is not RegionType.POINT]


def match_image(pair: ImagePair, iou_threshold: float = MATCH_IOU) -> ImageMatch:
    """Match ``pair``'s predictions to its ground truth, greedily.

    Predictions are taken by score, highest first (ties in list order); each
    takes the unmatched ground truth of its label with the highest IoU, if that
    is at least ``iou_threshold``. A higher-scored prediction's match never
    depends on lower-scored ones, so dropping every prediction under a score
    threshold leaves the rest matched as they are. Unmatched predictions then
    claim, in the same order, an unclaimed missed region of another label they
    overlap at IoU >= :data:`WRONG_LABEL_IOU` (a wrong label). Points are left
    out on both sides.
    """
    preds = _regions(pair.predictions)
    gts = _regions(pair.ground_truth)
    ious = iou_matrix(
        [p for _, p in preds], [g for _, g in gts], pair.height, pair.width
    )
    order = sorted(range(len(preds)), key=lambda r: -score_of(preds[r][1]))
    taken: set[int] = set()
    result = ImageMatch(pair.key, gt_labels=[g.label for g in pair.ground_truth])
    unmatched: list[int] = []
    for r in order:
        label = preds[r][1].label
        best, best_iou = None, iou_threshold
        for c, (_, g) in enumerate(gts):
            if c in taken or g.label != label or ious[r, c] < best_iou:
                continue
            if best is None or ious[r, c] > best_iou:
                best, best_iou = c, float(ious[r, c])
        if best is None:
            unmatched.append(r)
            continue
        taken.add(best)
        result.matches.append(
            Match(preds[r][0], gts[best][0], label, best_iou, score_of(preds[r][1]))
        )
    claimed: set[int] = set()
    for r in unmatched:
        i, p = preds[r]
        best, best_iou = None, WRONG_LABEL_IOU
        for c, (_, g) in enumerate(gts):
            if c in taken or c in claimed or g.label == p.label:
                continue
            if ious[r, c] >= best_iou and (best is None or ious[r, c] > best_iou):
                best, best_iou = c, float(ious[r, c])
        if best is None:
            result.false_positives.append(FalsePositive(i, p.label, score_of(p)))
        else:
            claimed.add(best)
            result.false_positives.append(
                FalsePositive(
                    i, p.label, score_of(p), gts[best][1].label, gts[best][0], best_iou
                )
            )
    result.misses = [j for c, (j, _) in enumerate(gts) if c not in taken]
    return result


@dataclass
class ConfusionMatrix:
    """Counts of (ground-truth label, predicted label) at IoU 0.5.

    A true positive counts on the diagonal, a wrong label at (its region's
    label, the predicted label), a miss at (label, :data:`BACKGROUND`) and any
    other false positive at (:data:`BACKGROUND`, label). Every region, either
    side, counts once.
    """

    labels: list[str]
    counts: Counter = field(default_factory=Counter)

    def count(self, gt_label: str, pred_label: str) -> int:
        return self.counts[(gt_label, pred_label)]

    def rows(self) -> list[list[int]]:
        """The matrix: rows ground truth, columns predictions, both in
        ``labels + [BACKGROUND]`` order."""
        axis = [*self.labels, BACKGROUND]
        return [[self.count(g, p) for p in axis] for g in axis]

    def add(self, m: ImageMatch) -> None:
        """Count one image's outcome; its labels join :attr:`labels` (sorted)."""
        seen = {t.label for t in m.matches} | {m.gt_labels[j] for j in m.misses}
        seen |= {fp.label for fp in m.false_positives}
        for t in m.matches:
            self.counts[(t.label, t.label)] += 1
        claimed = set()
        for fp in m.false_positives:
            if fp.wrong_label is None:
                self.counts[(BACKGROUND, fp.label)] += 1
            else:
                self.counts[(fp.wrong_label, fp.label)] += 1
                claimed.add(fp.gt)
        for j in m.misses:
            if j not in claimed:
                self.counts[(m.gt_labels[j], BACKGROUND)] += 1
        if not seen <= set(self.labels):
            self.labels = sorted({*self.labels, *seen})


def confusion_matrix(matches: Iterable[ImageMatch]) -> ConfusionMatrix:
    """The confusion matrix of :func:`match_image` outcomes (labels sorted)."""
    matrix = ConfusionMatrix([])
    for m in matches:
        matrix.add(m)
    return matrix
