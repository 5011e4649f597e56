"""The group grammar: every task's answer but ``keypoint``.

``<|object_ref_start|>PHRASE<|object_ref_end|><|box_start|>ITEM,ITEM<|box_end|>``
groups joined by ", ", where an ITEM is 2 (point), 4 (box) or an even count of
at least 6 (polygon) coordinate tokens. The scanner walks the groups with
``str.find`` and reports every missing, stray or cut-off token; each item is
typed, clamped, ordered and reported on its own. The numbered rules are those
of ``docs/rex-omni-output.md``, "Our parsing rules".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from converters.grammar import (
    BOX_END,
    BOX_START,
    MAX_BIN,
    NONE_ANSWER,
    OBJECT_REF_END,
    OBJECT_REF_START,
)
from converters.parser.report import clamp, excerpt
from converters.prediction import ParseResult, Prediction, RegionType
from converters.tasks import BOX_TASKS, OCR_TASKS, POINT_TASKS, POLYGON_TASKS, Task

DEFAULT_OCR_LABEL = "text"
"""Label of OCR regions when the caller did not say which granularity it asked for."""

MIN_POLYGON_VERTICES = 3
"""A polygon needs 6 or more coordinate tokens (rule 5)."""

NONE_ANSWER_CHARS = 12
"""A group's coordinates read as the ``None`` answer (rule 8) when they are
``None`` with whitespace around it, up to this many characters in all; longer
padding reads as ``None`` mixed with coordinates."""

_ITEM = re.compile(r"\s*(<\d{1,9}>(?:\s*<\d{1,9}>)*)\s*")
"""One item: coordinate tokens with optional whitespace around and between them.
A token has at most 9 digits: above 999 it is clamped (with a warning), and a
longer one is malformed text (``int()`` of thousands of digits raises)."""
_DIGITS = re.compile(r"\d+")
_STRAY = re.compile(r"<\d{1,9}>|<\|[a-z_]+\|>")
"""A coordinate or grammar token in text outside the groups."""

_EXPECTED = {
    RegionType.BOX: "4",
    RegionType.POINT: "2",
    RegionType.POLYGON: "an even count of at least 6",
}
"""How many numbers each item kind takes, as a warning says it."""


def _where(number: int, phrase: str | None) -> str:
    """Names a group in warnings: ``group 3`` or ``group 3 ('car')``."""
    return f"group {number}" if phrase is None else f"group {number} ({phrase!r})"


def _item_kind(task: Task | None) -> RegionType | None:
    """The item kind a task takes (rule 5); None types items by their count."""
    if task in BOX_TASKS:
        return RegionType.BOX
    if task in POINT_TASKS:
        return RegionType.POINT
    if task in POLYGON_TASKS:
        return RegionType.POLYGON
    return None


def parse_groups(
    text: str,
    end: int,
    task: Task | None,
    width: float,
    height: float,
    category: str | None,
    result: ParseResult,
) -> None:
    """Rules 2-9: scan ``text[:end]`` group by group into ``result``."""
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
        where = _where(number, None)

        phrase_end = text.find(OBJECT_REF_END, phrase_start, segment_end)
        if phrase_end < 0:
            _lacks(OBJECT_REF_END, "inside its phrase", where, last, result)
            continue
        phrase = text[phrase_start:phrase_end].strip()
        where = _where(number, phrase)
        after_phrase = phrase_end + len(OBJECT_REF_END)
        box_start = text.find(BOX_START, after_phrase, segment_end)
        if box_start < 0:
            _lacks(BOX_START, "before its coordinates", where, last, result)
            continue
        if text[after_phrase:box_start].strip():
            warnings.append(
                f"{where}: ignored text {excerpt(text[after_phrase:box_start])} "
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
            after = box_end + len(BOX_END)
            _warn_stray(text, after, segment_end, f"after {where}", result)
        if not phrase and not ocr:
            warnings.append(f"group {number} has an empty phrase; dropped")
            continue
        label, ocr_text = (ocr_label, phrase) if ocr else (phrase, None)
        group = _Group(text, kind, width, height, label, ocr_text, where, result)
        group.parse_items(content_start, content_end, open_ended)


def _lacks(token: str, cut: str, where: str, last: bool, result: ParseResult) -> None:
    """A group without ``token`` is dropped: cut off (``cut`` says where) when it
    is the last group, else malformed."""
    if last:
        result.truncated = True
        result.warnings.append(f"{where} was cut off {cut}")
    else:
        result.warnings.append(f"{where} has no {token}; dropped")


@dataclass
class _Group:
    """One group's coordinates: what every item of it shares."""

    text: str
    """The whole answer; items are offsets into it."""
    kind: RegionType | None
    """The task's item kind; None types items by their count."""
    width: float
    height: float
    label: str
    ocr_text: str | None
    where: str
    """The group's name in warnings."""
    result: ParseResult

    def parse_items(self, start: int, end: int, open_ended: bool) -> None:
        """The comma-separated items of ``text[start:end]``, in output order.

        ``open_ended``: the group was cut off, so its last item may be
        incomplete (rule 6); a box or point has all its tokens or the wrong
        count, so only polygons and count-typed items are checked for it.
        """
        content = self.text[start:end]
        if len(content) <= NONE_ANSWER_CHARS and content.strip() == NONE_ANSWER:
            return
        result = self.result
        count_before = len(result.predictions) + len(result.warnings)
        may_be_cut = open_ended and self.kind in (None, RegionType.POLYGON)
        position = start
        for piece in content.split(","):
            piece_start = position
            position += len(piece) + 1
            if not piece or piece.isspace():
                continue  # nothing between two commas, or after the last one
            unterminated = may_be_cut and position > end
            prediction = self.item(piece_start, position - 1, unterminated)
            if prediction is not None:
                result.predictions.append(prediction)
        if (
            not open_ended
            and len(result.predictions) + len(result.warnings) == count_before
            and not content.replace(",", "").strip()
        ):
            result.warnings.append(
                f"{self.where} has no coordinates (expected {NONE_ANSWER})"
            )

    def item(self, start: int, end: int, unterminated: bool) -> Prediction | None:
        """The prediction of item ``text[start:end]``, None (with a warning)
        when it is malformed, cut off, of the wrong size or of zero area."""
        text, where, warnings = self.text, self.where, self.result.warnings
        match = _ITEM.fullmatch(text, start, end)
        if match is None:
            if unterminated:
                what = "cut-off item"
            elif text[start:end].strip() == NONE_ANSWER:
                warnings.append(
                    f"{where}: {NONE_ANSWER} mixed with coordinates; ignored"
                )
                return None
            else:
                what = "malformed item"
            warnings.append(f"{where}: {what} {excerpt(text[start:end])} dropped")
            return None
        token_start, token_end = match.span(1)
        values = [int(v) for v in _DIGITS.findall(text, token_start, token_end)]
        count = len(values)
        if unterminated:
            # Nothing after it proves the item complete (a cut quad is no triangle).
            warnings.append(
                f"{where}: last item ({_numbers(count)}) was cut off; dropped"
            )
            return None
        kind = self.kind if self.kind is not None else _kind_by_count(count)
        if kind is None:
            warnings.append(f"{where}: item with {_numbers(count)} dropped")
            return None
        if _kind_by_count(count) is not kind:
            warnings.append(
                f"{where}: wrong-size item with {_numbers(count)} dropped "
                f"(a {kind.value} takes {_EXPECTED[kind]})"
            )
            return None
        if max(values) > MAX_BIN:
            values = clamp(values, where, self.result)
        if kind is RegionType.BOX:
            values = self.ordered_box(*values)
            if values is None:
                return None
        xs = [x / MAX_BIN * self.width for x in values[0::2]]
        ys = [y / MAX_BIN * self.height for y in values[1::2]]
        if kind is RegionType.BOX:
            coords = (xs[0], ys[0], xs[1], ys[1])
        elif kind is RegionType.POINT:
            coords = (xs[0], ys[0])
        else:
            coords = tuple(zip(xs, ys, strict=True))
        return Prediction(
            type=kind,
            label=self.label,
            coords=coords,
            text=self.ocr_text,
            span=(token_start, token_end),
        )

    def ordered_box(self, x0: int, y0: int, x1: int, y1: int) -> list[int] | None:
        """Corners in order (rule 7); None (with a warning) for a zero-area box."""
        warnings = self.result.warnings
        if x0 == x1 or y0 == y1:
            warnings.append(
                f"{self.where}: zero-area box <{x0}><{y0}><{x1}><{y1}> dropped"
            )
            return None
        if x0 > x1 or y0 > y1:
            warnings.append(
                f"{self.where}: box corners <{x0}><{y0}><{x1}><{y1}> put in order"
            )
        return [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]


def _kind_by_count(count: int) -> RegionType | None:
    """An item's kind by its number of coordinates, as upstream types items."""
    if count == 2:
        return RegionType.POINT
    if count == 4:
        return RegionType.BOX
    if count >= 2 * MIN_POLYGON_VERTICES and count % 2 == 0:
        return RegionType.POLYGON
    return None


def _numbers(count: int) -> str:
    return f"{count} number" if count == 1 else f"{count} numbers"


def _warn_stray(
    text: str, start: int, end: int, where: str, result: ParseResult
) -> None:
    """Warn when text outside groups holds coordinate or grammar tokens."""
    if _STRAY.search(text, start, end) is not None:
        result.warnings.append(
            f"ignored tokens {excerpt(text[start:end].strip())} {where}"
        )
