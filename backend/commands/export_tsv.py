"""``rexlabel export --to rexomni-tsv``: a project's annotations as upstream
Rex-Omni's SFT files (``backend.finetune.export``), images downloaded from
Label Studio one at a time."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any


def _extra_params(args: argparse.Namespace, client: Any) -> dict[str, Any]:
    """``--extra-params``, else the connected model's (ValueError when bad)."""
    from backend.bulk.creation import connected_extra_params
    from backend.commands.extra_params_arg import parse_extra_params

    extra = parse_extra_params(args.extra_params)
    return connected_extra_params(client, args.project) if extra is None else extra


def run_tsv(args: argparse.Namespace) -> int:
    from backend.bulk.convert import ConvertError, iter_json_list
    from backend.bulk.records import JobError
    from backend.commands.prelabel import EXIT_USAGE
    from backend.finetune.export import export_rexomni_tsv
    from backend.planner import PlanError, plan_config
    from common.images.loader import ImageLoader
    from common.labelstudio.api import LabelStudioAPIError, LabelStudioClient

    if args.predictions or args.model_version:
        print(
            "rexlabel export: --to rexomni-tsv exports annotations; "
            "--predictions and --model-version do not apply",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        client = LabelStudioClient.from_settings()
        extra = _extra_params(args, client)
        label_config = client.get_project(args.project).get("label_config") or ""
        plan = plan_config(label_config, extra)
        loader = ImageLoader.from_settings(cache_bytes=0)  # each image read once
        with tempfile.TemporaryDirectory(prefix="rexlabel-export-") as tmp:
            path = Path(args.keep_json) if args.keep_json else Path(tmp) / "export.json"
            client.export_json(args.project, path)
            export = export_rexomni_tsv(
                iter_json_list(path),
                plan,
                args.out,
                name=f"project-{args.project}",
                load_image=lambda image: loader.load(image.ref, task_id=image.task_id),
            )
    except (
        LabelStudioAPIError,
        ConvertError,
        PlanError,
        JobError,
        ValueError,
        OSError,
    ) as exc:
        print(f"rexlabel export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return _report(export, args.out)


def _report(export: Any, out: str) -> int:
    from backend.commands.prelabel import EXIT_OK

    stats = export.stats
    for warning in stats.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if stats.warning_count > len(stats.warnings):
        more = stats.warning_count - len(stats.warnings)
        print(f"warning: ... and {more} more", file=sys.stderr)
    skipped = []
    if stats.skipped_no_annotation:
        skipped.append(f"{stats.skipped_no_annotation} without annotation")
    if stats.skipped_no_image:
        skipped.append(f"{stats.skipped_no_image} without a readable image")
    if stats.failed:
        skipped.append(f"{stats.failed} unreadable")
    if export.images_without_boxes:
        skipped.append(f"{export.images_without_boxes} without boxes")
    left = f"; skipped: {', '.join(skipped)}" if skipped else ""
    print(
        f"{out}: {export.images_written} images, {export.boxes} boxes "
        f"from {stats.tasks} tasks{left}"
    )
    return EXIT_OK
