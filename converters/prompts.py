"""Rex-Omni prompts: the exact question text per task, and the chat messages.

The templates are the model's trained interface (upstream's ``rex_omni/tasks.py``);
they are reproduced byte for byte, upstream's doubled quote in ``gui_grounding``
included, because that is what the model was trained and evaluated with.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from typing import Any

from converters.geometry import box_to_tokens
from converters.keypoint_sets import get_keypoint_set
from converters.tasks import Task

SYSTEM_PROMPT = "You are a helpful assistant"
"""Upstream inference's system prompt, without a final period (training had one;
the released wrapper and the eval scripts send it without, so we do too)."""

CATEGORY_SEPARATOR = ", "
"""Categories are joined with a comma and a space, as upstream does."""

VISUAL_PROMPT_KEY = "object_1"
"""Upstream sends all reference boxes as one visual class under this key."""

PROMPT_TEMPLATES: dict[Task, str] = {
    Task.DETECTION: (
        "Detect {categories}. Output the bounding box coordinates in "
        "[x0, y0, x1, y1] format."
    ),
    Task.POINTING: "Point to {categories}.",
    Task.VISUAL_PROMPTING: (
        "Given reference boxes {visual_prompt} indicating one or more objects, "
        "find all similar objects in the image and output their bounding boxes."
    ),
    Task.KEYPOINT: (
        "Can you detect each {categories} in the image using a [x0, y0, x1, y1] "
        "box format, and then provide the coordinates of its {keypoints} as "
        "[x0, y0]? Output the answer in JSON format."
    ),
    Task.OCR_BOX: "Detect all {categories} and recognize them.",
    Task.OCR_POLYGON: (
        "Can you detect all {categories} in this image in polygon format like "
        "[x0, y0, x1, y1, x2, y2 ...] and then recognize them?"
    ),
    # Upstream's template has a doubled closing quote; the model was trained on it.
    Task.GUI_GROUNDING: 'Detect element "{categories}"" in the image.',
    Task.GUI_POINTING: 'Point to element "{categories}".',
}
"""Upstream's templates (``rex_omni/tasks.py``), verbatim."""

_TASK_PHRASE = {task: task.value.replace("_", " ") for task in Task}


def join_categories(categories: str | Sequence[str] | None, task: Task) -> str:
    """``", ".join(categories)``; a bare ``str`` is used as-is.

    ValueError when categories are missing, empty, or not strings.
    """
    if categories is None:
        raise ValueError(f"Categories are required for {_TASK_PHRASE[task]} task")
    if isinstance(categories, str):
        if not categories.strip():
            raise ValueError(
                f"Categories are required for {_TASK_PHRASE[task]} task "
                "(got an empty string)"
            )
        return categories
    names = list(categories)
    if not names:
        raise ValueError(
            f"Categories are required for {_TASK_PHRASE[task]} task (got an empty list)"
        )
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"category {index} must be a non-empty string, got {name!r}"
            )
    return CATEGORY_SEPARATOR.join(names)


def visual_prompt_text(
    boxes: Sequence[Sequence[float]] | None, image_size: Sequence[float] | None
) -> str:
    """Reference boxes as upstream serialises them.

    ``boxes`` are xyxy in pixels of the original image; ``image_size`` is
    ``(width, height)``. Result: ``{"object_1": ["<x0><y0><x1><y1>", ...]}``
    (``json.dumps`` with default separators).
    """
    if boxes is None or len(boxes) == 0:
        raise ValueError("Visual prompt boxes are required for visual prompting task")
    if image_size is None:
        raise ValueError(
            "image_size (width, height) is required for visual prompting task "
            "(boxes are converted to bins of the image size)"
        )
    width, height = _image_size(image_size)
    tokens = []
    for index, box in enumerate(boxes):
        if (
            isinstance(box, (str, bytes))
            or len(box) != 4
            or not all(_is_finite_number(v) for v in box)
        ):
            raise ValueError(
                f"visual prompt box {index} must be [x0, y0, x1, y1] numbers "
                f"in pixels, got {box!r}"
            )
        tokens.append(box_to_tokens(box, width, height))
    return json.dumps({VISUAL_PROMPT_KEY: tokens})


def build_prompt(
    task: Task | str,
    categories: str | Sequence[str] | None,
    *,
    keypoint_type: str | None = None,
    visual_prompt_boxes: Sequence[Sequence[float]] | None = None,
    image_size: Sequence[float] | None = None,
) -> str:
    """The question text Rex-Omni is trained to answer for ``task``.

    Args:
        task: a :class:`Task` or its value (any case).
        categories: a list of phrases (joined with ", ") or one str used as-is.
            Required for every task but ``visual_prompting`` (ignored there).
        keypoint_type: ``person``, ``animal`` or ``hand`` (keypoint task only).
        visual_prompt_boxes: reference boxes, xyxy pixels of the original image
            (visual_prompting only).
        image_size: ``(width, height)`` of the original image, pixels; needed
            to turn visual prompt boxes into bins.

    Raises:
        ValueError naming what is missing or invalid.
    """
    task = Task.from_value(task)
    template = PROMPT_TEMPLATES[task]
    if task is Task.VISUAL_PROMPTING:
        return template.format(
            visual_prompt=visual_prompt_text(visual_prompt_boxes, image_size)
        )
    joined = join_categories(categories, task)
    if task is Task.KEYPOINT:
        if keypoint_type is None:
            raise ValueError("Keypoint type is required for keypoint task")
        joints = get_keypoint_set(keypoint_type).joints
        return template.format(
            categories=joined, keypoints=CATEGORY_SEPARATOR.join(joints)
        )
    return template.format(categories=joined)


def build_messages(
    prompt: str, image: Any, *, system_prompt: str = SYSTEM_PROMPT
) -> list[dict[str, Any]]:
    """The chat messages for one request, as upstream sends them.

    A system message with string content, then one user message whose content
    is the image first, then the prompt text. ``image`` is whatever the
    consumer takes (a PIL image for a HF processor's ``apply_chat_template``,
    a URL or data URL for an OpenAI-compatible server). Plain dicts, so they
    convert to the OpenAI format by rewriting the image entry.
    """
    if not isinstance(prompt, str) or not prompt:
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    if image is None:
        raise ValueError("image is required: Rex-Omni answers about one image")
    return [
        {"role": "system", "content": system_prompt},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image},
                {"type": "text", "text": prompt},
            ],
        },
    ]


def _is_finite_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _image_size(image_size: Sequence[float]) -> tuple[float, float]:
    if (
        isinstance(image_size, (str, bytes))
        or len(image_size) != 2
        or not all(_is_finite_number(v) and v > 0 for v in image_size)
    ):
        raise ValueError(
            f"image_size must be (width, height) in pixels, got {image_size!r}"
        )
    return float(image_size[0]), float(image_size[1])
