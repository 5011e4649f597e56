"""What a fine-tune replays so the model keeps what it knew.

A run that sees only a project's new class forgets the rest: on the tiny
model, LoRA on 36 images of a new class alone took the old classes' labelled
IoU from 0.82 to 0.00. Every batch therefore mixes in replay (half by
default, ``worker.training.finetune.DEFAULT_REPLAY_SHARE``) from two sources:

- **the project's annotations of other labels**: with ``--focus LABELS``,
  every example that holds no region of a focus label is replayed rather
  than learnt (it still keeps its place in every batch);
- **images the base model labelled itself**: the project's images, asked for
  phrases the project does not label (:data:`DEFAULT_REPLAY_PHRASES` unless
  ``--replay-phrases``), answered by the base model before the first step
  (the worker fills these requests). Images of tasks without an annotation
  (the project's kind of image, and no annotation says otherwise), asked
  again with other phrases until there are enough; annotated images only
  when the project has no other (``backend.finetune.prepare``).

Measured on the tiny model (``docs/finetune.md``): replaying the base's own
answers on images of the old classes kept them at 0.74 (from 0.82) while the
new class reached 0.70; replaying them on the new class's images only kept
0.46.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from common.finetune_data import Record
from converters.prompts import build_prompt
from converters.tasks import Task

DEFAULT_REPLAY_PHRASES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove",
    "skateboard", "surfboard", "tennis racket", "bottle", "wine glass", "cup",
    "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
"""COCO's 80 categories: the everyday vocabulary Rex-Omni was trained to
detect, asked on the project's own images to keep its general skill."""
REPLAY_PHRASES_PER_PROMPT = 1
"""Phrases one replay prompt asks: one, as a user asks for one kind of thing
(and as the tiny model was trained)."""
DEFAULT_REPLAY_IMAGES_PER_EXAMPLE = 1.0
"""Replay images per training example: as many as the new examples, enough
for half of each batch to see each about as often as a new one."""


def replay_phrases(
    chosen: Sequence[str] | None, project_phrases: Iterable[str]
) -> list[str]:
    """``chosen``, or :data:`DEFAULT_REPLAY_PHRASES` without the project's own
    phrases (those are the annotations' to teach, case-insensitive)."""
    if chosen is not None:
        return [p.strip() for p in chosen if p.strip()]
    own = {p.strip().lower() for p in project_phrases}
    return [p for p in DEFAULT_REPLAY_PHRASES if p.lower() not in own]


def replay_request(
    image: str,
    width: int,
    height: int,
    phrases: Sequence[str],
    rng: random.Random,
    *,
    task_id: int | None,
    held_out: bool,
) -> Record:
    """A detection question for the base model to answer (``answer`` empty
    until the worker fills it)."""
    asked = tuple(
        rng.sample(list(phrases), min(REPLAY_PHRASES_PER_PROMPT, len(phrases)))
    )
    return Record(
        prompt=build_prompt(Task.DETECTION, list(asked)),
        answer="",
        image=image,
        task=Task.DETECTION.value,
        width=width,
        height=height,
        categories=asked,
        task_id=task_id,
        source="prediction",
        held_out=held_out,
    )
