"""The metrics over paired images as one JSON-able report, and a short table.

:class:`Evaluation` takes images one at a time (:meth:`Evaluation.add`), so a
project of any size streams through it: what it keeps grows with the labels
and with the per-label match lists (a score and an outcome per prediction,
COCOeval's per-image match arrays), never with whole tasks.

Per label and overall: COCO AP/AP50/AR (boxes and polygons by box; masks and
polygons as ``segm``; keypoint instances by OKS), precision/recall/F1 at the
recommended score threshold (best F1) and the curve it was picked from,
misses, false positives and wrong labels, the confusion matrix; effort shares;
OCR CER/WER when ground truth has text; point hit rate when points were
predicted; PCK@0.1 and per-joint accuracy of keypoints; mean mask IoU.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from backend.evaluate.coco_ap import ApScores, CocoAccumulator
from backend.evaluate.effort import EffortTally
from backend.evaluate.keypoints import KeypointAccuracy
from backend.evaluate.masks import MaskIoU, has_area
from backend.evaluate.matching import BACKGROUND, ConfusionMatrix, match_image
from backend.evaluate.ocr import TextTally
from backend.evaluate.pairs import ImagePair
from backend.evaluate.points import PointTally
from backend.evaluate.thresholds import LabelThresholds, ThresholdPoint, ThresholdTally
from converters.prediction import RegionType

CURVE_POINTS = 101
"""Points of each label's precision/recall curve kept in the report: the
curve has one point per distinct score (up to one per prediction), and a
hundred steps draw it as smoothly as a plot can show; the recommended point
is always among them."""

BOX_FIGURES = (
    "ap",
    "ap50",
    "ar",
    "recommended_threshold",
    "at_threshold",
    "misses",
    "false_positives",
    "wrong_labels",
)
"""What a label scored only by points has none of (its ``points_only``
entry): its ground-truth regions were never meant to be matched by boxes."""

GROUND_TRUTH_ONLY, PREDICTIONS_ONLY = "ground_truth", "predictions"
"""``only_in`` of a label found on one side only."""


def _ap(scores: ApScores | None) -> dict[str, float | None]:
    if scores is None:
        return {"ap": None, "ap50": None, "ar": None}
    return {"ap": scores.ap, "ap50": scores.ap50, "ar": scores.ar}


def _prf(tp: int, fp: int, misses: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + misses) if tp + misses else 0.0
    f1 = 2 * tp / (2 * tp + fp + misses) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _curve(entry: LabelThresholds) -> list[dict[str, float]]:
    """At most :data:`CURVE_POINTS` points, evenly spread over the curve,
    always with its ends and the recommended point; highest threshold first."""
    curve = entry.curve
    if len(curve) > CURVE_POINTS:
        step = (len(curve) - 1) / (CURVE_POINTS - 1)
        keep = {round(n * step) for n in range(CURVE_POINTS)}
        kept = [p for n, p in enumerate(curve) if n in keep]
        if entry.recommended is not None and entry.recommended not in kept:
            kept = sorted([*kept, entry.recommended], key=lambda p: -p.threshold)
        curve = kept
    return [
        {
            "threshold": p.threshold,
            "precision": p.precision,
            "recall": p.recall,
            "f1": p.f1,
        }
        for p in curve
    ]


def _at(point: ThresholdPoint | None, entry: LabelThresholds) -> tuple[int, int, int]:
    """(true positives, false positives, misses) at the recommendation; with
    none, everything predicted is kept and nothing was found."""
    if point is not None:
        return point.true_positives, point.false_positives, point.misses
    last = entry.curve[-1] if entry.curve else None
    return 0, last.false_positives if last else 0, entry.ground_truth


class Evaluation:
    """Every figure of the report, fed one :class:`ImagePair` at a time."""

    def __init__(self) -> None:
        self.images = 0
        self.gt_counts: Counter = Counter()
        self.pred_counts: Counter = Counter()
        self.misses: Counter = Counter()
        self.false_positives: Counter = Counter()
        self.wrong_labels: Counter = Counter()
        self.thresholds = ThresholdTally()
        self.effort = EffortTally()
        self.confusion = ConfusionMatrix([])
        self.text = TextTally()
        self.points = PointTally()
        self.keypoints = KeypointAccuracy()
        self.masks = MaskIoU()
        self.coco = {t: CocoAccumulator(t) for t in ("bbox", "segm", "keypoints")}
        self.region_preds: Counter = Counter()
        self.point_preds: Counter = Counter()
        self.unscored: Counter = Counter()
        self.seen: set[str] = set()
        """What kinds of region appeared: "text", "points", "segm", "keypoints"."""

    def add(self, pair: ImagePair) -> None:
        """Score one image (pixels of its original size)."""
        self.images += 1
        self.gt_counts.update(p.label for p in pair.ground_truth)
        self.pred_counts.update(p.label for p in pair.predictions)
        for p in pair.predictions:
            if p.type is RegionType.POINT:
                self.point_preds[p.label] += 1
                continue
            self.region_preds[p.label] += 1
            if p.score is None:
                self.unscored[p.label] += 1
        m = match_image(pair)
        for j in m.misses:
            self.misses[m.gt_labels[j]] += 1
        for fp in m.false_positives:
            self.false_positives[fp.label] += 1
            if fp.wrong_label is not None:
                self.wrong_labels[fp.label] += 1
        self.thresholds.add(m)
        self.effort.add(m)
        self.confusion.add(m)
        regions = (*pair.ground_truth, *pair.predictions)
        if any(r.text is not None for r in pair.ground_truth):
            self.seen.add("text")
            self.text.add(pair, m)
        if any(r.type is RegionType.POINT for r in pair.predictions):
            self.seen.add("points")
        self.points.add(pair)
        if any(r.type is RegionType.KEYPOINT for r in regions):
            self.seen.add("keypoints")
            self.keypoints.add(pair)
        if any(has_area(r) for r in regions):
            self.seen.add("segm")
            self.masks.add(pair, m)
        for accumulator in self.coco.values():
            accumulator.add(pair)

    def report(self) -> dict[str, Any]:
        """The report as a JSON-able dict (see the module docstring)."""
        # labels only pointed at: their regions were found by points, not boxes
        points_only = {n for n in self.point_preds if not self.region_preds[n]}
        # labels whose predictions carry no score: nothing to rank by
        unscored = {n for n, k in self.region_preds.items() if k == self.unscored[n]}
        bbox = self.coco["bbox"].result(overall_without=points_only)
        thresholds = self.thresholds.result()
        work = self.effort.result(without=points_only)
        labels: dict[str, Any] = {}
        total: Counter = Counter()
        for label in sorted({*self.gt_counts, *self.pred_counts}):
            gt, pred = self.gt_counts[label], self.pred_counts[label]
            entry = {
                "ground_truth": gt,
                "predictions": pred,
                "only_in": None
                if gt and pred
                else (GROUND_TRUTH_ONLY if gt else PREDICTIONS_ONLY),
                "points_only": label in points_only,
                "unscored": label in unscored,
            }
            labels[label] = entry
            if label in points_only:  # scored in the points section
                entry.update(dict.fromkeys(BOX_FIGURES), curve=[])
                continue
            scores = thresholds.get(label) or LabelThresholds(label, 0)
            recommended = None if label in unscored else scores.recommended
            kept = (
                scores.curve[-1] if label in unscored and scores.curve else recommended
            )
            tp, fp, miss = _at(kept, scores)
            total.update({"tp": tp, "fp": fp, "misses": miss})
            entry.update(
                _ap(bbox.per_label.get(label)),
                recommended_threshold=recommended.threshold if recommended else None,
                at_threshold={
                    "true_positives": tp,
                    "false_positives": fp,
                    "misses": miss,
                    **_prf(tp, fp, miss),
                },
                misses=self.misses[label],
                false_positives=self.false_positives[label],
                wrong_labels=self.wrong_labels[label],
                curve=_curve(scores),
            )
        boxed = [e for e in labels.values() if not e["points_only"]]
        overall: dict[str, Any] = {
            "images": self.images,
            "ground_truth": sum(self.gt_counts.values()),
            "predictions": sum(self.pred_counts.values()),
            **_ap(bbox.overall),
            "at_threshold": {
                "true_positives": total["tp"],
                "false_positives": total["fp"],
                "misses": total["misses"],
                **_prf(total["tp"], total["fp"], total["misses"]),
            },
            "misses": sum(e["misses"] for e in boxed),
            "false_positives": sum(e["false_positives"] for e in boxed),
            "wrong_labels": sum(e["wrong_labels"] for e in boxed),
            "effort": {
                "unchanged_share": work.unchanged_share,
                "edited_share": work.edited_share,
                "deleted_share": work.deleted_share,
                "added_share": work.added_share,
            },
        }
        report: dict[str, Any] = {
            "overall": overall,
            "labels": labels,
            "confusion": {
                "axis": [*self.confusion.labels, BACKGROUND],
                "rows": self.confusion.rows(),
            },
        }
        self._extras(report)
        return report

    def _extras(self, report: dict[str, Any]) -> None:
        """The sections only some data has: OCR, points, masks, keypoints."""
        overall, labels = report["overall"], report["labels"]
        if "text" in self.seen:
            text, per_label = self.text.result()
            overall["ocr"] = {"pairs": text.pairs, "cer": text.cer, "wer": text.wer}
            for label, errors in per_label.items():
                labels[label]["ocr"] = {
                    "pairs": errors.pairs,
                    "cer": errors.cer,
                    "wer": errors.wer,
                }
        if "points" in self.seen:
            hits = self.points.result()
            overall["point_hit_rate"] = hits.hit_rate()
            overall["false_points"] = sum(hits.false_points.values())
            for label in {*hits.regions, *hits.false_points, *hits.hits}:
                labels[label]["point_hit_rate"] = hits.hit_rate(label)
                labels[label]["false_points"] = hits.false_points[label]
        if "segm" in self.seen:
            segm = self.coco["segm"].result()
            overall["segm"] = {
                **_ap(segm.overall),
                **self.masks.overall(),
            }
            masks = self.masks.per_label()
            for label in {*segm.per_label, *masks}:
                labels[label]["segm"] = {
                    **_ap(segm.per_label.get(label)),
                    **masks.get(label, {"mean_iou": None, "matched": 0}),
                }
        if "keypoints" in self.seen:
            oks = self.coco["keypoints"].result()
            overall["keypoints"] = {
                **_ap(oks.overall),
                **self.keypoints.overall(),
            }
            accuracy = self.keypoints.per_label()
            for label in {*oks.per_label, *accuracy}:
                labels[label]["keypoints"] = {
                    **_ap(oks.per_label.get(label)),
                    **accuracy.get(label, {}),
                }


def build_report(pairs: Iterable[ImagePair]) -> dict[str, Any]:
    """Every figure over ``pairs`` (any iterable: consumed once, streamed)."""
    evaluation = Evaluation()
    for pair in pairs:
        evaluation.add(pair)
    return evaluation.report()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per label and the overall row. Labels come
    from task data: control characters show escaped (``common.logs.printable``),
    never reaching the terminal."""
    from common.logs import printable

    head = (
        "label",
        "gt",
        "pred",
        "AP",
        "AP50",
        "AR",
        "thr",
        "P",
        "R",
        "F1",
        "miss",
        "FP",
    )
    rows = [head]
    entries = [*report["labels"].items(), ("(all)", report["overall"])]
    for name, e in entries:
        at = e.get("at_threshold") or {}
        rows.append(
            tuple(
                printable(_fmt(v))
                for v in (
                    name,
                    e.get("ground_truth"),
                    e.get("predictions"),
                    e.get("ap"),
                    e.get("ap50"),
                    e.get("ar"),
                    e.get("recommended_threshold"),
                    at.get("precision"),
                    at.get("recall"),
                    at.get("f1"),
                    e.get("misses"),
                    e.get("false_positives"),
                )
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows
    ]
    return "\n".join(line.rstrip() for line in lines)
