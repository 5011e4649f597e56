"""Parse Rex-Omni's answer text into canonical predictions.

Follows the parsing rules of ``docs/rex-omni-output.md``: well-formed text
gives exactly upstream's geometry (``bin / 999 * size``, pixels of the original
image); malformed text never raises and never invents data, and every dropped
or repaired piece is reported in ``ParseResult.warnings``.

Two grammars, one module each:

* :mod:`converters.parser.groups`, every task but ``keypoint``:
  ``<|object_ref_start|>PHRASE<|object_ref_end|><|box_start|>ITEM,ITEM<|box_end|>``
  joined by ", ";
* :mod:`converters.parser.keypoints`, the ``keypoint`` task: a JSON object of
  instances, usually in a fenced ``json`` block.

Everything works on offsets into the original text, so every prediction
carries the ``span`` of the text it came from.
"""

from __future__ import annotations

from converters.geometry import check_image_side
from converters.grammar import END_TOKENS
from converters.parser.groups import DEFAULT_OCR_LABEL, parse_groups
from converters.parser.keypoints import (
    DEFAULT_KEYPOINT_LABEL,
    label_from_instance_id,
    parse_keypoints,
)
from converters.prediction import ParseResult
from converters.tasks import Task

__all__ = [
    "DEFAULT_KEYPOINT_LABEL",
    "DEFAULT_OCR_LABEL",
    "label_from_instance_id",
    "parse_output",
]


def parse_output(
    text: str,
    task: Task | str | None,
    width: float,
    height: float,
    *,
    category: str | None = None,
) -> ParseResult:
    """Predictions found in one Rex-Omni answer, in output order.

    Args:
        text: the decoded answer (``skip_special_tokens=False``), with or
            without a trailing ``<|im_end|>``.
        task: the task that was asked; it types the items (boxes, points,
            polygons) and picks the grammar (JSON for ``keypoint``). ``None``
            types items by their token count, as upstream does.
        width, height: size of the ORIGINAL image in pixels; coordinates are
            ``bin / 999 * size`` in that image.
        category: OCR tasks: the granularity asked for (``word``,
            ``text line``); it becomes every region's ``label`` and the phrase
            becomes its ``text`` (``"text"`` when None). Keypoint task: the
            label of an instance whose id has no letters. Ignored otherwise:
            labels are the phrases the model wrote.

    Returns:
        A ParseResult; ``truncated`` is True when the last group (or the JSON
        object) was cut off. Each prediction's ``span`` is the ``(start, end)``
        offsets in ``text`` of the item it came from.

    Raises:
        TypeError / ValueError for bad arguments only; never for bad text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    task = None if task is None else Task.from_value(task)
    check_image_side(width, "width")
    check_image_side(height, "height")
    result = ParseResult()
    end = _answer_end(text)
    if task is Task.KEYPOINT:
        parse_keypoints(text, end, width, height, category, result)
    else:
        parse_groups(text, end, task, width, height, category, result)
    return result


def _answer_end(text: str) -> int:
    """Offset of the first end token, or the text's length (rule 1)."""
    end = len(text)
    for token in END_TOKENS:
        found = text.find(token, 0, end)
        if found >= 0:
            end = found
    return end
