"""rexlabel evaluate: pre-labels against what annotators submitted.

Examples:
    rexlabel evaluate --gt export.json --pred labels.jsonl --out eval/
    rexlabel evaluate --project 3 [--model-version V] --out eval/

--gt and --pred are each a Label Studio JSON export (ground truth: the latest
non-cancelled annotation per task; predictions: the task's latest prediction),
a COCO file, or rexlabel prelabel's raw JSON lines. Writes DIR/report.json and
DIR/report.html (one self-contained page with plots) and prints a table. Bad
input exits 2 naming the bad part; so do predictions of which not one pairs
with a ground-truth image (images pair by equal references, else by task id).

--project reads the project from Label Studio (LABEL_STUDIO_URL,
LABEL_STUDIO_API_KEY), page by page: the ground truth is each task's latest
non-cancelled annotation, the predictions its prediction of one model version.
Tasks without an annotation, or without a prediction of that version, are not
scored and are counted. Without --model-version the version is the project's
model version if it has predictions of it; else, when that names a connected
model, the model's current version if it has predictions of it; else the
version of the newest rexlabel prediction (else of the newest prediction).
The report says which version was scored and why.

--apply-thresholds puts each label's recommended score threshold where the
planner reads it (model_score_thresholds in the model's extra params): with
--project into the extra params of the project's ML backend in Label Studio
(--ml-backend ID when it has several), printing what changed (exit 1 when
that fails); with files it prints the JSON to paste there and writes nothing.

Images larger than REXLABEL_MAX_IMAGE_PIXELS, and regions further outside
their image than its size, are refused (exit 2). See docs/evaluate.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_NOT_APPLIED = 1
"""The report was written, but the thresholds could not be applied."""

MAX_WARNINGS = 50
"""Warnings printed; the rest are counted (a big export can warn per task)."""


def say(text: str, *, error: bool = False) -> None:
    """Print ``text``, which may hold task data (labels, image references,
    messages quoting them), with its control characters escaped
    (``common.logs.printable``): one line. ``error``: to stderr, as rexlabel
    evaluate's, keeping the lines of a parser's message (a JSON error points
    at the bad character on its next lines)."""
    from common.logs import printable

    if error:
        lines = (printable(line) for line in text.split("\n"))
        print("rexlabel evaluate: " + "\n".join(lines), file=sys.stderr)
    else:
        print(printable(text))


def warn(warnings: list[str], count: int) -> None:
    """``warnings`` to stderr, escaped, then how many more of ``count``
    there were."""
    from common.logs import printable

    for warning in warnings:
        print(f"warning: {printable(warning)}", file=sys.stderr)
    if count > len(warnings):
        print(f"warning: {count - len(warnings)} more warnings", file=sys.stderr)


def show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """``warnings.showwarning`` escaping control characters: a library's
    warning may quote a label (matplotlib names a glyph it lacks, ESC too)."""
    from common.logs import printable

    text = warnings.formatwarning(message, category, filename, lineno, line)
    lines = (printable(part) for part in text.rstrip("\n").split("\n"))
    print("\n".join(lines), file=file or sys.stderr)


def max_image_pixels() -> int:
    """``REXLABEL_MAX_IMAGE_PIXELS``: larger images are refused, as the image
    loader refuses to decode them."""
    from common import settings

    return settings.get("REXLABEL_MAX_IMAGE_PIXELS")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score pre-labels against ground truth (AP, thresholds, effort)",
        description="Score predictions against ground truth, from files or "
        "a Label Studio project.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--gt", help="ground-truth file")
    parser.add_argument("--pred", help="predictions file")
    parser.add_argument(
        "--project",
        type=int,
        metavar="ID",
        help="read ground truth and predictions from this Label Studio project "
        "instead of --gt/--pred",
    )
    parser.add_argument(
        "--model-version",
        metavar="V",
        help="with --project: score the predictions of this model version "
        "(default: the current one, see below)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="report folder")
    parser.add_argument(
        "--apply-thresholds",
        action="store_true",
        help="write the recommended per-label thresholds to the project's ML "
        "backend (--project), or print them as extra params JSON (files)",
    )
    parser.add_argument(
        "--ml-backend",
        type=int,
        metavar="ID",
        help="with --apply-thresholds: the ML backend to update when the "
        "project has several",
    )
    parser.set_defaults(func=run, usage_error=parser.error)


def check_source(args: argparse.Namespace) -> None:
    """Exactly one source: ``--project``, or ``--gt`` with ``--pred``; an
    argparse error (exit 2) naming the flags otherwise."""
    files = [f for f in ("--gt", "--pred") if getattr(args, f[2:]) is not None]
    if args.project is not None and files:
        args.usage_error(f"--project cannot be combined with {' and '.join(files)}")
    if args.project is None:
        if args.model_version is not None:
            args.usage_error("--model-version needs --project")
        if len(files) != 2:
            args.usage_error("give --gt and --pred (files), or --project ID")


def run_project(args: argparse.Namespace) -> tuple[dict, int, list[str]] | int:
    """``--project``: the report with its ``inputs``, images scored and notes
    for the terminal; or the exit code of a failure (printed)."""
    from backend.evaluate.inputs import EvaluateInputError
    from backend.evaluate.project import open_project
    from backend.evaluate.report import build_report
    from common.labelstudio.api import LabelStudioAPIError
    from common.labelstudio.auth import TokenExchangeError
    from converters.coco import CocoError

    try:
        source = open_project(
            args.project, args.model_version, max_pixels=max_image_pixels()
        )
        report = build_report(source.pairs())
    except (EvaluateInputError, LabelStudioAPIError, TokenExchangeError) as exc:
        say(str(exc), error=True)
        return EXIT_BAD_INPUT
    except CocoError as exc:  # COCOeval cannot take the regions (keypoint sets)
        say(f"project {args.project}: {exc}", error=True)
        return EXIT_BAD_INPUT
    report["inputs"] = source.inputs()
    c = source.counts
    warn(c.warnings, c.warning_count)
    notes = [
        f"project {args.project}: model version {source.choice.version!r} "
        f"({source.choice.reason}); {c.tasks} tasks read, {c.scored} scored, "
        f"{c.without_annotation} without an annotation "
        f"({c.only_cancelled} only cancelled), {c.without_predictions} annotated "
        "without a prediction of this version (not scored)"
    ]
    return report, c.scored, notes


def run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = show_warning
        return run_evaluate(args)


def run_evaluate(args: argparse.Namespace) -> int:
    """The command, its warnings escaped (:func:`run`); the exit code."""
    from backend.evaluate.inputs import EvaluateInputError, load_pairs
    from backend.evaluate.report import build_report
    from converters.coco import CocoError

    check_source(args)
    if args.ml_backend is not None and not args.apply_thresholds:
        say("--ml-backend needs --apply-thresholds", error=True)
        return EXIT_BAD_INPUT
    if args.project is not None:
        done = run_project(args)
        if isinstance(done, int):
            return done
        report, images, notes = done
        return write_report(args, report, images, notes)
    try:
        pairs, pairing = load_pairs(args.gt, args.pred, max_image_pixels())
        report = build_report(pairs)
    except EvaluateInputError as exc:
        say(str(exc), error=True)
        return EXIT_BAD_INPUT
    except CocoError as exc:  # COCOeval cannot take the regions (keypoint sets)
        say(f"{args.gt} with {args.pred}: {exc}", error=True)
        return EXIT_BAD_INPUT
    warn(pairing.warnings[:MAX_WARNINGS], len(pairing.warnings))
    unpaired = pairing.unpaired(str(args.gt), str(args.pred))
    if unpaired:
        say(unpaired, error=True)
        return EXIT_BAD_INPUT
    report["inputs"] = {
        "ground_truth": str(args.gt),
        "predictions": str(args.pred),
        "ground_truth_skipped": pairing.gt_skipped,
        "predictions_skipped": pairing.pred_skipped,
        "images_without_predictions": pairing.without_predictions,
        "predictions_without_ground_truth": pairing.predictions_without_ground_truth,
        "paired_by_task_id": pairing.paired_by_task_id,
    }
    notes = []
    if pairing.without_predictions:
        # scored as misses: a predictions file covering fewer images lowers recall
        notes.append(
            f"{pairing.without_predictions} ground-truth image(s) have no "
            "predictions in the predictions file (scored as missed)"
        )
    if pairing.predictions_without_ground_truth:
        notes.append(
            f"{pairing.predictions_without_ground_truth} image(s) in the "
            "predictions file have no ground truth (not scored)"
        )
    return write_report(args, report, pairing.pairs, notes)


def write_report(
    args: argparse.Namespace, report: dict, images: int, notes: list[str]
) -> int:
    """``DIR/report.json`` and ``DIR/report.html``, the table and ``notes`` on
    the terminal, then ``--apply-thresholds``; the exit code."""
    from backend.evaluate.html import write_html
    from backend.evaluate.report import format_table

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(
            json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        write_html(report, out / "report.html")
    except OSError as exc:
        say(f"{out}: {exc}", error=True)
        return EXIT_BAD_INPUT
    print(format_table(report))
    say(f"{out / 'report.json'}, {out / 'report.html'}: {images} images")
    for note in notes:
        say(note)
    return apply_thresholds(args, report) if args.apply_thresholds else 0


def apply_thresholds(args: argparse.Namespace, report: dict) -> int:
    """``--apply-thresholds``: into the project's ML backend (``--project``),
    else printed as the extra params to paste; says what changed."""
    from backend.evaluate.apply import (
        ApplyError,
        apply_to_project,
        config_snippet,
        recommended_thresholds,
    )
    from common.labelstudio.api import LabelStudioAPIError, LabelStudioClient
    from common.logs import printable

    thresholds = recommended_thresholds(report)
    if not thresholds:
        print("no label has a recommended threshold (nothing found); nothing to apply")
        return 0
    project = args.project
    if project is None:
        print("Recommended thresholds; nothing was written. Paste into the model's")
        print('"Extra params" in Label Studio (keep the keys already there):')
        for line in config_snippet(thresholds).splitlines():
            print(printable(line, json_escapes=True))
        return 0
    try:
        client = LabelStudioClient.from_settings()
        changes = apply_to_project(client, project, thresholds, args.ml_backend)
    except (ApplyError, LabelStudioAPIError) as exc:
        say(f"--apply-thresholds: {exc}", error=True)
        return EXIT_NOT_APPLIED
    if not changes:
        print(f"project {project}: model_score_thresholds unchanged")
    for change in changes:
        old = "unset" if change.old is None else f"{change.old:g}"
        say(f"{change.label}: {old} -> {change.new:g}")
    return 0
