"""Parse Rex-Omni's answer text into canonical predictions.

Follows the project's parsing rules (spec section 14): well-formed text gives
exactly upstream's geometry (``bin / 999 * size``, pixels of the original
image); malformed text never raises and never invents data, and every dropped
or repaired piece is reported in ``ParseResult.warnings``.

Two grammars:

* groups (every task but ``keypoint``):
  ``<|object_ref_start|>PHRASE<|object_ref_end|><|box_start|>ITEM,ITEM<|box_end|>``
  joined by ", ", where an ITEM is 2 (point), 4 (box) or an even count of at
  least 6 (polygon) coordinate tokens ``<0>`` .. ``<999>``;
* a JSON object of keypoint instances, usually in a fenced ``json`` block.

The group scanner works on offsets into the original text (``str.find`` and
compiled regexes with ``pos``/``endpos``), so every prediction carries the
``span`` of the text it came from and no character is visited by a Python loop.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any

from converters.geometry import MAX_BIN
from converters.prediction import ParseResult, Prediction, RegionType
from converters.tasks import BOX_TASKS, OCR_TASKS, POINT_TASKS, POLYGON_TASKS, Task

OBJECT_REF_START = "<|object_ref_start|>"
OBJECT_REF_END = "<|object_ref_end|>"
BOX_START = "<|box_start|>"
BOX_END = "<|box_end|>"
END_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""Text after the first of these is ignored (rule 1)."""

GRAMMAR_TOKENS = (OBJECT_REF_START, OBJECT_REF_END, BOX_START, BOX_END, *END_TOKENS)
"""Special tokens that cannot appear inside a phrase Rex-Omni writes."""

NONE_ANSWER = "None"
"""The coordinates of a category that was asked for and is absent (rule 8)."""

JSON_FENCE = "```json"
"""Opens the keypoint answer's fenced block."""

FENCE = "```"
"""Closes a fenced block."""

UNVISIBLE = "unvisible"
"""Upstream's (misspelt) marker for a joint that is not visible."""

DEFAULT_OCR_LABEL = "text"
"""Label of OCR regions when the caller did not say which granularity it asked for."""

DEFAULT_KEYPOINT_LABEL = "keypoint_instance"
"""Label of a keypoint instance whose id has no letters and no category was given
(upstream's name for it)."""

MIN_POLYGON_VERTICES = 3
"""A polygon needs 6 or more coordinate tokens (rule 5)."""

EXCERPT_CHARS = 40
"""How much of a dropped piece of text a warning quotes."""

# One item: coordinate tokens with optional whitespace around and between them.
_ITEM = re.compile(r"\s*(<\d+>(?:\s*<\d+>)*)\s*")
_BOX_ITEM = re.compile(r"\s*<(\d+)>\s*<(\d+)>\s*<(\d+)>\s*<(\d+)>\s*")
_POINT_ITEM = re.compile(r"\s*<(\d+)>\s*<(\d+)>\s*")
_DIGITS = re.compile(r"\d+")
_COMPACT_BOXES = re.compile(r"(?:<\d+><\d+><\d+><\d+>,)*<\d+><\d+><\d+><\d+>")
_BOX_FIELDS = re.compile(r"<(\d+)><(\d+)><(\d+)><(\d+)>")
_COMPACT_POINTS = re.compile(r"(?:<\d+><\d+>,)*<\d+><\d+>")
_POINT_FIELDS = re.compile(r"<(\d+)><(\d+)>")
_SPACED_BOXES = re.compile(
    r"\s*(?:<\d+>\s*<\d+>\s*<\d+>\s*<\d+>\s*,\s*)*<\d+>\s*<\d+>\s*<\d+>\s*<\d+>\s*"
)
_SPACED_BOX_FIELDS = re.compile(r"<(\d+)>\s*<(\d+)>\s*<(\d+)>\s*<(\d+)>")
_SPACED_POINTS = re.compile(r"\s*(?:<\d+>\s*<\d+>\s*,\s*)*<\d+>\s*<\d+>\s*")
_SPACED_POINT_FIELDS = re.compile(r"<(\d+)>\s*<(\d+)>")
_BIN_VALUE = {str(i): i for i in range(MAX_BIN + 1)}
"""Bin token text -> int: a dict lookup is 3x faster than ``int()``."""
_BLANK = re.compile(r"\s*")
_STRAY = re.compile(r"<\d+>|<\|[a-z_]+\|>")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[{}\[\],]', re.DOTALL)
_ID_LABEL = re.compile(r"[^\W\d_]+(?:[ _]+[^\W\d_]+)*")
_JSON = json.JSONDecoder()

_BOX = RegionType.BOX
_POINT = RegionType.POINT
_POLYGON = RegionType.POLYGON
_new = object.__new__


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
    _check_size(width, "width")
    _check_size(height, "height")
    result = ParseResult()
    end = _answer_end(text)
    if task is Task.KEYPOINT:
        _parse_keypoints(text, end, width, height, category, result)
    else:
        _parse_groups(text, end, task, width, height, category, result)
    return result


def _check_size(value: Any, name: str) -> None:
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"image {name} must be a positive number, got {value!r}")


def _answer_end(text: str) -> int:
    """Offset of the first end token, or the text's length (rule 1)."""
    end = len(text)
    for token in END_TOKENS:
        found = text.find(token, 0, end)
        if found >= 0:
            end = found
    return end


def _excerpt(text: str) -> str:
    if len(text) > EXCERPT_CHARS:
        text = text[:EXCERPT_CHARS] + "..."
    return repr(text)


# Groups ----------------------------------------------------------------------


def _item_kind(task: Task | None) -> RegionType | None:
    if task in BOX_TASKS:
        return _BOX
    if task in POINT_TASKS:
        return _POINT
    if task in POLYGON_TASKS:
        return _POLYGON
    return None


def _parse_groups(
    text: str,
    end: int,
    task: Task | None,
    width: float,
    height: float,
    category: str | None,
    result: ParseResult,
) -> None:
    """Rules 2-9: scan ``text[:end]`` group by group."""
    warnings = result.warnings
    kind = _item_kind(task)
    ocr = task in OCR_TASKS
    ocr_label = category if category is not None else DEFAULT_OCR_LABEL
    start = text.find(OBJECT_REF_START, 0, end)
    _warn_stray(text, 0, end if start < 0 else start, "before the first group", result)
    number = 0
    while start >= 0:
        number += 1
        phrase_start = start + len(OBJECT_REF_START)
        next_start = text.find(OBJECT_REF_START, phrase_start, end)
        last = next_start < 0
        segment_end = end if last else next_start
        start = next_start
        where = f"group {number}"

        phrase_end = text.find(OBJECT_REF_END, phrase_start, segment_end)
        if phrase_end < 0:
            if last:
                result.truncated = True
                warnings.append(f"{where} was cut off inside its phrase; dropped")
            else:
                warnings.append(f"{where} has no {OBJECT_REF_END}; dropped")
            continue
        phrase = text[phrase_start:phrase_end].strip()
        where = f"group {number} ({phrase!r})"
        after_phrase = phrase_end + len(OBJECT_REF_END)
        box_start = text.find(BOX_START, after_phrase, segment_end)
        if box_start < 0:
            if last:
                result.truncated = True
                warnings.append(f"{where} was cut off before its coordinates")
            else:
                warnings.append(f"{where} has no {BOX_START}; dropped")
            continue
        if box_start > after_phrase and text[after_phrase:box_start].strip():
            warnings.append(
                f"{where}: ignored text {_excerpt(text[after_phrase:box_start])} "
                f"between {OBJECT_REF_END} and {BOX_START}"
            )
        content_start = box_start + len(BOX_START)
        box_end = text.find(BOX_END, content_start, segment_end)
        open_ended = False
        if box_end < 0:
            content_end = segment_end
            if last:
                result.truncated = True
                open_ended = True
                warnings.append(f"{where} was cut off (no {BOX_END})")
            else:
                warnings.append(
                    f"{where} has no {BOX_END}; it ends where the next group starts"
                )
        else:
            content_end = box_end
            _warn_stray(
                text, box_end + len(BOX_END), segment_end, f"after {where}", result
            )
        if not phrase and not ocr:
            warnings.append(f"group {number} has an empty phrase; dropped")
            continue
        if ocr:
            template = _template(ocr_label, phrase)
        else:
            template = _template(phrase, None)
        _parse_items(
            text,
            content_start,
            content_end,
            open_ended,
            kind,
            width,
            height,
            template,
            where,
            result,
        )


def _template(label: str, text: str | None) -> dict[str, Any]:
    return {
        "type": None,
        "label": label,
        "coords": None,
        "score": None,
        "text": text,
        "keypoints": None,
        "instance_id": None,
        "mask": None,
        "span": None,
    }


def _trusted(template: dict[str, Any], kind: RegionType, coords, span) -> Prediction:
    """A Prediction built without re-validation.

    The parser only makes finite float coordinates of the right shape, ordered
    box corners and string labels, i.e. what ``Prediction.__post_init__``
    would accept unchanged; skipping it makes parsing about 3x faster.
    """
    fields = template.copy()
    fields["type"] = kind
    fields["coords"] = coords
    fields["span"] = span
    prediction = _new(Prediction)
    prediction.__dict__ = fields
    return prediction


def _parse_items(
    text: str,
    start: int,
    end: int,
    open_ended: bool,
    kind: RegionType | None,
    width: float,
    height: float,
    template: dict[str, Any],
    where: str,
    result: ParseResult,
) -> None:
    """The comma-separated items of one group's coordinates ``text[start:end]``.

    ``open_ended``: the group was cut off, so its last item may be incomplete.
    """
    if end - start <= 12 and text[start:end].strip() == NONE_ANSWER:
        return
    if not open_ended or kind is not None:
        # Fast paths for a well-formed list of boxes or points (rule 5: with
        # no task, a cut-off group's last item is never typed by its count).
        if kind is not _POINT and kind is not _POLYGON:
            fields = _box_fields(text, start, end)
            if fields is not None:
                _fast_boxes(fields, width, height, template, where, result)
                return
        if kind is not _BOX and kind is not _POLYGON:
            fields = _point_fields(text, start, end)
            if fields is not None:
                _fast_points(fields, width, height, template, where, result)
                return
    append = result.predictions.append
    found = False
    position = start
    while True:
        comma = text.find(",", position, end)
        piece_end = end if comma < 0 else comma
        if _BLANK.fullmatch(text, position, piece_end) is None:
            found = True
            prediction = _general_item(
                text,
                position,
                piece_end,
                open_ended and comma < 0,
                kind,
                width,
                height,
                template,
                where,
                result,
            )
            if prediction is not None:
                append(prediction)
        if comma < 0:
            break
        position = comma + 1
    if not found and not open_ended:
        result.warnings.append(f"{where} has no coordinates (expected {NONE_ANSWER})")


def _box_fields(text: str, start: int, end: int):
    """``(a, b, c, d, span)`` per item when ``text[start:end]`` is a well-formed
    list of boxes, else None. The trained grammar (no spaces) takes the
    quickest route: spans follow from the token lengths."""
    if _COMPACT_BOXES.fullmatch(text, start, end):
        return _compact_box_fields(text, start, end)
    if _SPACED_BOXES.fullmatch(text, start, end):
        return (
            (*match.groups(), match.span())
            for match in _SPACED_BOX_FIELDS.finditer(text, start, end)
        )
    return None


def _compact_box_fields(text: str, start: int, end: int):
    position = start
    for a, b, c, d in _BOX_FIELDS.findall(text, start, end):
        item_end = position + len(a) + len(b) + len(c) + len(d) + 8
        yield a, b, c, d, (position, item_end)
        position = item_end + 1


def _point_fields(text: str, start: int, end: int):
    """``(x, y, span)`` per item of a well-formed list of points, else None."""
    if _COMPACT_POINTS.fullmatch(text, start, end):
        return _compact_point_fields(text, start, end)
    if _SPACED_POINTS.fullmatch(text, start, end):
        return (
            (*match.groups(), match.span())
            for match in _SPACED_POINT_FIELDS.finditer(text, start, end)
        )
    return None


def _compact_point_fields(text: str, start: int, end: int):
    position = start
    for x, y in _POINT_FIELDS.findall(text, start, end):
        item_end = position + len(x) + len(y) + 4
        yield x, y, (position, item_end)
        position = item_end + 1


def _fast_boxes(
    fields,
    width: float,
    height: float,
    template: dict[str, Any],
    where: str,
    result: ParseResult,
) -> None:
    """Boxes from :func:`_box_fields`, built without per-item validation."""
    append = result.predictions.append
    value = _BIN_VALUE.get
    new = _new
    box = _BOX
    for a, b, c, d, span in fields:
        x0, y0, x1, y1 = value(a), value(b), value(c), value(d)
        if x0 is None or y0 is None or x1 is None or y1 is None:
            # Leading zeros or a bin above 999.
            x0, y0, x1, y1 = int(a), int(b), int(c), int(d)
            if max(x0, y0, x1, y1) > MAX_BIN:
                x0, y0, x1, y1 = _clamp([x0, y0, x1, y1], where, result)
        if x0 >= x1 or y0 >= y1:
            ordered = _ordered_box(x0, y0, x1, y1, where, result)
            if ordered is None:
                continue
            x0, y0, x1, y1 = ordered
        fields = template.copy()
        fields["type"] = box
        fields["coords"] = (
            x0 / MAX_BIN * width,
            y0 / MAX_BIN * height,
            x1 / MAX_BIN * width,
            y1 / MAX_BIN * height,
        )
        fields["span"] = span
        prediction = new(Prediction)
        prediction.__dict__ = fields
        append(prediction)


def _fast_points(
    fields,
    width: float,
    height: float,
    template: dict[str, Any],
    where: str,
    result: ParseResult,
) -> None:
    """Points from :func:`_point_fields`; see :func:`_fast_boxes`."""
    append = result.predictions.append
    value = _BIN_VALUE.get
    new = _new
    point = _POINT
    for a, b, span in fields:
        x, y = value(a), value(b)
        if x is None or y is None:
            x, y = int(a), int(b)
            if max(x, y) > MAX_BIN:
                x, y = _clamp([x, y], where, result)
        fields = template.copy()
        fields["type"] = point
        fields["coords"] = (x / MAX_BIN * width, y / MAX_BIN * height)
        fields["span"] = span
        prediction = new(Prediction)
        prediction.__dict__ = fields
        append(prediction)


def _general_item(
    text: str,
    start: int,
    end: int,
    unterminated: bool,
    kind: RegionType | None,
    width: float,
    height: float,
    template: dict[str, Any],
    where: str,
    result: ParseResult,
) -> Prediction | None:
    """Any item the fast path did not take: polygons, count-typed items, and
    malformed ones (dropped with a warning)."""
    warnings = result.warnings
    match = _ITEM.fullmatch(text, start, end)
    if match is None:
        if unterminated:
            warnings.append(
                f"{where}: cut-off item {_excerpt(text[start:end])} dropped"
            )
        elif text[start:end].strip() == NONE_ANSWER:
            warnings.append(f"{where}: {NONE_ANSWER} mixed with coordinates; ignored")
        else:
            warnings.append(
                f"{where}: malformed item {_excerpt(text[start:end])} dropped"
            )
        return None
    token_start, token_end = match.span(1)
    values = [int(v) for v in _DIGITS.findall(text, token_start, token_end)]
    count = len(values)
    if unterminated and (kind is None or kind is _POLYGON):
        # Nothing after it proves the item complete (a cut quad is no triangle).
        warnings.append(f"{where}: last item ({_numbers(count)}) was cut off; dropped")
        return None
    if kind is None:
        kind = (
            _POINT
            if count == 2
            else _BOX
            if count == 4
            else _POLYGON
            if count >= 2 * MIN_POLYGON_VERTICES and count % 2 == 0
            else None
        )
        if kind is None:
            warnings.append(f"{where}: item with {_numbers(count)} dropped")
            return None
    expected = {_BOX: "4", _POINT: "2", _POLYGON: "an even count of at least 6"}
    if (
        (kind is _BOX and count != 4)
        or (kind is _POINT and count != 2)
        or (kind is _POLYGON and (count < 2 * MIN_POLYGON_VERTICES or count % 2))
    ):
        what = "cut-off" if unterminated else "wrong-size"
        warnings.append(
            f"{where}: {what} item with {_numbers(count)} dropped "
            f"(a {kind.value} takes {expected[kind]})"
        )
        return None
    if max(values) > MAX_BIN:
        values = _clamp(values, where, result)
    span = (token_start, token_end)
    if kind is _BOX:
        box = _ordered_box(*values, where, result)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        coords = (
            x0 / MAX_BIN * width,
            y0 / MAX_BIN * height,
            x1 / MAX_BIN * width,
            y1 / MAX_BIN * height,
        )
    elif kind is _POINT:
        coords = (values[0] / MAX_BIN * width, values[1] / MAX_BIN * height)
    else:
        coords = tuple(
            (values[i] / MAX_BIN * width, values[i + 1] / MAX_BIN * height)
            for i in range(0, count, 2)
        )
    return _trusted(template, kind, coords, span)


def _numbers(count: int) -> str:
    return f"{count} number" if count == 1 else f"{count} numbers"


def _clamp(values: list[int], where: str, result: ParseResult) -> list[int]:
    result.warnings.append(
        f"{where}: bin above {MAX_BIN} clamped to {MAX_BIN} in {values}"
    )
    return [min(v, MAX_BIN) for v in values]


def _ordered_box(
    x0: int, y0: int, x1: int, y1: int, where: str, result: ParseResult
) -> tuple[int, int, int, int] | None:
    """Corners in order (rule 7); None (with a warning) for a zero-area box."""
    if x0 == x1 or y0 == y1:
        result.warnings.append(
            f"{where}: zero-area box <{x0}><{y0}><{x1}><{y1}> dropped"
        )
        return None
    if x0 > x1 or y0 > y1:
        result.warnings.append(
            f"{where}: box corners <{x0}><{y0}><{x1}><{y1}> put in order"
        )
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
    return x0, y0, x1, y1


def _warn_stray(text: str, start: int, end: int, where: str, result: ParseResult):
    """Warn when text outside groups holds coordinate or grammar tokens."""
    if start >= end or text.find("<", start, end) < 0:
        return
    stray = _STRAY.search(text, start, end)
    if stray is not None:
        result.warnings.append(
            f"ignored tokens {_excerpt(text[start:end].strip())} {where}"
        )


# Keypoints -------------------------------------------------------------------


def _parse_keypoints(
    text: str,
    end: int,
    width: float,
    height: float,
    category: str | None,
    result: ParseResult,
) -> None:
    """Rule 10: the first fenced ``json`` block, else the first ``{...}``."""
    fence = text.find(JSON_FENCE, 0, end)
    if fence >= 0:
        region_start = fence + len(JSON_FENCE)
        close = text.find(FENCE, region_start, end)
        region_end = end if close < 0 else close
    else:
        region_start, region_end = 0, end
    brace = text.find("{", region_start, region_end)
    if brace < 0:
        if text[region_start:region_end].strip() or fence >= 0:
            result.warnings.append("no keypoint JSON object in the answer")
        return
    body = text[brace:region_end]
    entries, closed = _walk_object(body, brace, result)
    if not closed:
        result.truncated = True
        result.warnings.append("keypoint JSON was cut off; complete instances kept")
    fallback = category if category is not None else DEFAULT_KEYPOINT_LABEL
    for key, value, span in entries:
        prediction = _keypoint_instance(
            key, value, span, width, height, fallback, result
        )
        if prediction is not None:
            result.predictions.append(prediction)


def _skip_ws(body: str, position: int) -> int:
    return _BLANK.match(body, position).end()


def _walk_object(
    body: str, offset: int, result: ParseResult
) -> tuple[list[tuple[str, Any, tuple[int, int]]], bool]:
    """The ``(key, value, span)`` entries of the JSON object opening ``body``.

    Each value is decoded on its own, so a cut-off or malformed instance costs
    only itself. Spans run from the key's opening quote to the value's end,
    offset by ``offset`` into the original text. Returns ``(entries, closed)``;
    ``closed`` is False when the object was cut off.
    """
    entries = []
    length = len(body)
    position = 1
    while True:
        position = _skip_ws(body, position)
        if position >= length:
            return entries, False
        char = body[position]
        if char == "}":
            return entries, True
        if char == ",":
            position += 1
            continue
        key_start = position
        key = value = None
        try:
            key, position = _JSON.raw_decode(body, position)
            position = _skip_ws(body, position)
            if not isinstance(key, str) or body[position : position + 1] != ":":
                raise ValueError("not a key")
            position = _skip_ws(body, position + 1)
            value, position = _JSON.raw_decode(body, position)
        except (ValueError, RecursionError):
            resume = _skip_value(body, position)
            if resume >= length:
                if key is not None:
                    result.warnings.append(f"keypoint instance {key!r} was cut off")
                return entries, False
            result.warnings.append(
                f"malformed keypoint JSON {_excerpt(body[key_start:resume])} skipped"
            )
            position = max(resume, key_start + 1)
            continue
        entries.append((key, value, (offset + key_start, offset + position)))


def _skip_value(body: str, position: int) -> int:
    """Offset of the next ``,`` or ``}`` that ends the current top-level entry
    (strings and nesting skipped), or ``len(body)`` if there is none."""
    depth = 0
    for token in _JSON_TOKEN.finditer(body, position):
        char = token.group()
        if char in "{[":
            depth += 1
        elif char in "}]":
            if depth == 0 and char == "}":
                return token.start()
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            return token.start()
    return len(body)


def _keypoint_instance(
    key: str,
    value: Any,
    span: tuple[int, int],
    width: float,
    height: float,
    fallback_label: str,
    result: ParseResult,
) -> Prediction | None:
    warnings = result.warnings
    where = f"keypoint instance {key!r}"
    if not isinstance(value, dict):
        warnings.append(f"{where} is not an object; skipped")
        return None
    missing = [name for name in ("bbox", "keypoints") if name not in value]
    if missing:
        warnings.append(f"{where} lacks {' and '.join(missing)}; skipped")
        return None
    bbox, joints = value["bbox"], value["keypoints"]
    match = _BOX_ITEM.fullmatch(bbox) if isinstance(bbox, str) else None
    if match is None:
        warnings.append(f"{where}: bbox {_excerpt(str(bbox))} is not 4 bins; skipped")
        return None
    if not isinstance(joints, dict):
        warnings.append(f"{where}: keypoints is not an object; skipped")
        return None
    values = [int(v) for v in match.groups()]
    if max(values) > MAX_BIN:
        values = _clamp(values, where, result)
    x0, y0, x1, y1 = values
    if x0 > x1 or y0 > y1:
        warnings.append(f"{where}: bbox corners {values} put in order")
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
    points: dict[str, tuple[float, float] | None] = {}
    for name, joint in joints.items():
        point = None
        if joint is not None and joint != UNVISIBLE:
            found = _POINT_ITEM.fullmatch(joint) if isinstance(joint, str) else None
            if found is None:
                warnings.append(
                    f"{where}: joint {name!r} value {_excerpt(str(joint))} "
                    "is malformed; not visible"
                )
            else:
                x, y = int(found.group(1)), int(found.group(2))
                if x > MAX_BIN or y > MAX_BIN:
                    x, y = _clamp([x, y], f"{where} joint {name!r}", result)
                point = (x / MAX_BIN * width, y / MAX_BIN * height)
        points[name] = point
    label = label_from_instance_id(key)
    return Prediction(
        type=RegionType.KEYPOINT,
        label=label if label is not None else fallback_label,
        coords=(
            x0 / MAX_BIN * width,
            y0 / MAX_BIN * height,
            x1 / MAX_BIN * width,
            y1 / MAX_BIN * height,
        ),
        keypoints=points,
        instance_id=key,
        span=span,
    )


def label_from_instance_id(instance_id: str) -> str | None:
    """The label a keypoint instance id stands for (rule 10), None if it has no
    letters: its leading words, without trailing ``_``/spaces and digits
    (``person1`` -> ``person``, ``hand_1`` -> ``hand``, ``Person 3`` ->
    ``Person``, ``0`` -> None)."""
    match = _ID_LABEL.match(instance_id.strip())
    return match.group() if match else None
