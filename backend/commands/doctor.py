"""``rexlabel doctor``: check this set-up and say how to fix what is wrong.

Usage::

    rexlabel doctor                       # every check; exit 1 if one fails
    rexlabel doctor --image /data/upload/1/a.jpg --task 12
    rexlabel doctor --project 3 --json

Checks Redis and the workers, Label Studio (URL, token, one image download),
the model (local directory, Hugging Face cache or OpenAI-compatible server), GPU
visibility and the SAM checkpoint. In Docker Compose run it in both images:
``docker compose exec backend rexlabel doctor`` and ``... exec worker ...``
(the backend image has no torch, so model, GPU and SAM checks are skipped there).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

EXIT_PROBLEM = 1
"""Exit code when at least one check failed (warnings alone exit 0)."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="Check Redis, Label Studio, model, GPU and SAM; print fixes.",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--image",
        help="An image reference to download (a task's data value); default: "
        "the first task of the first project.",
    )
    parser.add_argument("--task", type=int, help="Task id of --image (cloud URIs).")
    parser.add_argument("--project", type=int, help="Project to take a task from.")
    parser.add_argument("--json", action="store_true", help="Print JSON rows.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from backend.doctor.report import Status, format_report
    from backend.doctor.run import run_checks

    checks = run_checks(image=args.image, task_id=args.task, project=args.project)
    if args.json:
        print(json.dumps([check.to_dict() for check in checks], indent=2))
    else:
        print(format_report(checks))
    return EXIT_PROBLEM if any(c.status is Status.FAIL for c in checks) else 0
