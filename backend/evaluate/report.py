"""The metrics over paired images as one JSON-able report, and a short table.

Per label and overall: COCO AP/AP50/AR (boxes), precision/recall/F1 at the
recommended score threshold (best F1), misses, false positives and wrong
labels; overall effort shares; OCR CER/WER when ground truth has text; point
hit rate when there are predicted points.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from backend.evaluate.coco_ap import ApScores, coco_ap
from backend.evaluate.effort import effort
from backend.evaluate.matching import match_image
from backend.evaluate.ocr import ocr_errors
from backend.evaluate.pairs import ImagePair
from backend.evaluate.points import point_hits
from backend.evaluate.thresholds import label_thresholds
from converters.prediction import RegionType


def _ap(scores: ApScores | None) -> dict[str, float | None]:
    if scores is None:
        return {"ap": None, "ap50": None, "ar": None}
    return {"ap": scores.ap, "ap50": scores.ap50, "ar": scores.ar}


def _prf(tp: int, fp: int, misses: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + misses) if tp + misses else 0.0
    f1 = 2 * tp / (2 * tp + fp + misses) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def build_report(pairs: Sequence[ImagePair]) -> dict[str, Any]:
    """Every figure over ``pairs`` as a JSON-able dict."""
    pairs = list(pairs)
    matches = [match_image(p) for p in pairs]
    has_regions = any(
        r.type is not RegionType.POINT for p in pairs for r in p.ground_truth
    )
    ap = coco_ap(pairs, "bbox") if has_regions else None
    thresholds = label_thresholds(matches)
    misses: Counter = Counter()
    false_positives: Counter = Counter()
    wrong_labels: Counter = Counter()
    for m in matches:
        for j in m.misses:
            misses[m.gt_labels[j]] += 1
        for fp in m.false_positives:
            false_positives[fp.label] += 1
            if fp.wrong_label is not None:
                wrong_labels[fp.label] += 1
    labels: dict[str, Any] = {}
    total = Counter()
    for label, entry in thresholds.items():
        rec = entry.recommended
        if rec is not None:
            tp, fp, miss = rec.true_positives, rec.false_positives, rec.misses
        else:
            last = entry.curve[-1] if entry.curve else None
            tp, fp = 0, last.false_positives if last else 0
            miss = entry.ground_truth
        total.update({"tp": tp, "fp": fp, "misses": miss})
        labels[label] = {
            "ground_truth": entry.ground_truth,
            **_ap(ap.per_label.get(label) if ap else None),
            "recommended_threshold": rec.threshold if rec else None,
            "at_threshold": {
                "true_positives": tp,
                "false_positives": fp,
                "misses": miss,
                **_prf(tp, fp, miss),
            },
            "misses": misses[label],
            "false_positives": false_positives[label],
            "wrong_labels": wrong_labels[label],
        }
    work = effort(matches)
    overall: dict[str, Any] = {
        "images": len(pairs),
        "ground_truth": sum(len(p.ground_truth) for p in pairs),
        "predictions": sum(len(p.predictions) for p in pairs),
        **_ap(ap.overall if ap else None),
        "at_threshold": {
            "true_positives": total["tp"],
            "false_positives": total["fp"],
            "misses": total["misses"],
            **_prf(total["tp"], total["fp"], total["misses"]),
        },
        "misses": sum(misses.values()),
        "false_positives": sum(false_positives.values()),
        "wrong_labels": sum(wrong_labels.values()),
        "effort": {
            "unchanged_share": work.unchanged_share,
            "edited_share": work.edited_share,
            "deleted_share": work.deleted_share,
            "added_share": work.added_share,
        },
    }
    report: dict[str, Any] = {"overall": overall, "labels": labels}
    if any(r.text is not None for p in pairs for r in p.ground_truth):
        text, per_label = ocr_errors(pairs, matches)
        overall["ocr"] = {"pairs": text.pairs, "cer": text.cer, "wer": text.wer}
        for label, errors in per_label.items():
            labels.setdefault(label, {})["ocr"] = {
                "pairs": errors.pairs,
                "cer": errors.cer,
                "wer": errors.wer,
            }
    if any(r.type is RegionType.POINT for p in pairs for r in p.predictions):
        hits = point_hits(pairs)
        overall["point_hit_rate"] = hits.hit_rate()
        for label in hits.regions:
            labels.setdefault(label, {})["point_hit_rate"] = hits.hit_rate(label)
    return report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: one row per label and the overall row."""
    head = ("label", "gt", "AP", "AP50", "AR", "thr", "P", "R", "F1", "miss", "FP")
    rows = [head]
    entries = [*report["labels"].items(), ("(all)", report["overall"])]
    for name, e in entries:
        at = e.get("at_threshold") or {}
        rows.append(
            tuple(
                _fmt(v)
                for v in (
                    name,
                    e.get("ground_truth"),
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
