"""Report dicts for the HTML report's tests.

``built_report()``: the real ``build_report`` over hand-made images (whatever
keys report.py writes today). ``full_report()``: written by hand to the whole
report.json schema (curves, confusion matrix, per-label prediction counts,
``only_in``, masks, keypoints, OCR, points), so every part of the page is drawn.
Both carry :data:`HOSTILE` as a label name.
"""

from __future__ import annotations

from typing import Any

from backend.evaluate.report import build_report
from tests.backend.evaluate.helpers import box, pair

HOSTILE = "<script>alert(1)</script>"
"""A label name from untrusted data that must show as text, never run."""

HOSTILE_FILE = 'gt "export" <img src=x onerror=alert(2)>.json'
"""A ground-truth file name that must show as text too."""


def built_report() -> dict[str, Any]:
    """build_report over two 100x100 images: car found twice and missed once,
    a person found, a sign labelled person, and a hostile-label box on nothing."""
    first = pair(
        [
            box("car", 0, 0, 20, 20),
            box("car", 40, 40, 60, 60),
            box("sign", 70, 0, 90, 20),
        ],
        [
            box("car", 0, 0, 20, 20, score=0.9),
            box("car", 41, 40, 61, 60, score=0.6),
            box("person", 70, 0, 90, 20, score=0.5),  # the sign, wrong label
        ],
        key="a.jpg",
    )
    second = pair(
        [box("car", 0, 50, 30, 80), box("person", 50, 10, 70, 90)],
        [
            box("person", 50, 10, 70, 90, score=0.8),
            box(HOSTILE, 80, 80, 95, 95, score=0.3),
        ],
        key="b.jpg",
    )
    report = build_report([first, second])
    report["inputs"] = {
        "ground_truth": HOSTILE_FILE,
        "predictions": "labels.jsonl",
        "ground_truth_skipped": 1,
    }
    return report


NEWER_KEYS = ("curve", "predictions", "only_in")
"""Per-label keys report.py is gaining (with the top-level "confusion")."""


def without_newer_keys(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` without :data:`NEWER_KEYS` and "confusion": a report as
    build_report wrote it before them, whichever report.py runs."""
    report.pop("confusion", None)
    for entry in report["labels"].values():
        for key in NEWER_KEYS:
            entry.pop(key, None)
    return report


def _point(threshold: float, tp: int, fp: int, n_gt: int) -> dict[str, float]:
    misses = n_gt - tp
    return {
        "threshold": threshold,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / n_gt if n_gt else 0.0,
        "f1": 2 * tp / (2 * tp + fp + misses) if tp else 0.0,
    }


def _at(tp: int, fp: int, n_gt: int) -> dict[str, Any]:
    p = _point(0.0, tp, fp, n_gt)
    return {
        "true_positives": tp,
        "false_positives": fp,
        "misses": n_gt - tp,
        "precision": p["precision"],
        "recall": p["recall"],
        "f1": p["f1"],
    }


CAR_CURVE = [(0.9, 5, 0), (0.7, 8, 1), (0.5, 9, 3), (0.2, 10, 8)]
"""(threshold, true positives, false positives) of 10 ground-truth cars; the
best F1 is at 0.7: 2*8 / (16 + 1 + 2) = 16/19."""

PERSON_CURVE = [(0.8, 2, 0), (0.4, 3, 2)]
"""Of 4 people; F1 at 0.8 is 4/6, at 0.4 is 6/9: equal, the higher wins."""


def full_report() -> dict[str, Any]:
    """Every key of the report.json schema, figures consistent by hand."""
    car = {
        "ground_truth": 10,
        "predictions": 18,
        "ap": 0.612,
        "ap50": 0.804,
        "ar": 0.655,
        "recommended_threshold": 0.7,
        "at_threshold": _at(8, 1, 10),
        "misses": 1,
        "false_positives": 8,
        "wrong_labels": 1,
        "only_in": None,
        "curve": [_point(t, tp, fp, 10) for t, tp, fp in CAR_CURVE],
        "segm": {"ap": 0.5, "ap50": 0.7, "ar": 0.55, "mean_iou": 0.81, "matched": 9},
    }
    person = {
        "ground_truth": 4,
        "predictions": 5,
        "ap": 0.4,
        "ap50": 0.6,
        "ar": 0.5,
        "recommended_threshold": 0.8,
        "at_threshold": _at(2, 0, 4),
        "misses": 1,
        "false_positives": 2,
        "wrong_labels": 0,
        "only_in": None,
        "curve": [_point(t, tp, fp, 4) for t, tp, fp in PERSON_CURVE],
        "keypoints": {
            "ap": 0.3,
            "ap50": 0.5,
            "ar": 0.35,
            "pck": 0.75,
            "instances": 3,
            "joints": {"nose": 1.0, "left eye": 0.5, "right eye": 0.75},
        },
        "point_hit_rate": 0.5,
    }
    sign = {
        "ground_truth": 3,
        "predictions": 0,
        "ap": None,
        "ap50": None,
        "ar": None,
        "recommended_threshold": None,
        "at_threshold": _at(0, 0, 3),
        "misses": 3,
        "false_positives": 0,
        "wrong_labels": 0,
        "only_in": "ground_truth",
        "curve": [],
        "ocr": {"pairs": 2, "cer": 0.125, "wer": 0.5},
    }
    hostile = {
        "ground_truth": 0,
        "predictions": 1,
        "ap": None,
        "ap50": None,
        "ar": None,
        "recommended_threshold": None,
        "at_threshold": _at(0, 1, 0),
        "misses": 0,
        "false_positives": 1,
        "wrong_labels": 0,
        "only_in": "predictions",
        "curve": [_point(0.3, 0, 1, 0)],
    }
    return {
        "overall": {
            "images": 6,
            "ground_truth": 17,
            "predictions": 24,
            "ap": 0.506,
            "ap50": 0.702,
            "ar": 0.578,
            "at_threshold": _at(10, 2, 17),
            "misses": 5,
            "false_positives": 11,
            "wrong_labels": 1,
            "effort": {
                "unchanged_share": 0.5,
                "edited_share": 0.25,
                "deleted_share": 0.25,
                "added_share": 0.125,
            },
            "segm": {
                "ap": 0.5,
                "ap50": 0.7,
                "ar": 0.55,
                "mean_iou": 0.81,
                "matched": 9,
            },
            "keypoints": {
                "ap": 0.3,
                "ap50": 0.5,
                "ar": 0.35,
                "pck": 0.75,
                "instances": 3,
            },
            "ocr": {"pairs": 2, "cer": 0.125, "wer": 0.5},
            "point_hit_rate": 0.5,
        },
        "labels": {"car": car, "person": person, "sign": sign, HOSTILE: hostile},
        # rows ground truth, columns predictions; car row: 9 right, 1 as person
        "confusion": {
            "axis": ["car", "person", "sign", HOSTILE, "background"],
            "rows": [
                [9, 1, 0, 0, 0],
                [0, 3, 0, 0, 1],
                [0, 0, 0, 0, 3],
                [0, 0, 0, 0, 0],
                [7, 1, 0, 1, 0],
            ],
        },
        "inputs": {
            "ground_truth": HOSTILE_FILE,
            "predictions": "labels.jsonl",
            "ground_truth_skipped": 2,
            "predictions_skipped": 0,
        },
    }
