"""The ``rexlabel`` command line.

Usage::

    rexlabel serve                      # the Label Studio ML backend on :9090
    rexlabel worker                     # a GPU worker listening on Redis queues
    rexlabel predict IMG --task detection --categories "person,car"
    rexlabel make-test-model DIR --train-steps 400
    rexlabel prelabel IMAGES... --task detection --categories person --out out.coco.json
    rexlabel export --project 1 --out coco.json
    rexlabel convert FILE --out coco.json
    rexlabel evaluate --gt export.json --pred labels.jsonl --out eval/
    rexlabel jobs list|status ID|cancel ID|resume ID
    rexlabel models list --project 3 | rexlabel models rollback --project 3
    rexlabel config | rexlabel doctor

Each subcommand lives in ``backend/commands/<name>.py`` and exposes
``add_parser(subparsers)``, which registers the command with ``func`` set to a
callable taking the parsed arguments and returning an exit code. Heavy imports
(torch, transformers, Flask) happen inside those functions, so ``rexlabel --help``
stays fast and the backend never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "serve",
    "worker",
    "predict",
    "make_test_model",
    "prelabel",
    "export",
    "convert",
    "evaluate",
    "finetune",
    "jobs",
    "models",
    "config",
    "doctor",
)
"""Modules under ``backend.commands``, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rexlabel",
        description="Model-assisted labeling with Rex-Omni.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"backend.commands.{name}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # command not installed in this build
            raise
        module.add_parser(subparsers)
    return parser


BAD_CONFIGURATION_EXIT = 2
"""Exit code for a bad environment variable: a usage error, as argparse's."""


def main(argv: list[str] | None = None) -> int:
    from common.settings import SettingsError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"rexlabel {args.command}: bad configuration: {exc}", file=sys.stderr)
        return BAD_CONFIGURATION_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
