"""``rexlabel evaluate``: pre-labels against what annotators submitted.

Usage::

    rexlabel evaluate --gt export.json --pred labels.jsonl --out eval/

``--gt`` and ``--pred`` are each a Label Studio JSON export (ground truth: the
latest non-cancelled annotation per task; predictions: the task's latest
prediction), a COCO file, or ``rexlabel prelabel``'s raw JSON lines. Writes
``DIR/report.json`` and ``DIR/report.html`` (one self-contained page with
plots) and prints a table; bad input exits 2 naming the bad part.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_BAD_INPUT = 2

MAX_WARNINGS = 50
"""Warnings printed; the rest are counted (a big export can warn per task)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score pre-labels against ground truth (AP, thresholds, effort)",
        description="Score predictions against ground truth, from files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--gt", required=True, help="ground-truth file")
    parser.add_argument("--pred", required=True, help="predictions file")
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.evaluate.html import write_html
    from backend.evaluate.inputs import EvaluateInputError, load_pairs
    from backend.evaluate.report import build_report, format_table
    from converters.coco import CocoError

    try:
        pairs, pairing = load_pairs(args.gt, args.pred)
        report = build_report(pairs)
    except (EvaluateInputError, CocoError) as exc:
        print(f"rexlabel evaluate: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for warning in pairing.warnings[:MAX_WARNINGS]:
        print(f"warning: {warning}", file=sys.stderr)
    if len(pairing.warnings) > MAX_WARNINGS:
        print(
            f"warning: {len(pairing.warnings) - MAX_WARNINGS} more warnings",
            file=sys.stderr,
        )
    report["inputs"] = {
        "ground_truth": str(args.gt),
        "predictions": str(args.pred),
        "ground_truth_skipped": pairing.gt_skipped,
        "predictions_skipped": pairing.pred_skipped,
        "images_without_predictions": pairing.without_predictions,
        "predictions_without_ground_truth": pairing.predictions_without_ground_truth,
        "paired_by_task_id": pairing.paired_by_task_id,
    }
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        write_html(report, out / "report.html")
    except OSError as exc:
        print(f"rexlabel evaluate: {out}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(format_table(report))
    print(f"{out / 'report.json'}, {out / 'report.html'}: {pairing.pairs} images")
    if pairing.without_predictions:
        # scored as misses: a predictions file covering fewer images lowers recall
        print(
            f"{pairing.without_predictions} ground-truth image(s) have no "
            "predictions in the predictions file (scored as missed)"
        )
    return 0
