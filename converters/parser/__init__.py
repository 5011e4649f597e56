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

Everything works on offsets into the original text, so every prediction
carries the ``span`` of the text it came from, and no character is visited by
a Python loop (only items are). Speed comes from three layers, each checked
against the next by property tests:

1. an answer of nothing but complete plain groups is split by one regex;
2. otherwise a careful scanner walks the groups with ``str.find`` and reports
   every missing, stray or cut-off token;
3. inside a group, items in the trained form (``<12><34><56><78>``, or with
   vLLM's single spaces) are built from ``str.split`` and a dict lookup, and
   any other item goes through a checking path that types, clamps, orders
   and reports it.
"""

from __future__ import annotations

import dataclasses
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
# A token has at most 9 digits: above 999 it is clamped (with a warning), and a
# longer one is malformed text -- int() of thousands of digits raises.
_ITEM = re.compile(r"\s*(<\d{1,9}>(?:\s*<\d{1,9}>)*)\s*")
_BOX_ITEM = re.compile(r"\s*<(\d{1,9})>\s*<(\d{1,9})>\s*<(\d{1,9})>\s*<(\d{1,9})>\s*")
_POINT_ITEM = re.compile(r"\s*<(\d{1,9})>\s*<(\d{1,9})>\s*")
_DIGITS = re.compile(r"\d+")
_PLAIN_GROUP = re.compile(
    r"<\|object_ref_start\|>([^<]*)<\|object_ref_end\|>\s*<\|box_start\|>"
    r"([^|]*)<\|box_end\|>"
)
"""A complete group whose phrase has no ``<`` and coordinates no ``|``."""
_BIN_VALUE = {str(i): i for i in range(MAX_BIN + 1)}
"""Bin token text -> int: a dict lookup is 3x faster than ``int()``, and a miss
means the text is not a plain bin (leading zeros, above 999, not digits)."""
_TOKEN_VALUE = {f"<{i}>": i for i in range(MAX_BIN + 1)}
"""Coordinate token text -> bin, for items with whitespace between tokens."""
_BLANK = re.compile(r"\s*")
_STRAY = re.compile(r"<\d{1,9}>|<\|[a-z_]+\|>")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[{}\[\],]', re.DOTALL)
_ID_LABEL = re.compile(r"[^\W\d_]+(?:[ _]+[^\W\d_]+)*")
_JSON = json.JSONDecoder()

_ORS_LENGTH = len(OBJECT_REF_START)
_ORE_LENGTH = len(OBJECT_REF_END)
_BS_LENGTH = len(BOX_START)
_BE_LENGTH = len(BOX_END)
_BLANK_FIELDS = {
    spec.name: None if spec.default is dataclasses.MISSING else spec.default
    for spec in dataclasses.fields(Prediction)
}
"""A Prediction's ``__dict__`` with every field at its default (None for the
required ones): copied, then filled in."""
_MIN_POLYGON_NUMBERS = 2 * MIN_POLYGON_VERTICES
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


Where = str | tuple
"""Names a place in warnings: a str, or ``(group number, phrase or None)`` that
is formatted only when a warning is actually written (``repr`` of a long
phrase costs more than parsing its group)."""


def _name(where: Where) -> str:
    if isinstance(where, str):
        return where
    first, second = where
    if first == "after":
        return f"after {_name(second)}"
    if second is None:
        return f"group {first}"
    return f"group {first} ({second!r})"


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
    if _parse_plain_groups(text, end, kind, ocr, ocr_label, width, height, result):
        return
    del result.predictions[:], result.warnings[:]
    start = text.find(OBJECT_REF_START, 0, end)
    _warn_stray(text, 0, end if start < 0 else start, "before the first group", result)
    number = 0
    find = text.find
    while start >= 0:
        number += 1
        phrase_start = start + _ORS_LENGTH
        next_start = find(OBJECT_REF_START, phrase_start, end)
        last = next_start < 0
        segment_end = end if last else next_start
        start = next_start
        where = (number, None)

        phrase_end = find(OBJECT_REF_END, phrase_start, segment_end)
        if phrase_end < 0:
            if last:
                result.truncated = True
                warnings.append(f"{_name(where)} was cut off inside its phrase")
            else:
                warnings.append(f"{_name(where)} has no {OBJECT_REF_END}; dropped")
            continue
        phrase = text[phrase_start:phrase_end].strip()
        where = (number, phrase)
        after_phrase = phrase_end + _ORE_LENGTH
        box_start = find(BOX_START, after_phrase, segment_end)
        if box_start < 0:
            if last:
                result.truncated = True
                warnings.append(f"{_name(where)} was cut off before its coordinates")
            else:
                warnings.append(f"{_name(where)} has no {BOX_START}; dropped")
            continue
        if box_start > after_phrase and text[after_phrase:box_start].strip():
            warnings.append(
                f"{_name(where)}: ignored text "
                f"{_excerpt(text[after_phrase:box_start])} "
                f"between {OBJECT_REF_END} and {BOX_START}"
            )
        content_start = box_start + _BS_LENGTH
        box_end = find(BOX_END, content_start, segment_end)
        open_ended = False
        if box_end < 0:
            content_end = segment_end
            if last:
                result.truncated = True
                open_ended = True
                warnings.append(f"{_name(where)} was cut off (no {BOX_END})")
            else:
                warnings.append(
                    f"{_name(where)} has no {BOX_END}; "
                    "it ends where the next group starts"
                )
        else:
            content_end = box_end
            if find("<", box_end + _BE_LENGTH, segment_end) >= 0:
                _warn_stray(
                    text, box_end + _BE_LENGTH, segment_end, ("after", where), result
                )
        if not phrase and not ocr:
            warnings.append(f"group {number} has an empty phrase; dropped")
            continue
        _parse_items(
            text,
            content_start,
            content_end,
            open_ended,
            kind,
            width,
            height,
            ocr_label if ocr else phrase,
            phrase if ocr else None,
            where,
            result,
        )


def _parse_plain_groups(
    text: str,
    end: int,
    kind: RegionType | None,
    ocr: bool,
    ocr_label: str,
    width: float,
    height: float,
    result: ParseResult,
) -> bool:
    """Fast path of :func:`_parse_groups` for the common answer: complete
    groups whose phrase has no ``<``, separated by text without ``<``.

    One regex finds the groups; returns False (having appended partial
    results, which the caller discards) as soon as anything between them
    could be a token, so the careful scanner decides every unusual case.
    """
    previous = 0
    find = text.find
    number = 0
    for number, match in enumerate(_PLAIN_GROUP.finditer(text, 0, end), 1):
        if find("<", previous, match.start()) >= 0:
            return False
        previous = match.end()
        phrase = match.group(1).strip()
        if not phrase and not ocr:
            result.warnings.append(f"group {number} has an empty phrase; dropped")
            continue
        start, stop = match.span(2)
        _parse_items(
            text,
            start,
            stop,
            False,
            kind,
            width,
            height,
            ocr_label if ocr else phrase,
            phrase if ocr else None,
            (number, phrase),
            result,
        )
    return find("<", previous, end) < 0


def _trusted(
    template: dict[str, Any], kind: RegionType, coords: Any, span: tuple[int, int]
) -> Prediction:
    """A Prediction built without re-validation.

    The parser only makes finite float coordinates of the right shape, ordered
    box corners and string labels, i.e. what ``Prediction.__post_init__``
    would accept unchanged; skipping it makes parsing about 3x faster.
    ``template`` is a filled-in copy of ``_BLANK_FIELDS`` (label, text); the
    fast loops in :func:`_parse_items` inline the same steps.
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
    label: str,
    ocr_text: str | None,
    where: Where,
    result: ParseResult,
) -> None:
    """The comma-separated items of one group's coordinates ``text[start:end]``.

    ``open_ended``: the group was cut off, so its last item may be incomplete.
    An item in the trained form (``<12><34><56><78>``, or with one space
    between tokens as vLLM writes it; bins 0..999 without leading zeros; of
    the task's kind) is built right here from ``str.split`` and a dict lookup.
    Anything else goes through :func:`_general_item`, which checks and reports
    it. Predictions are appended in output order.
    """
    content = text[start:end]
    if len(content) <= 12 and content.strip() == NONE_ANSWER:
        return
    predictions = result.predictions
    count_before = len(predictions) + len(result.warnings)
    template = _BLANK_FIELDS.copy()
    template["type"] = kind
    template["label"] = label
    template["text"] = ocr_text
    context = (text, kind, width, height, template, where, result)
    if kind is _BOX:
        _boxes(content, start, context)
    elif kind is _POINT:
        _points(content, start, context)
    elif kind is _POLYGON:
        _polygons(content, start, open_ended, context)
    else:
        position = start
        for piece in content.split(","):
            piece_start = position
            position += len(piece) + 1
            _fallback(piece, piece_start, open_ended and position > end, context)
    if (
        not open_ended
        and len(predictions) + len(result.warnings) == count_before
        and not content.replace(",", "").strip()
    ):
        result.warnings.append(
            f"{_name(where)} has no coordinates (expected {NONE_ANSWER})"
        )


def _token_span(piece: str, start: int) -> tuple[int, int]:
    """Offsets of ``piece`` without its surrounding whitespace."""
    stripped = piece.strip()
    lead = piece.index(stripped[:1]) if stripped else 0
    return (start + lead, start + lead + len(stripped))


def _fallback(piece: str, start: int, unterminated: bool, context: tuple) -> None:
    """Hand a piece the fast loops did not take to :func:`_general_item`."""
    if not piece or piece.isspace():
        return  # nothing between two commas, or after the last one
    text, kind, width, height, template, where, result = context
    prediction = _general_item(
        text,
        start,
        start + len(piece),
        unterminated,
        kind,
        width,
        height,
        template,
        where,
        result,
    )
    if prediction is not None:
        result.predictions.append(prediction)


def _boxes(content: str, start: int, context: tuple) -> None:
    """Fast loop of :func:`_parse_items` for boxes (a box is never cut off:
    its four tokens are all there or it has the wrong count)."""
    _, _, width, height, template, _, result = context
    append = result.predictions.append
    value = _BIN_VALUE.get
    token_value = _TOKEN_VALUE.get
    copy = template.copy
    new = _new
    scale = MAX_BIN
    position = start
    for piece in content.split(","):
        piece_start = position
        position += len(piece) + 1
        parts = piece.split()
        if len(parts) == 1:  # the trained form: <12><34><56><78>
            body = parts[0]
            lookup = value
            parts = body[1:-1].split("><") if body[-1:] == ">" else ()
        else:  # vLLM's form: <12> <34> <56> <78> (or nothing at all)
            body = parts[0] if parts else ""
            lookup = token_value
        if body[:1] == "<":
            if len(parts) == 4:
                x0, y0, x1, y1 = map(lookup, parts)
                try:  # None (not a plain bin) does not compare: TypeError
                    ordered = x0 < x1 and y0 < y1
                except TypeError:
                    ordered = False
                if ordered:
                    fields = copy()
                    fields["coords"] = (
                        x0 / scale * width,
                        y0 / scale * height,
                        x1 / scale * width,
                        y1 / scale * height,
                    )
                    fields["span"] = (
                        (piece_start, position - 1)
                        if body is piece
                        else _token_span(piece, piece_start)
                    )
                    prediction = new(Prediction)
                    prediction.__dict__ = fields
                    append(prediction)
                    continue
        _fallback(piece, piece_start, False, context)


def _points(content: str, start: int, context: tuple) -> None:
    """Fast loop of :func:`_parse_items` for points; see :func:`_boxes`."""
    _, _, width, height, template, _, result = context
    append = result.predictions.append
    value = _BIN_VALUE.get
    token_value = _TOKEN_VALUE.get
    copy = template.copy
    new = _new
    scale = MAX_BIN
    position = start
    for piece in content.split(","):
        piece_start = position
        position += len(piece) + 1
        parts = piece.split()
        if len(parts) == 1:
            body = parts[0]
            lookup = value
            parts = body[1:-1].split("><") if body[-1:] == ">" else ()
        else:
            body = parts[0] if parts else ""
            lookup = token_value
        if body[:1] == "<":
            if len(parts) == 2:
                x, y = map(lookup, parts)
                if x is not None and y is not None:
                    fields = copy()
                    fields["coords"] = (x / scale * width, y / scale * height)
                    fields["span"] = (
                        (piece_start, position - 1)
                        if body is piece
                        else _token_span(piece, piece_start)
                    )
                    prediction = new(Prediction)
                    prediction.__dict__ = fields
                    append(prediction)
                    continue
        _fallback(piece, piece_start, False, context)


def _polygons(content: str, start: int, open_ended: bool, context: tuple) -> None:
    """Fast loop of :func:`_parse_items` for polygons. The last polygon of a
    cut-off group may be incomplete, so it always takes the checking path."""
    _, _, width, height, template, _, result = context
    append = result.predictions.append
    value = _BIN_VALUE.get
    token_value = _TOKEN_VALUE.get
    new = _new
    scale = MAX_BIN
    end = start + len(content)
    position = start
    for piece in content.split(","):
        piece_start = position
        position += len(piece) + 1
        unterminated = open_ended and position > end
        parts = piece.split()
        if len(parts) == 1:
            body = parts[0]
            lookup = value
            parts = body[1:-1].split("><") if body[-1:] == ">" else ()
        else:
            body = parts[0] if parts else ""
            lookup = token_value
        if not unterminated and body[:1] == "<":
            count = len(parts)
            if count >= _MIN_POLYGON_NUMBERS and not count % 2:
                v = list(map(lookup, parts))
                if None not in v:
                    fields = template.copy()
                    if count == 8:  # a quad, the usual text region: unrolled
                        fields["coords"] = (
                            (v[0] / scale * width, v[1] / scale * height),
                            (v[2] / scale * width, v[3] / scale * height),
                            (v[4] / scale * width, v[5] / scale * height),
                            (v[6] / scale * width, v[7] / scale * height),
                        )
                    else:
                        fields["coords"] = tuple(
                            [
                                (x / scale * width, y / scale * height)
                                for x, y in zip(v[0::2], v[1::2], strict=True)
                            ]
                        )
                    fields["span"] = (
                        (piece_start, position - 1)
                        if body is piece
                        else _token_span(piece, piece_start)
                    )
                    prediction = new(Prediction)
                    prediction.__dict__ = fields
                    append(prediction)
                    continue
        _fallback(piece, piece_start, unterminated, context)


def _general_item(
    text: str,
    start: int,
    end: int,
    unterminated: bool,
    kind: RegionType | None,
    width: float,
    height: float,
    template: dict[str, Any],
    where: Where,
    result: ParseResult,
) -> Prediction | None:
    """Any item the fast path did not take: polygons, count-typed items, and
    malformed ones (dropped with a warning)."""
    warnings = result.warnings
    match = _ITEM.fullmatch(text, start, end)
    if match is None:
        if unterminated:
            warnings.append(
                f"{_name(where)}: cut-off item {_excerpt(text[start:end])} dropped"
            )
        elif text[start:end].strip() == NONE_ANSWER:
            warnings.append(
                f"{_name(where)}: {NONE_ANSWER} mixed with coordinates; ignored"
            )
        else:
            warnings.append(
                f"{_name(where)}: malformed item {_excerpt(text[start:end])} dropped"
            )
        return None
    token_start, token_end = match.span(1)
    values = [int(v) for v in _DIGITS.findall(text, token_start, token_end)]
    count = len(values)
    if unterminated and (kind is None or kind is _POLYGON):
        # Nothing after it proves the item complete (a cut quad is no triangle).
        warnings.append(
            f"{_name(where)}: last item ({_numbers(count)}) was cut off; dropped"
        )
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
            warnings.append(f"{_name(where)}: item with {_numbers(count)} dropped")
            return None
    expected = {_BOX: "4", _POINT: "2", _POLYGON: "an even count of at least 6"}
    if (
        (kind is _BOX and count != 4)
        or (kind is _POINT and count != 2)
        or (kind is _POLYGON and (count < 2 * MIN_POLYGON_VERTICES or count % 2))
    ):
        what = "cut-off" if unterminated else "wrong-size"
        warnings.append(
            f"{_name(where)}: {what} item with {_numbers(count)} dropped "
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


def _clamp(values: list[int], where: Where, result: ParseResult) -> list[int]:
    result.warnings.append(
        f"{_name(where)}: bin above {MAX_BIN} clamped to {MAX_BIN} in {values}"
    )
    return [min(v, MAX_BIN) for v in values]


def _ordered_box(
    x0: int, y0: int, x1: int, y1: int, where: Where, result: ParseResult
) -> tuple[int, int, int, int] | None:
    """Corners in order (rule 7); None (with a warning) for a zero-area box."""
    if x0 == x1 or y0 == y1:
        result.warnings.append(
            f"{_name(where)}: zero-area box <{x0}><{y0}><{x1}><{y1}> dropped"
        )
        return None
    if x0 > x1 or y0 > y1:
        result.warnings.append(
            f"{_name(where)}: box corners <{x0}><{y0}><{x1}><{y1}> put in order"
        )
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
    return x0, y0, x1, y1


def _warn_stray(text: str, start: int, end: int, where: Where, result: ParseResult):
    """Warn when text outside groups holds coordinate or grammar tokens."""
    if start >= end or text.find("<", start, end) < 0:
        return
    stray = _STRAY.search(text, start, end)
    if stray is not None:
        result.warnings.append(
            f"ignored tokens {_excerpt(text[start:end].strip())} {_name(where)}"
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
    close = -1
    if fence >= 0:
        region_start = fence + len(JSON_FENCE)
        close = text.find(FENCE, region_start, end)
        region_end = end if close < 0 else close
    else:
        region_start, region_end = 0, end
    brace = text.find("{", region_start, region_end)
    if brace < 0:
        if fence >= 0 and close < 0:
            result.truncated = True
            result.warnings.append("keypoint answer was cut off before its JSON")
        elif text[region_start:region_end].strip() or fence >= 0:
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
