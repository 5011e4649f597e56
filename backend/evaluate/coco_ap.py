"""COCO AP, AP50 and AR from pycocotools' COCOeval, overall and per label.

Both sides are written with :func:`converters.coco.to_coco` (pixels of the
original image) into in-memory COCO objects; COCOeval computes every figure
(nothing here re-implements AP). A label on one side only is still reported:
with ground truth and no predictions its AP is 0.0; with predictions and no
ground truth COCOeval has nothing to average (-1), reported as None.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backend.evaluate.pairs import ImagePair
from converters.coco import CocoImage, to_coco, to_coco_results
from converters.prediction import Prediction, RegionType

IOU_TYPES = ("bbox", "segm", "keypoints")

STAT_INDEX = {
    "bbox": {"ap": 0, "ap50": 1, "ar": 8},
    "segm": {"ap": 0, "ap50": 1, "ar": 8},
    "keypoints": {"ap": 0, "ap50": 1, "ar": 5},
}
"""Where ``COCOeval.summarize`` puts AP (IoU/OKS .50:.95), AP50 and AR (all
areas; 100 detections for bbox/segm, 20 for keypoints: COCO's own maxDets)."""

OKS_SIGMA = 0.07
"""Per-joint OKS sigma (in units of the instance's scale) for keypoint sets
other than COCO's 17 person joints, which keep COCOeval's own sigmas: about
the mean of those (0.025 eyes .. 0.107 hips), a joint of average difficulty."""

COCO_PERSON_JOINTS = 17
"""The joint count COCOeval's default ``kpt_oks_sigmas`` are for."""

UNDEFINED = -1.0
"""COCOeval's value for a figure it could not compute (no ground truth)."""


def _evaluated(p: Prediction, iou_type: str) -> bool:
    """Which regions an iouType scores: boxes and polygons by their box,
    polygons and masks by their area, keypoint instances by OKS."""
    if iou_type == "bbox":
        return p.type in (RegionType.BOX, RegionType.POLYGON)
    if iou_type == "segm":
        return p.type is RegionType.POLYGON or p.mask is not None
    return p.type is RegionType.KEYPOINT


@dataclass(frozen=True)
class ApScores:
    """AP (IoU .50:.95), AP50 and AR, each 0..1 or None when undefined."""

    ap: float | None
    ap50: float | None
    ar: float | None


@dataclass
class CocoApReport:
    """Overall and per-label scores of one iouType, and region counts per label."""

    iou_type: str
    overall: ApScores
    per_label: dict[str, ApScores] = field(default_factory=dict)
    gt_counts: dict[str, int] = field(default_factory=dict)
    pred_counts: dict[str, int] = field(default_factory=dict)


def coco_datasets(
    pairs: Sequence[ImagePair], iou_type: str = "bbox"
) -> tuple[dict, list[dict], list[str]]:
    """The ground-truth dataset, the results list and the labels (ground-truth
    labels first, in order of appearance, then prediction-only ones)."""
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    gt_images, dt_images, labels = [], [], {}
    for n, pair in enumerate(pairs, start=1):
        gt = [p for p in pair.ground_truth if _evaluated(p, iou_type)]
        dt = [p for p in pair.predictions if _evaluated(p, iou_type)]
        for p in gt:
            labels.setdefault(p.label, None)
        gt_images.append(CocoImage(pair.key, pair.width, pair.height, gt, n))
        dt_images.append(CocoImage(pair.key, pair.width, pair.height, dt, n))
    for image in dt_images:
        for p in image.predictions:
            labels.setdefault(p.label, None)
    names = list(labels)
    gt_dataset = to_coco(gt_images, names)
    results = to_coco_results(to_coco(dt_images, names), iou_type)
    return gt_dataset, results, names


def _scores(stats: Sequence[float], iou_type: str) -> ApScores:
    def value(name: str) -> float | None:
        figure = float(stats[STAT_INDEX[iou_type][name]])
        return None if figure == UNDEFINED else figure

    return ApScores(value("ap"), value("ap50"), value("ar"))


def _evaluate(
    ground_truth: COCO, detections: COCO, cat_ids: list[int], iou_type: str
) -> ApScores:
    """COCOeval's evaluate, accumulate and summarize over ``cat_ids`` (a fresh
    run per label: ``accumulate(p)`` with fewer categories than ``evaluate``
    saw reads the wrong ones in pycocotools 2.0)."""
    evaluator = COCOeval(ground_truth, detections, iou_type)
    evaluator.params.catIds = cat_ids
    if iou_type == "keypoints":
        counts = {len(ground_truth.cats[k].get("keypoints", [])) for k in cat_ids}
        if len(counts) != 1:  # one sigma vector per run: no common OKS
            return ApScores(None, None, None)
        (joints,) = counts
        if joints != COCO_PERSON_JOINTS:
            evaluator.params.kpt_oks_sigmas = np.full(joints, OKS_SIGMA)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return _scores(evaluator.stats, iou_type)


def coco_ap(pairs: Sequence[ImagePair], iou_type: str = "bbox") -> CocoApReport:
    """COCOeval over ``pairs`` for ``iou_type`` (``bbox``, ``segm`` or
    ``keypoints``): overall (COCOeval's mean over labels with ground truth) and
    for each label alone. Keypoint categories with different joint counts have
    no overall OKS AP (None); each label still has its own."""
    gt_dataset, results, labels = coco_datasets(pairs, iou_type)
    ids = {c["name"]: c["id"] for c in gt_dataset["categories"]}
    gt_counts = {name: 0 for name in labels}
    for ann in gt_dataset["annotations"]:
        gt_counts[labels[ann["category_id"] - 1]] += 1
    pred_counts = {name: 0 for name in labels}
    for result in results:
        pred_counts[labels[result["category_id"] - 1]] += 1
    report = CocoApReport(
        iou_type, ApScores(None, None, None), {}, gt_counts, pred_counts
    )
    if not labels:
        return report
    if not results:  # loadRes cannot read an empty list: nothing found anything
        zero = ApScores(0.0, 0.0, 0.0)
        report.overall = zero if gt_dataset["annotations"] else report.overall
        report.per_label = {
            name: zero if gt_counts[name] else ApScores(None, None, None)
            for name in labels
        }
        return report
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = gt_dataset
        ground_truth.createIndex()
        detections = ground_truth.loadRes(results)
    report.overall = _evaluate(ground_truth, detections, list(ids.values()), iou_type)
    report.per_label = {
        name: _evaluate(ground_truth, detections, [ids[name]], iou_type)
        for name in labels
    }
    return report
