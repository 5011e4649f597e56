"""``rexlabel export``: a Label Studio project -> COCO that keeps everything,
or upstream Rex-Omni's SFT training files.

Usage::

    rexlabel export --project 3 --out coco.json              # annotations
    rexlabel export --project 3 --out preds.json --predictions [--model-version V]
    rexlabel export --project 3 --out coco.json --keep-json export.json
    rexlabel export --project 3 --to rexomni-tsv --out sft/  # upstream's SFT data

Downloads the project's JSON export (LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)
and converts it: brush masks become COCO RLE, keypoints stay one annotation
per instance, OCR text and scores are kept (Label Studio's own COCO export
drops masks and text and merges keypoints). Categories follow the labeling
config's order.

--to rexomni-tsv writes project-ID.images.tsv, project-ID.annotations.tsv,
project-ID.annotations.tsv.lineidx and manifest.json into the --out folder:
each annotated image with its detection boxes under the phrases inference
asks (docs/finetune.md). Images are downloaded from Label Studio one at a time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

TARGETS = ("coco", "rexomni-tsv")
"""What ``--to`` writes: lossless COCO, or upstream's SFT TSV files."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a Label Studio project to COCO (masks, keypoints, text, scores)",
        description="Export a Label Studio project to COCO without losing anything, "
        "or to upstream Rex-Omni's SFT training files.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument("--project", type=int, required=True)
    parser.add_argument(
        "--out",
        required=True,
        help="COCO JSON to write (--to rexomni-tsv: the folder to write into)",
    )
    parser.add_argument(
        "--to",
        choices=TARGETS,
        default="coco",
        help="coco (default) or rexomni-tsv: upstream Rex-Omni's SFT files",
    )
    parser.add_argument(
        "--extra-params",
        default=None,
        metavar="JSON",
        help="--to rexomni-tsv: the model's Extra params the phrases are planned "
        "with (default: those of the model connected to the project)",
    )
    parser.add_argument(
        "--predictions",
        action="store_true",
        help="export predictions instead of annotations",
    )
    parser.add_argument(
        "--model-version",
        default=None,
        help="with --predictions: only this model version's",
    )
    parser.add_argument(
        "--keep-json",
        default=None,
        metavar="FILE",
        help="also keep Label Studio's JSON export here",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.to == "rexomni-tsv":
        from backend.commands.export_tsv import run_tsv

        return run_tsv(args)
    if args.extra_params is not None:
        print(
            "rexlabel export: --extra-params goes with --to rexomni-tsv",
            file=sys.stderr,
        )
        return 2
    from backend.bulk.convert import ConvertError, config_categories, config_image_key
    from backend.commands.convert import export_to_coco, report
    from backend.planner import PlanError
    from common.labelstudio.api import LabelStudioAPIError, LabelStudioClient

    try:
        client = LabelStudioClient.from_settings()
        label_config = client.get_project(args.project).get("label_config") or ""
        with tempfile.TemporaryDirectory(prefix="rexlabel-export-") as tmp:
            path = Path(args.keep_json) if args.keep_json else Path(tmp) / "export.json"
            client.export_json(args.project, path)
            try:
                categories = config_categories(label_config)
                image_key = config_image_key(label_config)
            except PlanError:
                categories, image_key = [], None
            stats = export_to_coco(
                path, args, categories=categories, image_key=image_key
            )
    except (LabelStudioAPIError, ConvertError, OSError) as exc:
        print(f"rexlabel export: {exc}", file=sys.stderr)
        return 2
    return report(stats, args.out, "export")
