"""``rexlabel convert``: Label Studio exports or raw Rex-Omni outputs -> COCO.

Usage::

    rexlabel convert export.json --out coco.json                 # annotations
    rexlabel convert export.json --out preds.json --predictions [--model-version V]
    rexlabel convert --raw outputs.jsonl --out coco.json [--image-root DIR]
    rexlabel convert --raw outputs.jsonl --to labelstudio --out tasks.json \\
        [--from-name label --to-name image --text-from-name transcription]

A Label Studio JSON export keeps masks (as COCO RLE), per-instance keypoints,
OCR text and scores. ``--raw`` reads one JSON object a line with the image
(``image_path``/``image``), the model's answer (``raw_response``/``raw_text``),
the task (``task``, or upstream's ``task_name``), ``categories`` and optionally
``width``/``height`` (else read from the image): upstream's evaluation output
works as it is.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

DEFAULT_TEXT_FROM_NAME = "transcription"
"""The per-region TextArea of Label Studio's OCR template: OCR text goes there."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert a Label Studio export or raw Rex-Omni outputs to COCO",
        description="Convert a Label Studio JSON export or raw Rex-Omni outputs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("file", nargs="?", help="a Label Studio JSON export")
    parser.add_argument(
        "--raw",
        default=None,
        metavar="JSONL",
        help="raw Rex-Omni outputs instead of a Label Studio export",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--to",
        choices=("coco", "labelstudio"),
        default="coco",
        help="--raw only: write COCO or Label Studio tasks",
    )
    parser.add_argument(
        "--predictions",
        action="store_true",
        help="export file: convert predictions instead of annotations",
    )
    parser.add_argument(
        "--model-version",
        default=None,
        help="export file with --predictions: only this version; "
        "--to labelstudio: the version to file predictions under",
    )
    parser.add_argument(
        "--image-key",
        default=None,
        help="export file: the task data key of the image "
        "(default: 'image', else the first string)",
    )
    parser.add_argument(
        "--image-root",
        default=None,
        help="--raw: folder relative image paths are under",
    )
    parser.add_argument(
        "--from-name", default="label", help="--to labelstudio: the control tag name"
    )
    parser.add_argument(
        "--box-from-name",
        default=None,
        help="--to labelstudio: a RectangleLabels tag for each keypoint "
        "instance's box, which its joints get as parent (default: joints only)",
    )
    parser.add_argument(
        "--text-from-name",
        default=DEFAULT_TEXT_FROM_NAME,
        help="--to labelstudio: the per-region TextArea that gets OCR text, under "
        "its region's id (default: %(default)s, as Label Studio's OCR template)",
    )
    parser.add_argument(
        "--to-name",
        default="image",
        help="--to labelstudio: the <Image> tag name (and data key)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.bulk.convert import (
        ConvertError,
        iter_jsonl,
        raw_to_coco,
        raw_to_labelstudio,
    )

    if bool(args.file) == bool(args.raw):
        print(
            "rexlabel convert: give an export FILE or --raw JSONL (one of them)",
            file=sys.stderr,
        )
        return 2
    try:
        if args.raw:
            lines = iter_jsonl(args.raw)
            if args.to == "labelstudio":
                stats = raw_to_labelstudio(
                    lines,
                    args.out,
                    image_root=args.image_root,
                    from_name=args.from_name,
                    keypoint_box_from_name=args.box_from_name,
                    text_from_name=args.text_from_name or None,
                    to_name=args.to_name,
                    data_key=args.to_name,
                    model_version=args.model_version or "rex-omni",
                )
            else:
                stats = raw_to_coco(lines, args.out, image_root=args.image_root)
        else:
            if args.to != "coco":
                print(
                    "rexlabel convert: an export converts to COCO only", file=sys.stderr
                )
                return 2
            stats = export_to_coco(args.file, args, image_key=args.image_key)
    except (ConvertError, OSError, ValueError) as exc:
        print(f"rexlabel convert: {exc}", file=sys.stderr)
        return 2
    return report(stats, args.out, "convert")


def export_to_coco(path: Any, args: argparse.Namespace, **config: Any) -> Any:
    """Convert the Label Studio JSON export at ``path`` to COCO at ``args.out``:
    its annotations, or with ``--predictions`` its predictions (of
    ``--model-version`` only, when given). ``config``: the labeling config's
    ``categories`` and ``image_key``, where known. Returns the stats."""
    from backend.bulk.convert import iter_json_list, labelstudio_to_coco

    return labelstudio_to_coco(
        iter_json_list(path),
        args.out,
        source="predictions" if args.predictions else "annotations",
        model_version=args.model_version,
        **config,
    )


def report(stats: Any, out: str, command: str) -> int:
    """Print a conversion's warnings and failures (stderr) and its summary;
    returns the exit code: EXIT_SOME_FAILED when a task or line failed."""
    from backend.commands.prelabel import EXIT_OK, EXIT_SOME_FAILED

    for warning in stats.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for failure in stats.failures:
        print(f"error: {failure}", file=sys.stderr)
    if stats.failed > len(stats.failures):
        unlisted = stats.failed - len(stats.failures)
        print(f"error: ... and {unlisted} more", file=sys.stderr)
    skipped = f", {stats.skipped} skipped" if stats.skipped else ""
    failed = f", {stats.failed} failed" if stats.failed else ""
    print(
        f"{out}: {stats.images} images, {stats.annotations} annotations"
        f"{skipped}{failed}"
    )
    if not stats.failed:
        return EXIT_OK
    print(
        f"rexlabel {command}: {stats.failed} failed (named above); the others "
        "were written",
        file=sys.stderr,
    )
    return EXIT_SOME_FAILED
