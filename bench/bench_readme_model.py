"""What the README model costs to train and how well it answers.

Run::

    .venv/bin/python bench/bench_readme_model.py             # build, time, score
    .venv/bin/python bench/bench_readme_model.py --model DIR # score a built one

The README model (``worker.training.readme_model``) is the tiny model that
answers the README's configs in the browser and end-to-end tests (its
docstring has every run's figures). Without ``--model`` it is built in a
temporary directory, and the training's wall time and the step time of each
task's batches are printed; then, on scenes training never drew
(``worker.training.readme_scores``):

- three-phrase detection prompts: ``right_phrase`` (of the boxes on an
  object, the share with that object's phrase; the issue's goal: 0.9),
  ``recall``, ``stray`` and ``quiet_absent``; one-phrase prompts likewise;
- visual prompts: recall and precision of the look-alikes;
- person keypoints: people found, PCK at a tenth of the box height, mean
  joint error (the landed recipe trains no keypoints, see
  ``readme_tasks.TASK_SHARES``: these read 0 unless they are added back).

Figures only, no assertions.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

STEP_SAMPLES = 3
"""Batches timed per task for the step-time figure."""


def step_times(seed: int = 0) -> dict[str, float]:
    """Seconds per training step of each task's batches (the README sizes,
    batch 32), on a fresh model: what the task shares cost."""
    from worker.training import readme_model
    from worker.training.readme_tasks import _MAKERS
    from worker.training.tiny_model import build_model, build_processor, build_tokenizer
    from worker.training.trainer import TrainConfig, train

    tokenizer = build_tokenizer(seed, readme_model.tokenizer_lines(seed))
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, readme_model.SIZES, seed, readme_model.ROPE_THETA)
    times = {}
    for task, make in _MAKERS.items():
        rng = random.Random(seed)
        examples = [make(rng) for _ in range(32 * STEP_SAMPLES)]
        config = TrainConfig(steps=STEP_SAMPLES, seed=seed)
        started = time.perf_counter()
        train(model, processor, examples, config)
        times[task.value] = (time.perf_counter() - started) / STEP_SAMPLES
    return times


def scores(model_dir: str) -> dict[str, dict[str, float]]:
    from worker.engines.transformers_engine import TransformersEngine
    from worker.training.readme_scores import (
        keypoint_accuracy,
        phrase_binding,
        visual_prompt_recall,
    )

    engine = TransformersEngine(model_dir, device="cpu")
    started = time.perf_counter()
    figures = {
        "three_phrases": phrase_binding(engine, count=100, phrases=3),
        "one_phrase": phrase_binding(engine, count=100, phrases=1),
        "visual_prompting": visual_prompt_recall(engine, count=60),
        "keypoints": keypoint_accuracy(engine, count=30),
    }
    figures["scoring_seconds"] = {"wall": round(time.perf_counter() - started, 1)}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="Score this built README model instead.")
    args = parser.parse_args(argv)
    if args.model:
        print(json.dumps(scores(args.model), indent=2))
        return 0
    from worker.training.readme_model import STEPS, make_readme_model

    print("seconds per step:", json.dumps(step_times()), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        make_readme_model(tmp, steps=STEPS)
        print(f"training {STEPS} steps: {time.perf_counter() - started:.0f} s")
        print(json.dumps(scores(tmp), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
