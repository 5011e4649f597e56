"""What tiled inference costs besides the model, and what batching the tiles buys.

Run::

    .venv/bin/python bench/bench_tiling.py                 # trained tiny model, CPU
    .venv/bin/python bench/bench_tiling.py --model DIR --device cuda --images 16

The model is the trained tiny model the tests build (``tests/conftest.py``
caches it under ``.cache/test-models``; ``rexlabel make-test-model DIR
--train-steps 1300`` makes one), on ``--device``. Each image is a 448 px scene of
six shapes (``worker.training.scenes``) cut into 16 tiles of 112 px (overlap
0, no whole-image pass), the tiny model's own size, through the real pipeline
(``worker.pipeline.run_batch``).

Figures printed (medians of ``--repeats`` runs; no assertions):

- per image: engine seconds (``engine.generate``, wall) against the tiling
  step's own work: cutting the tiles, moving each tile's regions to the
  image, keeping each tile's core and merging (``tile_cut`` + ``tile_merge``
  timings), and everything else the pipeline does outside the engine
  (prompts, parsing, scoring, limits), as a share of the engine time.
  Goal: tiling and merging under 5% of the engine time.
- images per second with all tiles of all images in one engine batch
  against the same tiles sent to the engine one at a time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from common.jobspec import ModelCall  # noqa: E402 - after the path fix above
from worker.engines.base import (  # noqa: E402
    Engine,
    GenerationRequest,
    GenerationResult,
)
from worker.pipeline import run_batch  # noqa: E402
from worker.training.scenes import render_scene  # noqa: E402

TILE = {"mode": "on", "size": 112, "overlap": 0.0, "whole_image": False}
"""16 tiles of a 448 px scene, each the size the tiny model learnt."""
MAX_NEW_TOKENS = 64
"""A box or None per tile needs under 20 tokens; this only caps a runaway."""
TILES_PER_IMAGE = 16


class TimedEngine(Engine):
    """Delegates to ``engine`` and adds up its wall seconds; ``one_at_a_time``
    sends each request of a batch alone, as a pipeline without batching would."""

    def __init__(self, engine: Engine, one_at_a_time: bool = False) -> None:
        self.engine = engine
        self.one_at_a_time = one_at_a_time
        self.max_pixels = getattr(engine, "max_pixels", None)
        self.seconds = 0.0

    @property
    def model_id(self) -> str:
        return self.engine.model_id

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        started = time.perf_counter()
        try:
            if not self.one_at_a_time:
                return self.engine.generate(requests)
            return [self.engine.generate([r])[0] for r in requests]
        finally:
            self.seconds += time.perf_counter() - started


def _default_model() -> Path:
    cache = REPO_ROOT / ".cache" / "test-models"
    found = sorted(cache.glob("tiny-detection-*/config.json"))
    if not found:
        raise SystemExit(
            "no trained tiny model in .cache/test-models: run the tests once, or "
            "rexlabel make-test-model DIR --train-steps 1300 and pass --model DIR"
        )
    return found[-1].parent


def _run(engine: TimedEngine, scenes) -> dict[str, float]:
    calls = [
        ModelCall(
            task="detection",
            categories=[s.phrase],
            generation={"max_new_tokens": MAX_NEW_TOKENS},
            tile=TILE,
        )
        for s in scenes
    ]
    engine.seconds = 0.0
    started = time.perf_counter()
    results = run_batch(engine, [(s.image, c) for s, c in zip(scenes, calls)])
    wall = time.perf_counter() - started
    assert all(len(r.tiles) == TILES_PER_IMAGE for r in results)
    tiling = sum(r.timings["tile_cut"] + r.timings["tile_merge"] for r in results)
    return {
        "wall": wall,
        "engine": engine.seconds,
        "tiling": tiling,
        "rest": wall - engine.seconds - tiling,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from worker.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(args.model or _default_model()), device=args.device)
    scenes = [render_scene(random.Random(seed)) for seed in range(args.images)]
    batched, alone = TimedEngine(engine), TimedEngine(engine, one_at_a_time=True)
    _run(batched, scenes[:1])  # warm-up: first-call allocations, kernels
    runs = {"batched": [], "one at a time": []}
    for _ in range(args.repeats):
        runs["batched"].append(_run(batched, scenes))
        runs["one at a time"].append(_run(alone, scenes))

    images = len(scenes)
    print(
        f"{images} images x {TILES_PER_IMAGE} tiles of 112 px, {args.device}, "
        f"median of {args.repeats} runs"
    )
    for name, samples in runs.items():
        median = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        print(
            f"  {name:>13}: {images / median['wall']:7.2f} images/s; per image "
            f"engine {1000 * median['engine'] / images:7.1f} ms, tiling+merge "
            f"{1000 * median['tiling'] / images:5.2f} ms "
            f"({100 * median['tiling'] / median['engine']:.2f}% of the engine), "
            f"rest of the pipeline {1000 * median['rest'] / images:5.2f} ms "
            f"({100 * median['rest'] / median['engine']:.2f}%)"
        )


if __name__ == "__main__":
    main()
