"""``rexlabel models``: a project's fine-tuned runs, and rolling back to one.

Usage::

    rexlabel models list --project 3 [--json]
    rexlabel models rollback --project 3 [--to RUN]

Runs live in ``<REXLABEL_MODELS_DIR>/project-<id>/`` (``common.model_store``);
the one named by its ``current`` pointer is served by workers whose
REXLABEL_MODEL is that directory (they reload before their next chunk).
``rollback`` points ``current`` at ``--to RUN``, or by default at the newest
finished run older than the current one. Nothing is deleted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_NO_RUN = 2
"""No such project directory or run, or nothing to roll back to (usage error)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list a project's fine-tuned runs, or roll back to one",
        description="A project's fine-tuned runs (Start Training) and its "
        "current pointer.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="the project's runs, newest first")
    listing.add_argument("--project", type=int, required=True)
    listing.add_argument("--json", action="store_true")
    rollback = actions.add_parser(
        "rollback", help="point current at an earlier run (default: the one before)"
    )
    rollback.add_argument("--project", type=int, required=True)
    rollback.add_argument("--to", default=None, metavar="RUN", help="run name")
    parser.set_defaults(func=run)


def runs(models_dir: Path) -> list[dict[str, Any]]:
    """Finished runs (a directory with a model card), newest first: ``name``,
    ``method``, ``weights_sha256``, ``current``, or ``error`` for a bad card."""
    from common.model_store import (
        MODEL_CARD_NAME,
        RUN_NAME,
        ModelStoreError,
        read_card,
        read_pointer,
    )

    try:
        current = read_pointer(models_dir)
    except ModelStoreError:
        current = None
    found = []
    for path in sorted(models_dir.iterdir(), reverse=True):
        if not (RUN_NAME.match(path.name) and (path / MODEL_CARD_NAME).is_file()):
            continue
        item: dict[str, Any] = {"name": path.name, "current": path.name == current}
        try:
            card = read_card(path) or {}
            item.update(
                method=card.get("method"), weights_sha256=card.get("weights_sha256")
            )
        except ModelStoreError as exc:
            item["error"] = str(exc)
        found.append(item)
    return found


def previous_run(models_dir: Path) -> str | None:
    """The newest readable run older than the current one (by name: run names
    start with their UTC time), None when there is none."""
    from common.model_store import read_pointer

    current = read_pointer(models_dir)
    older = [
        r["name"]
        for r in runs(models_dir)
        if "error" not in r and (current is None or r["name"] < current)
    ]
    return older[0] if older else None


def run(args: argparse.Namespace) -> int:
    from common.model_store import ModelStoreError, project_models_dir, publish

    models_dir = project_models_dir(args.project)
    if not models_dir.is_dir():
        print(f"rexlabel models: {models_dir} does not exist", file=sys.stderr)
        return EXIT_NO_RUN
    try:
        if args.action == "list":
            found = runs(models_dir)
            if args.json:
                print(json.dumps(found, indent=1))
            for item in [] if args.json else found:
                mark = "*" if item["current"] else " "
                detail = item.get("error") or f"{item['method']}"
                print(f"{mark} {item['name']}  {detail}")
            if not found and not args.json:
                print(f"no finished runs in {models_dir}")
            return 0
        target = args.to or previous_run(models_dir)
        if target is None:
            print(
                f"rexlabel models: no finished run older than the current one in "
                f"{models_dir}; name one with --to",
                file=sys.stderr,
            )
            return EXIT_NO_RUN
        publish(models_dir, target)
    except ModelStoreError as exc:
        print(f"rexlabel models: {exc}", file=sys.stderr)
        return EXIT_NO_RUN
    print(f"{models_dir}/current -> {target} (workers reload before their next chunk)")
    return 0
