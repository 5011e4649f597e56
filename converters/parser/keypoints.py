"""The keypoint task's answer: a JSON object of instances, usually fenced.

``{"person1": {"bbox": " <x0> <y0> <x1> <y1> ", "keypoints": {"nose": " <x>
<y> ", "left eye": "unvisible", ...}}, ...}`` in a ```` ```json ```` block.
Each instance is decoded on its own, so a cut-off or malformed one costs only
itself. The numbered rules are those of ``docs/rex-omni-output.md``, "Our
parsing rules".
"""

from __future__ import annotations

import json
import re
from typing import Any

from converters.grammar import FENCE, JSON_FENCE, MAX_BIN, UNVISIBLE
from converters.parser.report import clamp, excerpt
from converters.prediction import ParseResult, Prediction, RegionType

DEFAULT_KEYPOINT_LABEL = "keypoint_instance"
"""Label of a keypoint instance whose id has no letters and no category was given
(upstream's name for it)."""

_BOX_ITEM = re.compile(r"\s*<(\d{1,9})>\s*<(\d{1,9})>\s*<(\d{1,9})>\s*<(\d{1,9})>\s*")
_POINT_ITEM = re.compile(r"\s*<(\d{1,9})>\s*<(\d{1,9})>\s*")
_BLANK = re.compile(r"\s*")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[{}\[\],]', re.DOTALL)
_ID_LABEL = re.compile(r"[^\W\d_]+(?:[ _]+[^\W\d_]+)*")
_JSON = json.JSONDecoder()


def parse_keypoints(
    text: str,
    end: int,
    width: float,
    height: float,
    category: str | None,
    result: ParseResult,
) -> None:
    """Rule 10: the first fenced ``json`` block, else the first ``{...}``,
    into ``result``."""
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
                f"malformed keypoint JSON {excerpt(body[key_start:resume])} skipped"
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
        warnings.append(f"{where}: bbox {excerpt(str(bbox))} is not 4 bins; skipped")
        return None
    if not isinstance(joints, dict):
        warnings.append(f"{where}: keypoints is not an object; skipped")
        return None
    values = [int(v) for v in match.groups()]
    if max(values) > MAX_BIN:
        values = clamp(values, where, result)
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
                    f"{where}: joint {name!r} value {excerpt(str(joint))} "
                    "is malformed; not visible"
                )
            else:
                x, y = int(found.group(1)), int(found.group(2))
                if x > MAX_BIN or y > MAX_BIN:
                    x, y = clamp([x, y], f"{where} joint {name!r}", result)
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
