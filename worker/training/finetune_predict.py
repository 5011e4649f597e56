"""Answers of a model to stored examples' prompts, read back into regions.

Held-out examples are asked exactly as they were stored (the prompt inference
sends), greedily, and each answer is parsed against the ORIGINAL image's size
(the stored image may be smaller; the bins are fractions of the original), so
the regions compare directly with the example's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from common.finetune_data import Record
from converters.parser import parse_output
from converters.prediction import predictions_to_dicts
from converters.tasks import Task
from worker.engines.base import GenerationRequest

PREDICT_BATCH_SIZE = 8
"""Prompts per generate call: the engine batches them on one device."""
OCR_TASKS = (Task.OCR_BOX, Task.OCR_POLYGON)


@dataclass(frozen=True)
class Answer:
    """What the model answered to one record: its text and the regions read
    from it (prediction dicts, pixels of the original image)."""

    text: str
    regions: list[dict[str, Any]]
    error: str | None = None
    truncated: bool = False
    """The answer hit the token cap (or the runaway guard): cut short."""


def predict_records(engine, records: Sequence[Record], images) -> list[Answer]:
    """The answer to every record, in order. ``images`` maps a record's stored
    image path to the image (``worker.training.finetune.ImageCache``)."""
    from worker.engines.registry import base_sampling

    sampling = base_sampling()
    answers: list[Answer] = []
    for start in range(0, len(records), PREDICT_BATCH_SIZE):
        chunk = records[start : start + PREDICT_BATCH_SIZE]
        requests = [
            GenerationRequest(
                image=images.get(r.image), prompt=r.prompt, sampling=sampling
            )
            for r in chunk
        ]
        for record, result in zip(chunk, engine.generate(requests), strict=True):
            answer = read_answer(record, result.text)
            answers.append(replace(answer, truncated=result.truncated))
    return answers


def read_answer(record: Record, text: str) -> Answer:
    """Parse ``text`` as the answer to ``record`` (never raises: a malformed
    answer is an answer with no regions and the parser's reason)."""
    task = Task.from_value(record.task)
    category = None
    if task in OCR_TASKS and record.categories:
        category = record.categories[0]
    elif task is Task.KEYPOINT and record.categories:
        category = record.categories[0]
    try:
        parsed = parse_output(
            text, task, record.width, record.height, category=category
        )
    except ValueError as exc:
        return Answer(text, [], f"unreadable answer: {exc}")
    return Answer(text, predictions_to_dicts(parsed.predictions))
