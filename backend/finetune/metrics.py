"""Held-out figures of a fine-tune, before and after: ``rexlabel evaluate``'s
report (``backend.evaluate.report``) plus the mean labelled IoU per label.

- ``new``: held-out annotations (``val``): how well the run learnt the
  project;
- ``kept``: held-out replay (``replay_answers`` marked ``held_out``): the base
  model's own answers on the project's images, so 1.0 means nothing was
  forgotten and the drop is the forgetting.

**Mean labelled IoU** of a label: over its ground-truth regions, the best IoU
with a prediction *of the same label* (0 when none): a box around the right
object under another name counts 0, as it would in the project. Regions are
compared by box (points have no area and are left to the report's hit rate).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from backend.evaluate.matching import iou_matrix
from backend.evaluate.pairs import ImagePair
from backend.evaluate.report import build_report
from common.finetune_data import Record
from converters.prediction import Prediction, RegionType, predictions_from_dicts

AREA_TYPES = (RegionType.BOX, RegionType.POLYGON, RegionType.KEYPOINT)
"""Region types the mean IoU compares (by box)."""
SUMMARY_KEYS = ("ap", "ap50", "ar")
"""Overall figures of the evaluate report kept in the run's metrics."""


def _boxed(p: Prediction) -> Prediction:
    if p.type in (RegionType.BOX, RegionType.KEYPOINT):
        return p.with_(type=RegionType.BOX, keypoints=None, mask=None)
    xs = [x for x, _ in p.coords]
    ys = [y for _, y in p.coords]
    return p.with_(
        type=RegionType.BOX, coords=(min(xs), min(ys), max(xs), max(ys)), mask=None
    )


def mean_labelled_iou(pairs: Sequence[ImagePair]) -> dict[str, dict[str, float]]:
    """``label -> {"mean_iou", "regions"}`` over ground-truth regions with area."""
    sums: dict[str, list[float]] = defaultdict(list)
    for pair in pairs:
        truth = [_boxed(p) for p in pair.ground_truth if p.type in AREA_TYPES]
        found = [_boxed(p) for p in pair.predictions if p.type in AREA_TYPES]
        for label in {p.label for p in truth}:
            mine = [p for p in truth if p.label == label]
            theirs = [p for p in found if p.label == label]
            ious = iou_matrix(theirs, mine) if theirs else None
            for column in range(len(mine)):
                best = float(ious[:, column].max()) if ious is not None else 0.0
                sums[label].append(best)
    return {
        label: {"mean_iou": sum(values) / len(values), "regions": len(values)}
        for label, values in sorted(sums.items())
    }


def pairs_of(records: Sequence[Record], answers: Sequence[Any]) -> list[ImagePair]:
    """One pair per record: its regions against the answer's."""
    return [
        ImagePair(
            key=f"{record.task_id}:{n}",
            width=record.width,
            height=record.height,
            ground_truth=predictions_from_dicts(record.regions),
            predictions=predictions_from_dicts(answer.regions),
        )
        for n, (record, answer) in enumerate(zip(records, answers, strict=True))
    ]


def heldout_figures(
    records: Sequence[Record], answers: Sequence[Any]
) -> dict[str, Any]:
    """The figures of one held-out set (empty set: ``{"examples": 0}``)."""
    if not records:
        return {"examples": 0}
    pairs = pairs_of(records, answers)
    ious = mean_labelled_iou(pairs)
    report = build_report(pairs)
    overall = report.get("overall", {})
    return {
        "examples": len(records),
        "mean_iou": (
            sum(v["mean_iou"] * v["regions"] for v in ious.values())
            / max(1, sum(v["regions"] for v in ious.values()))
            if ious
            else None
        ),
        "labels": ious,
        **{key: overall.get(key) for key in SUMMARY_KEYS},
        "unreadable_answers": sum(1 for a in answers if getattr(a, "error", None)),
    }
