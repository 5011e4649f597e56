"""Write predictions as the answer text Rex-Omni was trained to produce.

The reverse of :func:`converters.parser.parse_output`: used to write
fine-tuning targets, so the output stays exactly in the training grammar
(``docs/rex-omni-output.md``): phrases joined by ", ", the instances of one
phrase joined by "," inside one group, ``None`` for a category that was asked
for and is absent, keypoints as a fenced ``json`` block. The answer has no trailing
``<|im_end|>``: the chat template (or the trainer) adds the end of turn.

``parse_output(format_answer(task, x, w, h), task, w, h)`` gives ``x`` back up
to bin precision (one bin is ``size / 999`` pixels), in the answer's order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from converters.geometry import check_image_side, pixel_to_bin
from converters.grammar import (
    BOX_END,
    BOX_START,
    FENCE,
    GRAMMAR_TOKENS,
    JSON_FENCE,
    MAX_BIN,
    NONE_ANSWER,
    OBJECT_REF_END,
    OBJECT_REF_START,
    UNVISIBLE,
    bin_token,
)
from converters.parser import label_from_instance_id
from converters.prediction import Prediction, RegionType
from converters.tasks import BOX_TASKS, OCR_TASKS, POINT_TASKS, POLYGON_TASKS, Task

GROUP_SEPARATOR = ", "
"""Between groups (phrases), as in training."""

ITEM_SEPARATOR = ","
"""Between the instances of one phrase: a comma with no space, as in training."""

SORT_BY_X0 = True
"""Training listed the instances of one phrase by x0 ascending."""

KEYPOINT_JSON_INDENT = 2
"""The keypoint answer is pretty-printed JSON with a 2-space indent (upstream
examples)."""


def format_answer(
    task: Task | str,
    predictions: Iterable[Prediction],
    width: float,
    height: float,
    *,
    categories: Sequence[str] | None = None,
    sort_by_x0: bool = SORT_BY_X0,
) -> str:
    """The answer text for ``predictions`` of ``task`` on a ``width`` x
    ``height`` image (pixels of the original image).

    Args:
        task: the task the answer is for; it fixes the item kind (boxes for
            detection, visual_prompting, gui_grounding, ocr_box; points for
            pointing, gui_pointing; polygons for ocr_polygon, where a box is
            written as its 4 corners) and the grammar (JSON for keypoint).
        predictions: canonical predictions. Labels are the phrases; for OCR
            tasks ``text`` is the phrase and each prediction is its own group,
            in the given order.
        categories: the phrases that were asked for (not for OCR or
            keypoint). Groups come in this order, an absent one as
            ``<|box_start|>None<|box_end|>``; other labels follow in order of
            first appearance.
        sort_by_x0: list the instances of one phrase by x0 ascending (bins;
            ties keep the given order), as training did.

    Returns:
        The answer without a trailing ``<|im_end|>``; ``""`` when there is
        nothing to write (no predictions and no categories).

    Raises:
        ValueError naming the prediction that does not fit the task, or a
        phrase that would break the grammar (empty, or holding a special token).
    """
    task = Task.from_value(task)
    check_image_side(width, "width")
    check_image_side(height, "height")
    predictions = list(predictions)
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, Prediction):
            raise ValueError(
                f"prediction {index} must be a Prediction, "
                f"got {type(prediction).__name__}"
            )
    if task is Task.KEYPOINT:
        return _keypoint_answer(predictions, width, height)
    if task in OCR_TASKS:
        groups = [
            (_ocr_phrase(p, index), [_item(task, p, index, width, height)])
            for index, p in enumerate(predictions)
        ]
        return GROUP_SEPARATOR.join(_group(phrase, items) for phrase, items in groups)
    by_phrase: dict[str, list[tuple[int, str]]] = {}
    for name in categories or ():
        by_phrase.setdefault(_phrase(name, "category"), [])
    for index, prediction in enumerate(predictions):
        phrase = _phrase(prediction.label, f"prediction {index} label")
        by_phrase.setdefault(phrase, []).append(
            _item(task, prediction, index, width, height)
        )
    parts = []
    for phrase, items in by_phrase.items():
        if sort_by_x0:
            items = sorted(items, key=lambda item: item[0])
        parts.append(_group(phrase, items))
    return GROUP_SEPARATOR.join(parts)


def _group(phrase: str, items: list[tuple[int, str]]) -> str:
    body = ITEM_SEPARATOR.join(text for _, text in items) if items else NONE_ANSWER
    return f"{OBJECT_REF_START}{phrase}{OBJECT_REF_END}{BOX_START}{body}{BOX_END}"


def _phrase(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    _check_tokens(value, what)
    return value.strip()


def _ocr_phrase(prediction: Prediction, index: int) -> str:
    if prediction.text is None:
        raise ValueError(
            f"prediction {index} has no text: OCR answers write the text as phrase"
        )
    _check_tokens(prediction.text, f"prediction {index} text")
    return prediction.text.strip()


def _check_tokens(value: str, what: str) -> None:
    for token in GRAMMAR_TOKENS:
        if token in value:
            raise ValueError(f"{what} {value!r} contains the special token {token}")


def _check_json_text(value: str, what: str) -> None:
    """Text inside the keypoint JSON must not end the answer or the fence."""
    _check_tokens(value, what)
    if FENCE in value:
        raise ValueError(f"{what} {value!r} contains {FENCE}, which ends the block")


def _tokens(*bins: int) -> str:
    return "".join(map(bin_token, bins))


def _spaced(*bins: int) -> str:
    """Coordinate tokens with a space between them, as the keypoint JSON has them."""
    return " ".join(map(bin_token, bins))


def _box_bins(
    coords: Sequence[float], width: float, height: float
) -> tuple[int, int, int, int]:
    """Bins of a box, corners in order, at least one bin wide and high (the
    parser drops zero-area boxes)."""
    x0, y0, x1, y1 = coords
    bx0, bx1 = _span_bins(min(x0, x1), max(x0, x1), width)
    by0, by1 = _span_bins(min(y0, y1), max(y0, y1), height)
    return bx0, by0, bx1, by1


def _span_bins(low: float, high: float, size: float) -> tuple[int, int]:
    start, end = pixel_to_bin(low, size), pixel_to_bin(high, size)
    if end <= start:
        if start < MAX_BIN:
            end = start + 1
        else:
            start, end = MAX_BIN - 1, MAX_BIN
    return start, end


def _item(
    task: Task, prediction: Prediction, index: int, width: float, height: float
) -> tuple[int, str]:
    """``(x0 bin, item text)`` of one prediction in the task's item kind."""
    kind = prediction.type
    if task in BOX_TASKS and kind is RegionType.BOX:
        bins = _box_bins(prediction.coords, width, height)
        return bins[0], _tokens(*bins)
    if task in POINT_TASKS and kind is RegionType.POINT:
        x, y = prediction.coords
        bins = (pixel_to_bin(x, width), pixel_to_bin(y, height))
        return bins[0], _tokens(*bins)
    if task in POLYGON_TASKS and kind in (RegionType.POLYGON, RegionType.BOX):
        if kind is RegionType.BOX:
            x0, y0, x1, y1 = prediction.coords
            vertices = ((x0, y0), (x1, y0), (x1, y1), (x0, y1))
        else:
            vertices = prediction.coords
        bins = [
            b
            for x, y in vertices
            for b in (pixel_to_bin(x, width), pixel_to_bin(y, height))
        ]
        return min(bins[0::2]), _tokens(*bins)
    raise ValueError(
        f"prediction {index} is a {kind.value}, which a {task.value} answer "
        f"cannot hold (it takes {_item_kind_name(task)})"
    )


def _item_kind_name(task: Task) -> str:
    if task in BOX_TASKS:
        return "boxes"
    if task in POINT_TASKS:
        return "points"
    return "polygons or boxes"


def _keypoint_answer(predictions: list[Prediction], width: float, height: float) -> str:
    """A fenced JSON object ``{id: {"bbox": " <x0> <y0> <x1> <y1> ",
    "keypoints": {joint: " <x> <y> " | "unvisible"}}}``."""
    instances: dict[str, Any] = {}
    counters: dict[str, int] = {}
    for index, prediction in enumerate(predictions):
        if prediction.type is not RegionType.KEYPOINT:
            raise ValueError(
                f"prediction {index} is a {prediction.type.value}; a keypoint "
                "answer holds keypoint instances only"
            )
        label = _phrase(prediction.label, f"prediction {index} label")
        _check_json_text(label, f"prediction {index} label")
        instance_id = _instance_id(prediction.instance_id, label, instances, counters)
        bins = _box_bins(prediction.coords, width, height)
        joints = {}
        for name, point in (prediction.keypoints or {}).items():
            _check_json_text(name, f"prediction {index} joint name")
            if point is None:
                joints[name] = UNVISIBLE
            else:
                x, y = point
                joint_bins = (pixel_to_bin(x, width), pixel_to_bin(y, height))
                joints[name] = f" {_spaced(*joint_bins)} "
        instances[instance_id] = {
            "bbox": f" {_spaced(*bins)} ",
            "keypoints": joints,
        }
    body = json.dumps(instances, indent=KEYPOINT_JSON_INDENT, ensure_ascii=False)
    return f"{JSON_FENCE}\n{body}\n{FENCE}"


def _instance_id(
    wanted: str | None, label: str, used: dict[str, Any], counters: dict[str, int]
) -> str:
    """The prediction's own id when it is free and reads back as ``label``,
    else ``{label}{n}`` (``person1``, ``person2``, ...)."""
    if wanted and wanted not in used and label_from_instance_id(wanted) == label:
        return wanted
    while True:
        counters[label] = counters.get(label, 0) + 1
        candidate = f"{label}{counters[label]}"
        if candidate not in used:
            return candidate
