"""Synthetic training data for the tiny model: one coloured shape per image.

Each example is a small image with a single shape (``red square``, ``blue
circle``, ...), the Rex-Omni prompt asking for it (``converters.build_prompt``)
and the answer in the training grammar (``converters.format_answer``), so the
tiny model learns the same text interface as the real one. A share of the
questions (``ABSENT_FRACTION``) asks for a shape on an image without one (the
background alone); the answer is then Rex-Omni's
``<|box_start|>None<|box_end|>``, so the model learns to say that nothing is
there instead of drawing a box anyway.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw

from converters.prediction import Prediction, RegionType
from converters.prompts import build_prompt
from converters.tasks import Task
from worker.training.trainer import TrainingExample

IMAGE_SIZE = 112
"""Pixels per side: 8x8 patches, 16 visual tokens, the cheapest size that still
shows the shape's position clearly (and exactly the processor's min_pixels)."""
MIN_SHAPE = 24
"""Smallest shape side in pixels: smaller shapes cover under 2 patches."""
MAX_SHAPE = 80
"""Largest shape side in pixels, so positions still vary."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (235, 215, 30),
}
"""Shape colours: far apart in RGB, none close to the grey backgrounds."""
SHAPES = ("square", "circle", "triangle")
"""Shapes drawn; the phrase asked for is ``"<colour> <shape>"``."""
BACKGROUND_LEVELS = (60, 200)
"""Range of the grey background level (each channel jittered by +-10)."""
OCR_CATEGORY = "text line"
"""The category an ``ocr_polygon`` prompt asks for; the shape's phrase is the text."""

TRAINABLE_TASKS = (Task.DETECTION, Task.POINTING, Task.OCR_POLYGON)
ABSENT_TASKS = (Task.DETECTION, Task.POINTING)
"""Tasks whose answer can be ``None`` (OCR reads whatever text is there)."""
PHRASES = tuple(f"{colour} {shape}" for colour in COLOURS for shape in SHAPES)
"""Every phrase the synthetic images can hold."""
ABSENT_FRACTION = 0.25
"""Share of training questions about an image without any shape (answer
``None``): three quarters of the steps still teach where the shape is. Absent
means no shape at all because the tiny model (2 layers) cannot learn in the
CI budget to bind a phrase to the shape drawn: asked for another phrase than
the shape's (1300 steps, a quarter absent; or 1600 steps, 40% absent, always
another colour) it learnt only the prior, P(None) 0.25-0.4 whatever the
image (ROC AUC 0.59-0.61 between present and absent), and as that beats any one
bin of its spread-out coordinates it answered None to every question."""


@dataclass
class ShapeSample:
    """One rendered image and the truth about its shape (pixels)."""

    image: Image.Image
    phrase: str
    box: tuple[float, float, float, float]
    polygon: tuple[tuple[float, float], ...]


def render_background(rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """A ``size`` x ``size`` image of a random grey (each channel jittered)."""
    level = rng.randint(*BACKGROUND_LEVELS)
    background = tuple(max(0, min(255, level + rng.randint(-10, 10))) for _ in range(3))
    return Image.new("RGB", (size, size), background)


def render_shape(rng: random.Random, size: int = IMAGE_SIZE) -> ShapeSample:
    """Draw one random shape on a grey background; box/polygon are in pixels."""
    image = render_background(rng, size)
    colour = rng.choice(list(COLOURS))
    shape = rng.choice(SHAPES)
    side = rng.randint(MIN_SHAPE, MAX_SHAPE)
    x0 = rng.randint(0, size - side)
    y0 = rng.randint(0, size - side)
    x1, y1 = x0 + side, y0 + side
    draw = ImageDraw.Draw(image)
    if shape == "square":
        polygon = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=COLOURS[colour])
    elif shape == "circle":
        polygon = tuple(
            (x0 + side / 2 + side / 2 * c, y0 + side / 2 + side / 2 * s)
            for c, s in (
                (1, 0),
                (0.7071, 0.7071),
                (0, 1),
                (-0.7071, 0.7071),
                (-1, 0),
                (-0.7071, -0.7071),
                (0, -1),
                (0.7071, -0.7071),
            )
        )
        draw.ellipse((x0, y0, x1 - 1, y1 - 1), fill=COLOURS[colour])
    else:
        polygon = ((x0 + side / 2, y0), (x1, y1), (x0, y1))
        draw.polygon(polygon, fill=COLOURS[colour])
    return ShapeSample(
        image=image,
        phrase=f"{colour} {shape}",
        box=(float(x0), float(y0), float(x1), float(y1)),
        polygon=tuple((float(x), float(y)) for x, y in polygon),
    )


def truth(sample: ShapeSample, task: Task) -> Prediction:
    """The prediction a perfect model makes for ``sample`` under ``task``."""
    if task is Task.DETECTION:
        return Prediction(RegionType.BOX, sample.phrase, sample.box)
    if task is Task.POINTING:
        x0, y0, x1, y1 = sample.box
        return Prediction(
            RegionType.POINT, sample.phrase, ((x0 + x1) / 2, (y0 + y1) / 2)
        )
    if task is Task.OCR_POLYGON:
        return Prediction(
            RegionType.POLYGON, OCR_CATEGORY, sample.polygon, text=sample.phrase
        )
    raise ValueError(
        f"no synthetic data for task {task.value!r}; "
        f"choose one of: {', '.join(t.value for t in TRAINABLE_TASKS)}"
    )


def make_example(sample: ShapeSample, task: Task | str) -> TrainingExample:
    """Prompt and answer text for ``sample``, as the real model sees them."""
    from converters.answer import format_answer

    task = Task.from_value(task)
    target = truth(sample, task)
    categories = [OCR_CATEGORY] if task is Task.OCR_POLYGON else [sample.phrase]
    width, height = sample.image.size
    return TrainingExample(
        image=sample.image,
        prompt=build_prompt(task, categories),
        answer=format_answer(task, [target], width, height),
    )


def absent_example(
    image: Image.Image, phrase: str, task: Task | str
) -> TrainingExample:
    """A question about ``phrase`` on an ``image`` that does not hold it; the
    answer is ``<|box_start|>None<|box_end|>`` as upstream's grammar writes it."""
    from converters.answer import format_answer

    task = Task.from_value(task)
    if task not in ABSENT_TASKS:
        allowed = ", ".join(t.value for t in ABSENT_TASKS)
        raise ValueError(
            f"task {task.value!r} has no absent answer (asked {phrase!r}); "
            f"absent phrases only for: {allowed}"
        )
    width, height = image.size
    return TrainingExample(
        image=image,
        prompt=build_prompt(task, [phrase]),
        answer=format_answer(task, [], width, height, categories=[phrase]),
    )


def synthetic_examples(
    task: Task | str = Task.DETECTION,
    *,
    seed: int = 0,
    size: int = IMAGE_SIZE,
    absent_fraction: float = ABSENT_FRACTION,
) -> Iterator[TrainingExample]:
    """An endless, seeded stream of training examples; for ``ABSENT_TASKS`` a
    share ``absent_fraction`` asks for a shape on an image without one."""
    task = Task.from_value(task)
    if not 0.0 <= absent_fraction <= 1.0:
        raise ValueError(f"absent_fraction must be in [0, 1], got {absent_fraction}")
    if task not in ABSENT_TASKS:
        absent_fraction = 0.0
    rng = random.Random(seed)
    while True:
        if absent_fraction and rng.random() < absent_fraction:
            image = render_background(rng, size)
            yield absent_example(image, rng.choice(PHRASES), task)
        else:
            yield make_example(render_shape(rng, size), task)


HELD_OUT_SEED_OFFSET = 1_000_003
"""Held-out samples use ``seed + this``: a stream disjoint from training's."""


def held_out_samples(count: int, *, seed: int = 0, size: int = IMAGE_SIZE):
    """``count`` samples the trainer never saw (a different seed stream)."""
    rng = random.Random(seed + HELD_OUT_SEED_OFFSET)
    return [render_shape(rng, size) for _ in range(count)]


def box_iou(a, b) -> float:
    """Intersection over union of two xyxy boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def polygon_iou(a, b, size: int) -> float:
    """IoU of two polygons rasterised on a ``size`` x ``size`` canvas."""
    import numpy as np

    def mask(points):
        canvas = Image.new("1", (size, size), 0)
        ImageDraw.Draw(canvas).polygon([tuple(p) for p in points], fill=1)
        return np.asarray(canvas, dtype=bool)

    ma, mb = mask(a), mask(b)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else 0.0


def evaluate(
    engine, task: Task | str = Task.DETECTION, *, count: int = 50, seed: int = 0
) -> dict[str, float]:
    """How well ``engine`` finds the shape on ``count`` held-out images.

    Runs the real pipeline (prompt, generate, parse, score) in one batch and
    scores the best-scoring prediction per image. Returns for detection
    ``mean_iou`` and ``ap50`` (share of images with IoU >= 0.5); for pointing
    ``inside`` (share of points inside the shape's box); for ocr_polygon
    ``mean_iou`` (mask IoU) and ``ap50``; and ``phrase_accuracy`` (the phrase
    or text written matches) for all.
    """
    from common.jobspec import ModelCall
    from worker.engines.registry import base_sampling
    from worker.pipeline import run_batch

    task = Task.from_value(task)
    samples = held_out_samples(count, seed=seed)
    calls = [
        ModelCall(
            task=task,
            categories=[OCR_CATEGORY] if task is Task.OCR_POLYGON else [s.phrase],
            generation={"max_new_tokens": 64},
        )
        for s in samples
    ]
    results = run_batch(
        engine,
        list(zip([s.image for s in samples], calls)),
        sampling=base_sampling(),
    )
    scores, phrases = [], 0
    for sample, result in zip(samples, results, strict=True):
        ranked = sorted(result.predictions, key=lambda p: -(p.score or 0.0))
        best = ranked[0] if ranked else None
        if best is None:
            scores.append(0.0)
            continue
        phrases += (
            best.text if task is Task.OCR_POLYGON else best.label
        ) == sample.phrase
        if task is Task.DETECTION:
            scores.append(box_iou(best.coords, sample.box))
        elif task is Task.POINTING:
            x, y = best.coords
            x0, y0, x1, y1 = sample.box
            scores.append(float(x0 <= x <= x1 and y0 <= y <= y1))
        else:
            scores.append(polygon_iou(best.coords, sample.polygon, sample.image.width))
    metrics = {"images": float(count), "phrase_accuracy": phrases / count}
    if task is Task.POINTING:
        metrics["inside"] = sum(scores) / count
    else:
        metrics["mean_iou"] = sum(scores) / count
        metrics["ap50"] = sum(s >= 0.5 for s in scores) / count
    return metrics
