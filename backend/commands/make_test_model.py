"""``rexlabel make-test-model``: build the tiny offline Rex-Omni stand-in.

Usage::

    rexlabel make-test-model DIR                       # random weights (~1 s)
    rexlabel make-test-model DIR --train-steps 1000    # trained: finds the shape
    rexlabel make-test-model DIR --train-steps 1000 --task pointing --seed 1
    rexlabel make-test-model DIR --recipe readme       # README model (~18 min)

The directory holds a tiny Qwen2.5-VL with Rex-Omni's vocabulary (Qwen's
special tokens, ``<0>``..``<999>``), the Qwen2.5-VL chat template and a Qwen2-VL
image processor. Point ``REXLABEL_MODEL`` at it to run everything offline.
With ``--train-steps`` it is trained on synthetic 112x112 images with one
coloured shape each, and the command reports how well it finds them on
held-out images. ``--recipe readme`` builds the README model that the
browser and end-to-end tests run the README's configs on
(worker.training.readme_model: person, car, truck, cat and dog drawn,
prompts of one to three phrases, visual prompts), and reports its scores on
held-out scenes.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

TRAINABLE_TASKS = ("detection", "pointing", "ocr_polygon")
"""Tasks the synthetic data can teach (worker.training.synthetic.TRAINABLE_TASKS)."""
EVALUATION_IMAGES = 50
"""Held-out images scored after training: enough for a stable mean IoU."""
RECIPES = ("shapes", "readme")
"""``shapes``: one coloured shape per image, one task; ``readme``: the README
model's recipe."""


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "make-test-model",
        help="Build a tiny offline Rex-Omni stand-in (optionally trained).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("directory", help="Where to write the model.")
    parser.add_argument(
        "--train-steps",
        type=int,
        default=None,
        help="Training steps (default: 0, random weights; with --recipe readme "
        "the recipe's own).",
    )
    parser.add_argument(
        "--task",
        choices=TRAINABLE_TASKS,
        default="detection",
        help="What to train (default: %(default)s).",
    )
    parser.add_argument(
        "--recipe",
        choices=RECIPES,
        default="shapes",
        help="What to build (default: %(default)s); readme trains its own "
        "number of steps unless --train-steps says otherwise, and ignores --task.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed (default: 0).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.train_steps is not None and args.train_steps < 0:
        print("rexlabel make-test-model: --train-steps must be >= 0", file=sys.stderr)
        return 2

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.recipe == "readme":
        return _readme_model(args, log)
    if args.train_steps is None:
        args.train_steps = 0
    from worker.training.tiny_model import make_test_model

    out = make_test_model(
        args.directory,
        train_steps=args.train_steps,
        task=args.task,
        seed=args.seed,
        log=log,
    )
    report: dict[str, Any] = {"directory": str(out), "train_steps": args.train_steps}
    if args.train_steps:
        from worker.engines.transformers_engine import TransformersEngine
        from worker.training.synthetic import evaluate

        engine = TransformersEngine(str(out), device="cpu")
        report["task"] = args.task
        report.update(evaluate(engine, args.task, count=EVALUATION_IMAGES))
    print(json.dumps(report))
    return 0


def _readme_model(args: argparse.Namespace, log) -> int:
    from worker.training.readme_model import STEPS, make_readme_model

    steps = STEPS if args.train_steps is None else args.train_steps
    out = make_readme_model(args.directory, steps=steps, seed=args.seed, log=log)
    report: dict[str, Any] = {
        "directory": str(out),
        "recipe": "readme",
        "train_steps": steps,
    }
    if steps:
        from worker.engines.transformers_engine import TransformersEngine
        from worker.training.readme_scores import (
            keypoint_accuracy,
            phrase_binding,
            visual_prompt_recall,
        )

        engine = TransformersEngine(str(out), device="cpu")
        report["three_phrases"] = phrase_binding(engine, phrases=3)
        report["visual_prompting"] = visual_prompt_recall(engine)
        report["keypoints"] = keypoint_accuracy(engine)
    print(json.dumps(report))
    return 0
