"""Interactive context: what Label Studio's interactive requests ask.

The last region in ``params.context.result`` decides (:func:`plan_interactive`):
a drawn rectangle -> ``visual_prompting`` with it (and earlier boxes of that
label); a phrase typed into a prompt ``TextArea`` -> ``detection`` of that
phrase as typed (a label, or a free phrase such as ``red sports car``: its
regions take the label it names, else the control's only label; see
:meth:`LabelMap.prompt_match`); keypoint clicks -> a SAM point prompt -> a
brush mask or a polygon.

The context is untrusted input: a malformed field raises :class:`ContextError`
naming it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from backend.labels import LabelMap, Match, split_phrases
from backend.planner.config import (
    ConfigContext,
    control_plan,
    describe,
    generation_of,
    label_map_of,
    max_instances_attr,
    parse_config,
    set_score_thresholds,
)
from backend.planner.controls import plan_control
from backend.planner.plan import ContextError, ControlPlan, Plan, PlanError, shown
from common.jobspec import MaskOutput, ModelCall
from converters.tags import (
    REGION_TAGS,
    REGION_TAGS_BY_TYPE,
    TEXT_TAG,
    TEXT_TYPE,
    Geometry,
    region_tag,
)
from converters.tasks import Task

log = logging.getLogger(__name__)

DRAWN_BOX_IOU = 0.8
"""Visual prompting finds the drawn box again; answers overlapping a drawn box
this much are that box, so they are not suggested a second time."""

PROMPT_MAX_CHARS = 1000
"""Longest typed prompt (all its text): referring phrases are a few words;
a longer text would only fill the model's prompt with what a user pasted."""

TEXT_PROMPT_TARGETS = (
    "RectangleLabels",
    "Rectangle",
    "PolygonLabels",
    "Polygon",
    "BrushLabels",
    "Brush",
)
"""Which control gets the boxes of a typed phrase, in order of preference."""

POINT_PROMPT_TARGETS = ("BrushLabels", "Brush", "PolygonLabels", "Polygon")
"""Which control gets the mask of keypoint clicks, in order of preference."""


def _context_number(
    holder: Mapping[str, Any], key: str, where: str, default: float | None = None
) -> float:
    """``holder[key]`` as a finite float; ContextError naming ``where.key`` when
    it is missing (and has no ``default``), not a number, a bool, NaN or inf."""
    value = holder.get(key)
    if value is None and default is not None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
    ):
        got = "missing" if value is None else f"got {shown(value)}"
        raise ContextError(f"{where}.{key} must be a finite number ({got})")
    return float(value)


def _where(item: Mapping[str, Any]) -> str:
    """``context.result[<region id>]`` for error messages."""
    return f"context.result[{shown(item.get('id'))}]"


def _value_of(item: Mapping[str, Any]) -> Mapping[str, Any]:
    value = item.get("value")
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ContextError(f"{_where(item)}.value must be an object")
    return value


def _pixels(item: Mapping[str, Any]) -> tuple[float, float]:
    """The image size (pixels) a context region was drawn on."""
    width = _context_number(item, "original_width", _where(item))
    height = _context_number(item, "original_height", _where(item))
    if width <= 0 or height <= 0:
        raise ContextError(f"{_where(item)} has an empty image size")
    return width, height


def _region_box(item: Mapping[str, Any]) -> list[float]:
    """xyxy pixels of a context rectangle, inside the image (the bounding box
    when rotated: Label Studio rotates clockwise about the top-left corner).
    ``value.x/y/width/height`` are percent of the image; ``rotation`` degrees."""
    width, height = _pixels(item)
    value, where = _value_of(item), f"{_where(item)}.value"
    x = _context_number(value, "x", where) * width / 100.0
    y = _context_number(value, "y", where) * height / 100.0
    w = _context_number(value, "width", where) * width / 100.0
    h = _context_number(value, "height", where) * height / 100.0
    angle = math.radians(_context_number(value, "rotation", where, default=0.0))
    cos, sin = math.cos(angle), math.sin(angle)
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    xs = [x + cx * cos - cy * sin for cx, cy in corners]
    ys = [y + cx * sin + cy * cos for cx, cy in corners]
    return [
        min(max(min(xs), 0.0), width),
        min(max(min(ys), 0.0), height),
        min(max(max(xs), 0.0), width),
        min(max(max(ys), 0.0), height),
    ]


def _region_point(item: Mapping[str, Any]) -> list[float]:
    """``[x, y, 1|0]`` pixels of a context keypoint (1 = positive click)."""
    width, height = _pixels(item)
    value, where = _value_of(item), f"{_where(item)}.value"
    x = _context_number(value, "x", where)
    y = _context_number(value, "y", where)
    positive = item.get("is_positive", True) is not False
    return [x / 100.0 * width, y / 100.0 * height, 1.0 if positive else 0.0]


def _first_label(item: Mapping[str, Any]) -> str | None:
    kind = item.get("type")
    labels = _value_of(item).get(kind) if isinstance(kind, str) else None
    if labels is None:
        return None
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise ContextError(f"{_where(item)}.value.{kind} must be a list of labels")
    return labels[0] if labels else None


def _check_region_names(item: Mapping[str, Any]) -> None:
    """``type``, ``from_name`` and ``to_name`` are strings when given."""
    for key in ("type", "from_name", "to_name"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise ContextError(f"{_where(item)}.{key} must be a string")


def _control_or_error(ctx: ConfigContext, name: Any, what: str) -> Any:
    for control in ctx.controls:
        if control.name == name:
            return control
    raise PlanError(f"context {what} comes from {name!r}, which is not in the config")


def _target(
    ctx: ConfigContext, source: Any, to_name: str, tags: tuple[str, ...]
) -> Any:
    wanted = (source.attr or {}).get("rex_target")
    if wanted:
        target = _control_or_error(ctx, wanted, f"{describe(source)} rex_target")
        if target.tag not in tags:
            raise PlanError(
                f"{describe(source)}: rex_target={wanted!r} is a {target.tag}; "
                f"expected one of {', '.join(tags)}"
            )
        return target
    for tag in tags:
        found = ctx.on_image(to_name, (tag,))
        if found:
            return found[0]
    raise PlanError(
        f"{describe(source)}: no {' / '.join(tags)} control on {to_name!r} "
        "to put the result in"
    )


def plan_interactive(
    label_config: str,
    context: Mapping[str, Any],
    extra_params: Mapping[str, Any] | None = None,
) -> Plan:
    """The plan for an interactive request (``params.context`` with ``result``).

    The last region in ``context.result`` decides what is asked:
    a rectangle -> visual prompting with it and the earlier boxes of the same
    control and label; a prompt TextArea's text -> detection of that phrase
    (comma-separated phrases for several); keypoints -> a SAM point prompt
    (every positive and negative click of that control and label).
    """
    ctx = ConfigContext(parse_config(label_config), extra_params or {})
    result = (context or {}).get("result") or []
    if not isinstance(result, list):
        raise ContextError("context.result must be a list of regions")
    items = [i for i in result if isinstance(i, Mapping)]
    if not items:
        raise PlanError("interactive context has no result regions")
    for item in items:
        _check_region_names(item)
    last = items[-1]
    kind = str(last.get("type") or "").lower()
    source = _control_or_error(ctx, last.get("from_name"), f"region {last.get('id')!r}")
    to_name = last.get("to_name") or ctx.image_of(source)
    if to_name not in ctx.images:
        raise PlanError(f"{describe(source)} does not label an <Image>")
    region = REGION_TAGS_BY_TYPE.get(kind)
    geometry = region.geometry if region is not None else None
    if geometry is Geometry.RECTANGLE:
        return Plan([_plan_visual_prompt(ctx, source, to_name, items, last)])
    if kind == TEXT_TYPE:
        return Plan([_plan_text_prompt(ctx, source, to_name, last)])
    if geometry is Geometry.KEYPOINT:
        return Plan([_plan_point_prompt(ctx, source, to_name, items, last)])
    raise PlanError(
        f"interactive {kind or 'untyped'} regions from {describe(source)} are not "
        "supported; draw a rectangle, click keypoints or type a prompt"
    )


def _same_region_kind(items: list, last: Mapping[str, Any]) -> list:
    label = _first_label(last)
    return [
        i
        for i in items
        if i.get("from_name") == last.get("from_name")
        and i.get("type") == last.get("type")
        and _first_label(i) == label
    ]


def _plan_visual_prompt(
    ctx: ConfigContext, source: Any, to_name: str, items: list, last: Mapping[str, Any]
) -> ControlPlan:
    source_tag = region_tag(source.tag)
    if source_tag is None or source_tag.geometry is not Geometry.RECTANGLE:
        raise PlanError(
            f"{describe(source)}: a drawn rectangle must come from a Rectangle control"
        )
    boxes = [_region_box(i) for i in _same_region_kind(items, last)]
    label = _first_label(last)
    call = ModelCall(
        task=Task.VISUAL_PROMPTING,
        visual_prompt_boxes=boxes,
        key=source.name,
        max_instances=max_instances_attr(ctx, source),
        generation=generation_of(ctx),
    )
    plan = control_plan(
        ctx,
        source,
        to_name,
        call,
        label_map_of(source),
        relabel=label,
        drop_boxes=boxes,
    )
    set_score_thresholds(ctx, source, plan)
    return plan


def _plan_text_prompt(
    ctx: ConfigContext, source: Any, to_name: str, last: Mapping[str, Any]
) -> ControlPlan:
    """Detection of each typed phrase as typed, its regions labelled by
    :func:`_prompt_labels`."""
    if source.tag != TEXT_TAG:
        raise PlanError(f"{describe(source)}: a text prompt must come from a TextArea")
    texts = _value_of(last).get("text") or []
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise ContextError(f"{_where(last)}.value.text must be a list of strings")
    length = sum(len(text) for text in texts)
    if length > PROMPT_MAX_CHARS:
        raise ContextError(
            f"{_where(last)}.value.text is {length} characters long; a prompt "
            f"has at most {PROMPT_MAX_CHARS}"
        )
    phrases = [p for text in texts for p in split_phrases(text)]
    if not phrases:
        raise PlanError(f"{describe(source)}: the prompt is empty")
    target = _target(ctx, source, to_name, TEXT_PROMPT_TARGETS)
    return plan_control(
        ctx,
        target,
        to_name,
        force_task=Task.DETECTION,
        phrases=phrases,
        label_map=_prompt_labels(target, phrases),
    )


def _prompt_labels(target: Any, phrases: list[str]) -> LabelMap:
    """Typed phrase -> the label of its regions (:meth:`LabelMap.prompt_match`:
    the label it is, else the label it names, else the control's only label).

    The model is asked each phrase as typed and answers with it, so the map's
    phrases are the typed ones. PlanError listing the labels a user can name
    when a phrase gets none.
    """
    labels = label_map_of(target)
    mapped: dict[str, str] = {}
    unknown: list[str] = []
    for phrase in phrases:
        label, how = labels.prompt_match(phrase)
        if label is None:
            unknown.append(phrase)
            continue
        mapped[phrase] = label
        if how in (Match.HEAD, Match.ONLY):
            log.info(
                "plan: prompt %r -> label %r of %s (%s)",
                phrase,
                label,
                describe(target),
                "named in the phrase" if how is Match.HEAD else "its only label",
            )
    if unknown:
        typed = shown(", ".join(unknown))
        raise PlanError(
            f"prompt {typed} matches no label of {describe(target)} and names"
            f" no one label (labels: {', '.join(labels.labels)}); type a "
            f"label, or a phrase naming one (e.g. 'red {labels.labels[0]}'), and "
            "separate phrases for different labels with commas"
        )
    return LabelMap(phrases=mapped, free=labels.free)


def _plan_point_prompt(
    ctx: ConfigContext, source: Any, to_name: str, items: list, last: Mapping[str, Any]
) -> ControlPlan:
    points = [_region_point(i) for i in _same_region_kind(items, last)]
    target = _target(ctx, source, to_name, POINT_PROMPT_TARGETS)
    clicked = _first_label(last)
    label_map = label_map_of(target)
    label = label_map.resolve(clicked) if clicked else None
    if label is None and not label_map.free:
        raise PlanError(
            f"keypoint label {clicked!r} matches no label of {describe(target)} "
            f"(labels: {', '.join(label_map.labels)})"
        )
    brush = REGION_TAGS[target.tag].geometry is Geometry.BRUSH
    call = ModelCall(
        task=Task.POINTING,
        categories=[label or clicked or "object"],
        sam_points=points,
        masks=MaskOutput.BRUSH if brush else MaskOutput.POLYGON,
        key=target.name,
    )
    return control_plan(ctx, target, to_name, call, label_map, relabel=label)
