"""COCO AP, AP50 and AR from pycocotools' COCOeval, overall and per label,
streamed over any number of images.

Images arrive one at a time (:meth:`CocoAccumulator.add`) and are evaluated in
chunks of :data:`CHUNK_IMAGES`: each chunk is written with
:func:`converters.coco.to_coco` (pixels of the original image) into in-memory
COCO objects and goes through ``COCOeval.evaluate``. COCOeval matches every
(image, category) on its own, so the per-image results of all chunks, kept in
image order, are exactly what one ``evaluate`` over all images would give;
``COCOeval.accumulate`` and ``summarize`` then run once at the end. Nothing
here re-implements AP. What stays in memory is COCOeval's per-image match
lists, reduced to the four arrays ``accumulate`` reads.

A label on one side only is still reported: with ground truth and no
predictions its AP is 0.0; with predictions and no ground truth COCOeval has
nothing to average (-1), reported as None.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import multiprocessing
import os
from collections import defaultdict, deque
from collections.abc import Collection, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backend.evaluate.pairs import ImagePair, score_of
from converters.coco import CocoCategory, CocoImage, to_coco, to_coco_results
from converters.keypoint_sets import guess_keypoint_set
from converters.prediction import Prediction, RegionType

log = logging.getLogger(__name__)

IOU_TYPES = ("bbox", "segm", "keypoints")

CHUNK_IMAGES = 500
"""Images evaluated per COCOeval run: large enough that COCOeval's fixed cost
per run is small (bench/bench_evaluate.py), small enough that one chunk's
COCO objects stay a few MB."""

EVAL_PROCESSES = max(0, min(4, (os.cpu_count() or 1) - 1))
"""Processes running ``COCOeval.evaluate`` on chunks while this one reads and
matches the next images: one core is left to this process, and past four
the per-chunk pickling costs more than it saves. 0 (one core) evaluates
inline. Only used once a second chunk exists, so small runs never start one."""

CHUNKS_IN_FLIGHT = 2
"""Chunks queued per evaluating process: enough to keep it busy, few enough
that queued chunks do not pile up in memory when reading is faster."""

STAT_INDEX = {
    "bbox": {"ap": 0, "ap50": 1, "ar": 8},
    "segm": {"ap": 0, "ap50": 1, "ar": 8},
    "keypoints": {"ap": 0, "ap50": 1, "ar": 5},
}
"""Where ``COCOeval.summarize`` puts AP (IoU/OKS .50:.95), AP50 and AR (all
areas; 100 detections for bbox/segm, 20 for keypoints: COCO's own maxDets)."""

ALL_AREAS = "all"
"""The only area range evaluated: the report gives AP/AR over all object
sizes, and COCO's small/medium/large ranges would each cost one more
``evaluateImg`` per image and label. ``summarize`` reports those as -1."""

EVAL_KEYS = ("dtScores", "dtMatches", "dtIgnore", "gtIgnore")
"""What ``COCOeval.accumulate`` reads of each per-image result; the rest
(ids, area range, matched ids) is dropped to keep the match lists small."""

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


NO_SCORES = ApScores(None, None, None)


@dataclass
class CocoApReport:
    """Overall and per-label scores of one iouType, and region counts per label."""

    iou_type: str
    overall: ApScores
    per_label: dict[str, ApScores] = field(default_factory=dict)
    gt_counts: dict[str, int] = field(default_factory=dict)
    pred_counts: dict[str, int] = field(default_factory=dict)
    dropped_joints: int = 0
    """Keypoints: joints left out because their category's joints were
    fixed without them (see :meth:`CocoAccumulator._fix_joints`)."""


def _params(evaluator: COCOeval) -> Any:
    params = evaluator.params
    index = params.areaRngLbl.index(ALL_AREAS)
    params.areaRng = [params.areaRng[index]]
    params.areaRngLbl = [ALL_AREAS]
    return params


def _sigmas(joints: int) -> np.ndarray | None:
    """The OKS sigmas for a category of ``joints`` joints (None: COCOeval's)."""
    return None if joints == COCO_PERSON_JOINTS else np.full(joints, OKS_SIGMA)


def _scores(stats: Any, iou_type: str) -> ApScores:
    def value(name: str) -> float | None:
        figure = float(stats[STAT_INDEX[iou_type][name]])
        return None if figure == UNDEFINED else figure

    return ApScores(value("ap"), value("ap50"), value("ar"))


class CocoAccumulator:
    """COCOeval over images added one at a time, for one iouType
    (``bbox``, ``segm`` or ``keypoints``)."""

    def __init__(
        self,
        iou_type: str = "bbox",
        chunk_images: int = CHUNK_IMAGES,
        processes: int = EVAL_PROCESSES,
    ):
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
        self.iou_type = iou_type
        self.chunk_images = chunk_images
        self.processes = processes
        self.categories: list[CocoCategory] = []
        self.gt_counts: dict[str, int] = {}
        self.pred_counts: dict[str, int] = {}
        self._chunk: list[CocoImage] = []
        self._chunk_gt: list[CocoImage] = []
        self._images = 0
        self._evals: dict[int, list[dict[str, np.ndarray]]] = defaultdict(list)
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[tuple[Future | None, tuple]] = deque()
        self._warned = False
        self.dropped_joints = 0

    def add(self, pair: ImagePair) -> None:
        """Take one image's regions of this iouType (the others are ignored)."""
        gt = [p for p in pair.ground_truth if _evaluated(p, self.iou_type)]
        dt = [p for p in pair.predictions if _evaluated(p, self.iou_type)]
        if not gt and not dt:
            return  # COCOeval gives such an image nothing to count
        for p in gt:
            self.gt_counts[p.label] = self.gt_counts.get(p.label, 0) + 1
            self.pred_counts.setdefault(p.label, 0)
        for p in dt:
            self.gt_counts.setdefault(p.label, 0)
            self.pred_counts[p.label] = self.pred_counts.get(p.label, 0) + 1
        self._images += 1
        size = (pair.key, pair.width, pair.height)
        self._chunk_gt.append(CocoImage(*size, gt, self._images))
        self._chunk.append(CocoImage(*size, dt, self._images))
        if len(self._chunk) >= self.chunk_images:
            self._flush()

    def _flush(self, final: bool = False) -> None:
        """Evaluate the chunk: in a worker process when there is one (and
        this is not the only chunk), else here."""
        if not self._chunk:
            return
        chunk = (*self._datasets(), self.iou_type, self._groups())
        self._chunk, self._chunk_gt = [], []
        if self._pool is None and not final and self.processes:
            # spawn, not fork: the caller may hold threads (a server, torch)
            spawn = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.processes, mp_context=spawn)
        if self._pool is None:
            self._keep(evaluate_chunk(*chunk))
            return
        try:
            self._pending.append((self._pool.submit(evaluate_chunk, *chunk), chunk))
        except BrokenProcessPool:
            self._pending.append((None, chunk))
        while len(self._pending) > CHUNKS_IN_FLIGHT * self.processes:
            self._collect()

    def _collect(self) -> None:
        """The oldest chunk in flight. A worker that could not start (spawn
        re-imports ``__main__``, which fails for a script read from stdin)
        leaves its chunks to be evaluated here: slower, same figures."""
        future, chunk = self._pending.popleft()
        try:
            if future is not None:
                self._keep(future.result())
                return
        except BrokenProcessPool:
            if not self._warned:
                log.warning(
                    "COCOeval worker process failed to start; evaluating in "
                    "this process"
                )
                self._warned = True
        self._keep(evaluate_chunk(*chunk))

    def _keep(self, evals: dict[int, list[dict[str, np.ndarray]]]) -> None:
        for cat_id, entries in evals.items():
            self._evals[cat_id].extend(entries)

    def _drain(self) -> None:
        """Wait for the chunks in flight, in order (image order per category
        is what one COCOeval run over all images would have)."""
        try:
            while self._pending:
                self._collect()
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None

    def _datasets(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The chunk's ground-truth dataset and results list; categories keep
        their ids (and keypoint joints) from chunk to chunk."""
        if self.iou_type == "bbox":
            return self._box_datasets()
        if self.iou_type == "keypoints":
            self._fix_joints()
        gt_dataset = to_coco(self._chunk_gt, self.categories, add_unknown=True)
        dt_dataset = to_coco(self._chunk, _fixed(gt_dataset), add_unknown=True)
        self.categories = _fixed(dt_dataset)
        gt_dataset["categories"] = dt_dataset["categories"]
        return gt_dataset, to_coco_results(dt_dataset, self.iou_type)

    def _fix_joints(self) -> None:
        """A keypoint category takes the joints of all its instances in the
        chunk that first shows it (annotators of a custom set may place
        different subsets), or the known set covering them. COCOeval needs one
        joint list per category for the whole run, so a joint a later instance
        adds is dropped from it and counted (``dropped_joints``)."""
        known = {c.name for c in self.categories}
        union: dict[str, dict[str, None]] = {}
        for image in (*self._chunk_gt, *self._chunk):
            for p in image.predictions:
                if p.label not in known:
                    union.setdefault(p.label, {}).update(
                        dict.fromkeys(p.keypoints or {})
                    )
        for label, names in union.items():
            if not names:
                continue  # no joints named yet: to_coco waits for some
            kp_set = guess_keypoint_set(names)
            if kp_set is not None and set(names) <= set(kp_set.joints):
                category = CocoCategory.from_keypoint_set(kp_set, label)
            else:
                category = CocoCategory(label, tuple(names))
            self.categories.append(category)
        allowed = {c.name: set(c.keypoints) for c in self.categories if c.keypoints}
        for image in (*self._chunk_gt, *self._chunk):
            for n, p in enumerate(image.predictions):
                joints = allowed.get(p.label)
                extra = [j for j in p.keypoints or {} if joints and j not in joints]
                if extra:
                    self.dropped_joints += len(extra)
                    kept = {j: xy for j, xy in p.keypoints.items() if j in joints}
                    image.predictions[n] = p.with_(keypoints=kept)

    def _box_datasets(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """What ``COCOeval(iouType="bbox")`` reads, written directly: the box
        (xywh, pixels), area, category and crowd flag. :func:`to_coco` writes
        the same figures after checking and converting every region type,
        which costs more than the evaluation of boxes itself."""
        ids = {c.name: n for n, c in enumerate(self.categories, start=1)}

        def category(label: str) -> int:
            if label not in ids:
                self.categories.append(CocoCategory(label))
                ids[label] = len(self.categories)
            return ids[label]

        images, annotations, results = [], [], []
        for gt_image, dt_image in zip(self._chunk_gt, self._chunk, strict=True):
            image_id = gt_image.id
            images.append(
                {"id": image_id, "width": gt_image.width, "height": gt_image.height}
            )
            for p in gt_image.predictions:
                x0, y0, x1, y1 = p.bbox
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category(p.label),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                        "iscrowd": 0,
                    }
                )
            for p in dt_image.predictions:
                x0, y0, x1, y1 = p.bbox
                results.append(
                    {
                        "image_id": image_id,
                        "category_id": category(p.label),
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "score": score_of(p),
                    }
                )
        categories = [
            {"id": n, "name": c.name} for n, c in enumerate(self.categories, start=1)
        ]
        dataset = {
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        return dataset, results

    def _groups(self) -> list[tuple[list[int], np.ndarray | None]]:
        """Category ids evaluated together: all of them, except keypoints,
        where one OKS sigma vector serves one joint count."""
        ids = list(range(1, len(self.categories) + 1))
        if self.iou_type != "keypoints":
            return [(ids, None)]
        by_joints: dict[int, list[int]] = defaultdict(list)
        for cat_id, category in zip(ids, self.categories, strict=True):
            by_joints[len(category.keypoints or ())].append(cat_id)
        return [(cats, _sigmas(joints)) for joints, cats in by_joints.items()]

    def _summary(self, cat_ids: list[int], evaluated: COCOeval) -> ApScores:
        """COCOeval's summarize over ``cat_ids`` (positions in the accumulated
        arrays), as a run over those categories alone would give it."""
        full = evaluated.eval
        index = [cat_id - 1 for cat_id in cat_ids]
        evaluated.eval = {
            **full,
            "precision": full["precision"][:, :, index],
            "recall": full["recall"][:, index],
        }
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                evaluated.summarize()
        finally:
            evaluated.eval = full
        return _scores(evaluated.stats, self.iou_type)

    def _accumulated(self) -> COCOeval:
        """One COCOeval holding every image's match lists, accumulated."""
        evaluator = COCOeval(iouType=self.iou_type)
        params = _params(evaluator)
        ids = list(range(1, len(self.categories) + 1))
        longest = max((len(v) for v in self._evals.values()), default=0)
        params.catIds = ids
        params.imgIds = list(range(longest))
        # accumulate reads evalImgs[category * images + image]: pad with None
        evaluator.evalImgs = [
            e
            for cat_id in ids
            for e in (self._evals[cat_id] + [None] * longest)[:longest]
        ]
        evaluator._paramsEval = copy.deepcopy(params)
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.accumulate()
        return evaluator

    def result(self, overall_without: Collection[str] = ()) -> CocoApReport:
        """The scores (evaluates what is left of the last chunk); call once,
        after the last :meth:`add`. ``overall_without``: labels left out of
        the overall figures (each still has its own)."""
        try:
            self._flush(final=True)
        finally:
            self._drain()
        names = [c.name for c in self.categories]
        report = CocoApReport(
            self.iou_type,
            NO_SCORES,
            {},
            dict(self.gt_counts),
            dict(self.pred_counts),
            self.dropped_joints,
        )
        if not names:
            return report
        evaluator = self._accumulated()
        groups = self._groups()
        if len(groups) == 1:  # keypoint sets of different sizes: no common OKS
            cat_ids = [
                cat_id
                for cat_id in groups[0][0]
                if names[cat_id - 1] not in overall_without
            ]
            report.overall = self._summary(cat_ids, evaluator) if cat_ids else NO_SCORES
        report.per_label = {
            name: self._summary([cat_id], evaluator)
            for cat_id, name in enumerate(names, start=1)
        }
        return report


def evaluate_chunk(
    gt_dataset: dict[str, Any],
    results: list[dict[str, Any]],
    iou_type: str,
    groups: list[tuple[list[int], np.ndarray | None]],
) -> dict[int, list[dict[str, np.ndarray]]]:
    """``COCOeval.evaluate`` over one chunk (run in a worker process or here):
    per category id, the per-image results in image order, reduced to
    :data:`EVAL_KEYS`."""
    evals: dict[int, list[dict[str, np.ndarray]]] = defaultdict(list)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = gt_dataset
        ground_truth.createIndex()
        if results:
            detections = ground_truth.loadRes(results)
        else:  # loadRes cannot read an empty list
            detections = COCO()
            detections.dataset = {**gt_dataset, "annotations": []}
            detections.createIndex()
        for cat_ids, sigmas in groups:
            evaluator = COCOeval(ground_truth, detections, iou_type)
            params = _params(evaluator)
            params.catIds = cat_ids
            if sigmas is not None:
                params.kpt_oks_sigmas = sigmas
            evaluator.evaluate()
            # evalImgs: category-major, then images (one area range)
            per_cat = len(params.imgIds)
            for n, cat_id in enumerate(params.catIds):
                for e in evaluator.evalImgs[n * per_cat : (n + 1) * per_cat]:
                    if e is not None:
                        evals[cat_id].append({k: e[k] for k in EVAL_KEYS})
    return dict(evals)


def _fixed(dataset: dict[str, Any]) -> list[CocoCategory]:
    """The categories of a written dataset, joints as its instances fixed
    them, in id order: the next chunk keeps the same ids and joints."""
    by_id = sorted(dataset["categories"], key=lambda c: c["id"])
    categories = []
    for c in by_id:
        joints = c.get("keypoints")
        names = tuple(joints) if joints else None
        skeleton = tuple(
            (joints[a - 1], joints[b - 1]) for a, b in c.get("skeleton") or ()
        )
        categories.append(CocoCategory(c["name"], names, skeleton if names else ()))
    return categories


def coco_ap(pairs: Iterable[ImagePair], iou_type: str = "bbox") -> CocoApReport:
    """COCOeval over ``pairs`` for ``iou_type`` (``bbox``, ``segm`` or
    ``keypoints``): overall (COCOeval's mean over labels with ground truth) and
    for each label alone. Keypoint categories with different joint counts have
    no overall OKS AP (None); each label still has its own."""
    accumulator = CocoAccumulator(iou_type)
    for pair in pairs:
        accumulator.add(pair)
    return accumulator.result()
