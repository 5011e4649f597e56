"""``rexlabel prelabel``: pre-label many images, or a whole Label Studio project.

Usage::

    rexlabel prelabel photos/ more/*.jpg list.jsonl --task detection \\
        --categories "person,car" --out labels.coco.json [--draw previews/]
    rexlabel prelabel shelves/ --task keypoint --categories person \\
        --keypoint-type person --out people.coco.json
    rexlabel prelabel docs/ --task ocr_polygon --categories "text line" --out ocr.json
    rexlabel prelabel shot.png --task visual_prompting --visual-prompt "10,20,80,90" \\
        --categories widget --out similar.json
    rexlabel prelabel shots/ --task visual_prompting --reference-boxes refs.jsonl \\
        --categories widget --out similar.json
    rexlabel prelabel photos/ --task detection --categories car --masks --out cars.json
    rexlabel prelabel scans/ --task detection --categories stamp --tile on \
        --tile-size 1024 --out stamps.json
    rexlabel prelabel --project 3 [--view "Night shots"]   # LABEL_STUDIO_URL/_API_KEY

Image files: COCO JSON (``--out``) plus a JSONL of each image's raw model text
and parsed predictions (``--raw-out``, default beside ``--out``). A project:
one prediction per task posted to Label Studio as chunks finish; tasks that
already hold a prediction of this model version are left alone.

Visual prompting finds things like the boxed ones *in the same image*: a box
from one image cannot be applied to another. ``--visual-prompt`` boxes are
pixels of the one image named; for many images ``--reference-boxes`` gives
each its own: a COCO file (boxes of the ``--categories``, else of every
category, per image ``file_name``) or JSON lines of ``{"image": ..., "boxes":
[[x0, y0, x1, y1], ...], "label": ...}`` (xyxy pixels of that image). Results
are labelled with the category; images without boxes are skipped and counted.

The job id comes from the inputs, so the same command run again continues
where it stopped (Ctrl-C, a killed worker, a crash). ``--retry-failed`` runs
only the images that failed. With ``REDIS_URL`` chunks go to ``rexlabel
worker`` processes; ``--inline`` (or no Redis) runs them here.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from backend.commands.tile_args import (
    add_tile_arguments,
    tile_extra_params,
    tile_from_args,
)

EXIT_OK = 0
EXIT_USAGE = 2
"""Bad arguments or inputs (argparse's own code)."""
EXIT_SOME_FAILED = 3
"""The job finished but some images failed: scripts can tell it from success."""
EXIT_INTERRUPTED = 130
"""Ctrl-C: the shell's code for SIGINT; the job resumes on the next run."""
EXIT_CANCELLED = 4
"""``rexlabel jobs cancel`` stopped the job."""
FAILURES_LISTED = 20
"""Failed images printed at the end; ``rexlabel jobs status`` lists them too."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prelabel",
        help="pre-label images (to COCO) or a Label Studio project, as a bulk job",
        description="Pre-label images or a Label Studio project as a resumable job.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    parser.add_argument(
        "images", nargs="*", help="image files, folders, globs, URLs or *.jsonl lists"
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="FILE",
        help="a JSONL list of image paths/URLs (repeatable)",
    )
    parser.add_argument(
        "--task",
        default="detection",
        help="detection, pointing, visual_prompting, keypoint, ocr_box, "
        "ocr_polygon, gui_grounding or gui_pointing (default: %(default)s)",
    )
    parser.add_argument(
        "--categories",
        default="",
        help="comma-separated phrases (OCR: the granularity, e.g. "
        "'word' or 'text line'; keypoint: the instance category)",
    )
    parser.add_argument(
        "--keypoint-type", default=None, help="keypoint task: person, hand or animal"
    )
    parser.add_argument(
        "--visual-prompt",
        action="append",
        default=[],
        metavar="BOXES",
        help="visual prompting on ONE image: x0,y0,x1,y1 pixel boxes of that "
        "image, ';'-separated (repeatable); the model looks for similar things in "
        "the same image, so several images need --reference-boxes",
    )
    parser.add_argument(
        "--reference-boxes",
        default=None,
        metavar="FILE",
        help="visual prompting: each image's own reference boxes, from a COCO "
        "file (per file_name; boxes of --categories, else of every category) or "
        'JSON lines {"image": ..., "boxes": [[x0,y0,x1,y1], ...], "label": ...} '
        "(xyxy pixels of that image); images without boxes are skipped",
    )
    parser.add_argument(
        "--masks",
        action="store_true",
        help="add SAM masks to boxes (needs SAM_CHECKPOINT on workers)",
    )
    parser.add_argument(
        "--score-threshold",
        type=float,
        default=None,
        help="drop predictions scoring below this (0..1)",
    )
    parser.add_argument(
        "--max-instances",
        type=int,
        default=None,
        help="runaway guard: at most this many items per image",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="cap on generated tokens per image",
    )
    add_tile_arguments(parser)
    parser.add_argument("--out", default=None, help="COCO JSON to write")
    parser.add_argument(
        "--raw-out",
        default=None,
        help="JSONL of raw model text and predictions per image "
        "(default: --out with .jsonl)",
    )
    parser.add_argument(
        "--draw", default=None, metavar="DIR", help="also write annotated previews here"
    )
    parser.add_argument(
        "--project",
        type=int,
        default=None,
        help="pre-label this Label Studio project instead of files",
    )
    parser.add_argument(
        "--view",
        default=None,
        help="project: only the tasks of this Data Manager tab (id or title)",
    )
    parser.add_argument(
        "--extra-params",
        default=None,
        metavar="JSON",
        help="project: the model's Extra params (rex_* defaults, score "
        "thresholds), as the backend gets them in /setup (default: those of the "
        "model connected to the project in Label Studio)",
    )
    parser.add_argument(
        "--model-version",
        default="",
        help="name predictions are filed under (default: derived from "
        "model, prompts, settings and the config)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="images per chunk (default: backend.bulk.CHUNK_SIZE)",
    )
    parser.add_argument(
        "--inline",
        action="store_true",
        help="run chunks in this process even if REDIS_URL is set",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="run only the images that failed in an earlier run",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--json", action="store_true", help="print the final job record as JSON"
    )
    parser.set_defaults(func=run)


class UsageError(ValueError):
    """A bad combination of options; printed with exit code 2."""


def parse_box_lists(values: list[str]) -> list[list[float]]:
    """``--visual-prompt`` values, each a ``;``-separated list of boxes:
    ``["1,2,3,4;5,6,7,8"]`` -> ``[[1, 2, 3, 4], [5, 6, 7, 8]]`` (xyxy pixels);
    UsageError for a box that is not four numbers with x1>x0 and y1>y0."""
    boxes = []
    for value in values:
        for part in value.split(";"):
            if not part.strip():
                continue
            try:
                box = [float(v) for v in part.split(",")]
            except ValueError:
                raise UsageError(
                    f"--visual-prompt {part!r}: expected x0,y0,x1,y1"
                ) from None
            if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
                raise UsageError(
                    f"--visual-prompt {part!r}: expected x0,y0,x1,y1 with x1>x0, y1>y0"
                )
            boxes.append(box)
    return boxes


def _check_visual_prompt(
    task: Any, boxes: list[list[float]], references: str | None, categories: list[str]
) -> None:
    """UsageError unless visual prompting has boxes from exactly one source
    (and ``--visual-prompt`` one category name to label the results with)."""
    from converters.tasks import Task

    if task is not Task.VISUAL_PROMPTING:
        for given, option in (
            (boxes, "--visual-prompt"),
            (references, "--reference-boxes"),
        ):
            if given:
                raise UsageError(f"{option} is only used with --task visual_prompting")
        return
    if bool(boxes) == bool(references):
        raise UsageError(
            "--task visual_prompting needs --visual-prompt BOXES (one image) or "
            "--reference-boxes FILE (each image its own boxes), not both"
        )
    if boxes and len(categories) != 1:
        raise UsageError(
            "--visual-prompt needs --categories NAME: one name for what the boxes "
            "show (the results' label)"
        )


def call_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The one ModelCall (as a dict) the options describe; UsageError if unusable."""
    from common.jobspec import JobSpecError, MaskOutput, ModelCall
    from converters.tasks import Task

    try:
        task = Task.from_value(args.task)
    except ValueError as exc:
        raise UsageError(f"--task: {exc}") from None
    categories = [c.strip() for c in (args.categories or "").split(",") if c.strip()]
    boxes = parse_box_lists(args.visual_prompt)
    _check_visual_prompt(task, boxes, args.reference_boxes, categories)
    if task is Task.KEYPOINT and not args.keypoint_type:
        raise UsageError("--task keypoint needs --keypoint-type (person, hand, animal)")
    if task not in (Task.VISUAL_PROMPTING, Task.KEYPOINT) and not categories:
        raise UsageError(f"--task {task.value} needs --categories")
    if args.keypoint_type:
        from converters.keypoint_sets import get_keypoint_set

        try:
            get_keypoint_set(args.keypoint_type)
        except (KeyError, ValueError) as exc:
            raise UsageError(f"--keypoint-type: {exc}") from None
        categories = categories or [args.keypoint_type]
    generation = {}
    if args.max_new_tokens:
        generation["max_new_tokens"] = args.max_new_tokens
    try:
        tile = tile_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    try:
        call = ModelCall(
            task=task,
            categories=categories,
            keypoint_type=args.keypoint_type,
            visual_prompt_boxes=boxes or None,
            masks=MaskOutput.RLE if args.masks else MaskOutput.NONE,
            score_threshold=args.score_threshold,
            max_instances=args.max_instances,
            generation=generation,
            key=task.value,
            tile=tile,
        )
    except JobSpecError as exc:
        raise UsageError(str(exc)) from None
    return call.to_dict()


def _connection() -> Any:
    """Redis for REDIS_URL (checked now, not after planning), or None."""
    from backend.bulk.store import redis_connection

    connection = redis_connection()
    if connection is not None:
        connection.ping()
    return connection


def run(args: argparse.Namespace) -> int:
    from backend.bulk import JobError, NothingToDo
    from backend.bulk.sources import SourceError
    from common.labelstudio.api import LabelStudioAPIError

    try:
        return _run(args)
    except NothingToDo as exc:
        print(str(exc))
        return EXIT_OK
    except UsageError as exc:
        print(f"rexlabel prelabel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SourceError, JobError, LabelStudioAPIError, ValueError) as exc:
        print(f"rexlabel prelabel: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from backend.bulk.creation import (
        CHUNK_SIZE,
        create_files_job,
        create_project_job,
    )
    from backend.bulk.store import open_store

    chunk_size = args.chunk_size or CHUNK_SIZE
    if chunk_size < 1:
        raise UsageError("--chunk-size must be at least 1")
    mirror = _connection()
    store = open_store(mirror)  # records go to Redis too, for rexlabel jobs
    connection = None if args.inline else mirror
    client = None
    if args.project is not None:
        if args.images or args.manifest or args.out or args.reference_boxes:
            raise UsageError(
                "--project takes no images, no --out and no --reference-boxes"
            )
        from backend.commands.extra_params_arg import parse_extra_params
        from common.labelstudio.api import LabelStudioClient

        try:
            extra = parse_extra_params(args.extra_params)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        try:  # the flags as project-wide rex_tile* defaults
            tile = tile_extra_params(tile_from_args(args))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        client = LabelStudioClient.from_settings()
        if tile:  # on top of --extra-params, else of the connected model's
            from backend.bulk.creation import connected_extra_params

            if extra is None:
                extra = connected_extra_params(client, args.project)
            extra = {**extra, **tile}
        job, skipped = create_project_job(
            client,
            args.project,
            view=args.view,
            extra_params=extra,
            model_version=args.model_version,
            chunk_size=chunk_size,
            store=store,
            latest=args.retry_failed,
        )
        if skipped and not args.quiet:
            print(
                f"{skipped} task(s) already have this model version's prediction",
                file=sys.stderr,
            )
    else:
        if not (args.images or args.manifest):
            raise UsageError(
                "name images (files, folders, globs, *.jsonl) or --project"
            )
        call = call_from_args(args)
        if not args.out:
            raise UsageError("--out is required (the COCO JSON to write)")
        references = None
        if args.reference_boxes:
            from backend.bulk.references import load_references

            references = load_references(args.reference_boxes, call["categories"])
        job = create_files_job(
            args.images,
            [call],
            out=args.out,
            raw_out=args.raw_out,
            draw_dir=args.draw,
            manifests=args.manifest,
            model_version=args.model_version,
            chunk_size=chunk_size,
            store=store,
            references=references,
            on_skipped=lambda message: print(message, file=sys.stderr),
        )
    return execute(job, store, connection, args, client=client)


def execute(
    job: Any, store: Any, connection: Any, args: argparse.Namespace, client: Any = None
) -> int:
    """Run ``job`` with a progress bar; print the summary; return the exit code."""
    from backend.bulk.orchestration import run_job
    from backend.bulk.progress import RichProgress
    from backend.bulk.records import JobStatus
    from backend.bulk.runner import failures

    where = "inline" if connection is None else "on rexlabel:bulk workers"
    if not args.quiet:
        print(f"job {job.id} ({where})", file=sys.stderr)
    try:
        if args.quiet:
            record = run_job(
                job,
                store,
                connection=connection,
                client=client,
                retry_failed=args.retry_failed,
            )
        else:
            with RichProgress(job.id) as progress:
                record = run_job(
                    job,
                    store,
                    connection=connection,
                    client=client,
                    on_progress=progress,
                    retry_failed=args.retry_failed,
                )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: run the same command (or rexlabel jobs resume {job.id})"
            " to continue",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    failed = failures(job, limit=FAILURES_LISTED) if record.failed else []
    if args.json:
        print(json.dumps({**record.to_dict(), "failures": failed}, indent=1))
    else:
        print(summary(record, failed))
    if record.status == JobStatus.CANCELLED:
        return EXIT_CANCELLED
    return EXIT_SOME_FAILED if record.failed else EXIT_OK


def summary(record: Any, failed: list[dict[str, Any]]) -> str:
    from backend.bulk.records import JobStatus

    lines = [
        f"job {record.id}: {record.status.value}; {record.done} done, "
        f"{record.failed} failed, {record.skipped} skipped of {record.total}"
    ]
    if record.status == JobStatus.DONE:
        for name, value in (record.outputs or {}).items():
            if value not in (None, ""):
                lines.append(f"  {name}: {value}")
    if failed:
        lines.append("failed images:")
        for item in failed:
            ref = item.get("image") or item.get("id")
            lines.append(f"  {ref}: {item.get('error')}")
        if record.failed > len(failed):
            lines.append(
                f"  ... and {record.failed - len(failed)} more "
                f"(rexlabel jobs status {record.id})"
            )
        lines.append("rerun with --retry-failed to try them again")
    if record.message and record.status != JobStatus.DONE:
        lines.append(record.message)
    return "\n".join(lines)
