"""The tiny model's fine-tuning proof (issue 14): a class it never saw.

The trained tiny model finds red, green, blue and yellow squares, circles and
triangles. A purple square it boxes too (its two layers cannot bind a phrase
to a colour), but it writes another colour's name: asked for "purple square"
its answers carry the label "yellow square" or the like, so in a project
labelled "purple square" it scores a labelled IoU of 0. Fine-tuning must teach
the new name without losing the old ones.

Scoring is by *labelled* IoU (the best box carrying the phrase asked, 0 if
the label differs), on held-out images the run never saw.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import ImageDraw

from worker.training.synthetic import (
    IMAGE_SIZE,
    MAX_SHAPE,
    MIN_SHAPE,
    PHRASES,
    ShapeSample,
    box_iou,
    held_out_samples,
    render_background,
)

NEW_PHRASE = "purple square"
NEW_COLOUR = (140, 40, 190)
"""Purple: far from the four trained colours and from the grey backgrounds."""
OLD_PHRASES = PHRASES
"""The phrases the base tiny model was trained on: what replay asks."""
HELD_OUT = 60
"""Held-out images per score: the IoU's standard error is about 0.05."""
HELD_OUT_SEED = 3_000_017
"""Seed of the new class's held-out images (disjoint from the project's)."""


def render_new(rng: random.Random) -> ShapeSample:
    """One purple square on a grey background (truth in pixels)."""
    image = render_background(rng)
    side = rng.randint(MIN_SHAPE, MAX_SHAPE)
    x0, y0 = rng.randint(0, IMAGE_SIZE - side), rng.randint(0, IMAGE_SIZE - side)
    x1, y1 = x0 + side, y0 + side
    ImageDraw.Draw(image).rectangle((x0, y0, x1 - 1, y1 - 1), fill=NEW_COLOUR)
    polygon = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
    return ShapeSample(
        image=image,
        phrase=NEW_PHRASE,
        box=(float(x0), float(y0), float(x1), float(y1)),
        polygon=tuple((float(x), float(y)) for x, y in polygon),
    )


def write_images(folder: Path, prefix: str, samples: list[ShapeSample]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, sample in enumerate(samples):
        path = folder / f"{prefix}_{n:03d}.png"
        sample.image.save(path)
        paths.append(path)
    return paths


def labelled_iou(engine, samples: list[ShapeSample]) -> float:
    """Mean over ``samples`` of the IoU of the best-scoring box whose label is
    the phrase asked (0 when the model answers another label or nothing)."""
    from common.jobspec import ModelCall
    from worker.engines.registry import base_sampling
    from worker.pipeline import run_batch

    calls = [
        ModelCall(
            task="detection", categories=[s.phrase], generation={"max_new_tokens": 64}
        )
        for s in samples
    ]
    results = run_batch(
        engine, list(zip([s.image for s in samples], calls)), sampling=base_sampling()
    )
    total = 0.0
    for sample, result in zip(samples, results, strict=True):
        best = max(result.predictions, key=lambda p: p.score or 0.0, default=None)
        if best is not None and best.label == sample.phrase:
            total += box_iou(best.coords, sample.box)
    return total / len(samples)


def new_and_old_iou(engine) -> tuple[float, float]:
    """(labelled IoU on held-out purple squares, on held-out old shapes)."""
    rng = random.Random(HELD_OUT_SEED)
    new = [render_new(rng) for _ in range(HELD_OUT)]
    return labelled_iou(engine, new), labelled_iou(
        engine, held_out_samples(HELD_OUT, seed=3)
    )
