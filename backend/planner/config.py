"""Reading a labeling config: the SDK's ``LabelInterface`` (parsed once per
config) and the ``rex_*`` / ``model_score_threshold`` attributes of its
controls, with project-wide defaults from the model's "Extra params" (and
there, per-label thresholds: :data:`LABEL_THRESHOLDS_PARAM`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from backend.labels import LabelMap, split_phrases
from backend.planner.plan import ControlPlan, PlanError, shown
from common.jobspec import ModelCall
from common.settings import MAX_TILE_OVERLAP, MIN_TILE_SIZE, TILE_MODES
from converters.keypoint_sets import KEYPOINT_SETS, KeypointSet
from converters.tags import TEXT_TAG
from converters.tasks import Task

PARSED_CONFIG_CACHE = 64
"""Parsed label configs kept: one per active project is plenty."""

IMAGE_TAGS = frozenset({"Image"})
"""Object tags rexlabel can send to the model."""

UNSERVABLE_REGION_TAGS = frozenset(
    {
        "EllipseLabels",
        "Ellipse",
        "VectorLabels",
        "Vector",
        "MagicWand",
        "BitmaskLabels",
        "Bitmask",
        "VideoRectangle",
        "HyperTextLabels",
        "ParagraphLabels",
        "TimeSeriesLabels",
        "TimelineLabels",
        "OcrLabels",
    }
)
"""Region controls rexlabel cannot produce; named in errors and notes."""

LABEL_THRESHOLDS_PARAM = "model_score_thresholds"
"""Extra params key: ``{"<label value>": 0.42, ...}``, the score threshold of
each label's regions (``rexlabel evaluate --apply-thresholds`` writes it).
An entry wins over the control's ``model_score_threshold`` attribute, which
wins over the project-wide ``model_score_threshold``."""

MAX_WHOLE_NUMBER_DIGITS = 9
"""Most digits of a whole-number attribute (``rex_max_instances``,
``rex_tile_size``): a billion is past any image's pixels and any generation's
items, and longer text is refused before ``int()`` (which raises past 4300
digits) sees it."""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def parse_config(label_config: str) -> Any:
    """The SDK's ``LabelInterface``; PlanError when the XML is unusable.

    Parsed configs are cached (a project's config arrives with every request);
    callers only read them.
    """
    if not isinstance(label_config, str) or not label_config.strip():
        raise PlanError("label_config is empty")
    return _parse_config(label_config)


@lru_cache(maxsize=PARSED_CONFIG_CACHE)
def _parse_config(label_config: str) -> Any:
    from label_studio_sdk.label_interface import LabelInterface

    try:
        return LabelInterface(label_config)
    except Exception as exc:  # the SDK raises many kinds on bad XML
        raise PlanError(f"label_config is not a valid labeling config: {exc}") from None


def describe(control: Any) -> str:
    """``RectangleLabels 'label'``: how errors and notes name a control."""
    return f"{control.tag} {control.name!r}"


class ConfigContext:
    """The parsed config plus project-wide attribute defaults."""

    def __init__(self, interface: Any, defaults: Mapping[str, Any]) -> None:
        self.li = interface
        self.defaults = dict(defaults or {})
        self.images = {
            obj.name: str(obj.value or "").lstrip("$")
            for obj in interface.objects
            if obj.tag in IMAGE_TAGS
        }
        self.object_tags = {obj.name: obj.tag for obj in interface.objects}
        self.controls = list(interface.controls)
        self.label_thresholds = label_thresholds_of(self.defaults)

    def attr(self, control: Any, name: str, *, flag: bool = False) -> Any:
        """The control's attribute ``name`` (always text), else the extra
        param of that name (any JSON); None when neither is set. An extra
        param must be text or a number -- or, for a ``flag``, a boolean:
        PlanError naming the key and value otherwise, so ``{"rex_tile": true}``
        is refused rather than ignored."""
        value = (control.attr or {}).get(name)
        if value is not None:
            return value
        value = self.defaults.get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, bool):
            if flag:
                return value
        elif isinstance(value, (int, float)):
            return value
        rule = "true or false" if flag else "text or a number"
        raise PlanError(
            f"{describe(control)}: extra_params {name}={shown(value)} must be {rule}"
        )

    def image_of(self, control: Any) -> str | None:
        for name in control.to_name or []:
            if name in self.images:
                return name
        return None

    def on_image(self, to_name: str, tags: frozenset[str] | tuple[str, ...]) -> list:
        return [
            c for c in self.controls if c.tag in tags and to_name in (c.to_name or [])
        ]

    def region_text_area(self, to_name: str) -> Any:
        for c in self.on_image(to_name, (TEXT_TAG,)):
            if str((c.attr or {}).get("perRegion", "")).lower() in _TRUE:
                return c
        return None


def bool_attr(ctx: ConfigContext, control: Any, name: str, default: bool) -> bool:
    value = ctx.attr(control, name, flag=True)
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise PlanError(f"{describe(control)}: {name}={shown(value)} must be true or false")


def whole_number(text: str) -> int | None:
    """``text`` as a whole number when it is ASCII digits only (at most
    :data:`MAX_WHOLE_NUMBER_DIGITS`), else None. ``str.isdigit`` alone lets
    ``"²"`` (which ``int()`` refuses) and ``"١٤٠٠"`` through."""
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_WHOLE_NUMBER_DIGITS:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def threshold_attr(ctx: ConfigContext, control: Any) -> float | None:
    value = ctx.attr(control, "model_score_threshold")
    if value is None or str(value).strip() == "":
        return None
    number = _share(value)
    if not 0.0 <= number <= 1.0:
        raise PlanError(
            f"{describe(control)}: model_score_threshold={shown(value)} must be a "
            "number from 0 to 1"
        )
    return number


def label_thresholds_of(defaults: Mapping[str, Any]) -> dict[str, float]:
    """The :data:`LABEL_THRESHOLDS_PARAM` map of the extra params (``{}`` when
    absent); PlanError naming the label when an entry is not a number from 0
    to 1."""
    value = defaults.get(LABEL_THRESHOLDS_PARAM)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PlanError(
            f"extra_params {LABEL_THRESHOLDS_PARAM!r} must be an object of label "
            f"-> score threshold (0 to 1), got {shown(value)}"
        )
    thresholds: dict[str, float] = {}
    for label, number in value.items():
        if (
            isinstance(number, bool)
            or not isinstance(number, (int, float))
            or not 0.0 <= number <= 1.0
        ):
            raise PlanError(
                f"extra_params {LABEL_THRESHOLDS_PARAM!r}: label {shown(label)} has "
                f"threshold {shown(number)}; it must be a number from 0 to 1"
            )
        thresholds[str(label)] = float(number)
    return thresholds


def set_score_thresholds(ctx: ConfigContext, control: Any, plan: ControlPlan) -> None:
    """``plan``'s thresholds: per label from :data:`LABEL_THRESHOLDS_PARAM`,
    else ``control``'s ``model_score_threshold`` (attribute, else project-wide);
    its call gets the loosest of them (:meth:`ControlPlan.loosest_threshold`)."""
    plan.score_threshold = threshold_attr(ctx, control)
    plan.label_thresholds = dict(ctx.label_thresholds)
    plan.call.score_threshold = plan.loosest_threshold()


def unknown_threshold_labels(ctx: ConfigContext, plans: list[ControlPlan]) -> list[str]:
    """Labels of :data:`LABEL_THRESHOLDS_PARAM` that no control of the config
    has (and no planned control can give): a renamed label's threshold is
    unused, worth a note, not an error."""
    known = {
        label
        for control in ctx.controls
        for label in getattr(control, "labels", None) or []
    }
    known.update(label for plan in plans for label in plan.region_labels)
    return [label for label in ctx.label_thresholds if label not in known]


def max_instances_attr(ctx: ConfigContext, control: Any) -> int | None:
    value = ctx.attr(control, "rex_max_instances")
    if value is None or str(value).strip() == "":
        return None
    number = whole_number(str(value))
    if number is None or number < 1:
        raise PlanError(
            f"{describe(control)}: rex_max_instances={shown(value)} must be a whole "
            f"number of at least 1 (at most {MAX_WHOLE_NUMBER_DIGITS} digits)"
        )
    return number


def tile_attrs(ctx: ConfigContext, control: Any) -> dict[str, Any]:
    """The call's tiling (``ModelCall.tile``) from ``rex_tile``
    (auto|on|off), ``rex_tile_size`` (pixels) and ``rex_tile_overlap`` (a
    share of the tile); unset ones are left to the worker's settings."""
    tile: dict[str, Any] = {}
    mode = _attr_text(ctx, control, "rex_tile")
    if mode is not None:
        if mode.lower() not in TILE_MODES:
            raise PlanError(
                f"{describe(control)}: rex_tile={shown(mode)} must be one of "
                f"{', '.join(TILE_MODES)}"
            )
        tile["mode"] = mode.lower()
    size = _attr_text(ctx, control, "rex_tile_size")
    if size is not None:
        number = whole_number(size)
        if number is None or number < MIN_TILE_SIZE:
            raise PlanError(
                f"{describe(control)}: rex_tile_size={shown(size)} must be a whole "
                f"number of pixels, at least {MIN_TILE_SIZE} (at most "
                f"{MAX_WHOLE_NUMBER_DIGITS} digits)"
            )
        tile["size"] = number
    overlap = _attr_text(ctx, control, "rex_tile_overlap")
    if overlap is not None:
        share = _share(overlap)
        if not 0.0 <= share <= MAX_TILE_OVERLAP:
            raise PlanError(
                f"{describe(control)}: rex_tile_overlap={shown(overlap)} must be "
                f"a share of the tile from 0 to {MAX_TILE_OVERLAP}"
            )
        tile["overlap"] = share
    return tile


def _share(value: Any) -> float:
    """``value`` (text or a number) as a float; NaN (which fails every range
    test) when it is not an ASCII number. ``-0`` reads as 0."""
    text = str(value).strip()
    if not text.isascii():
        return math.nan
    try:
        return float(text) + 0.0
    except ValueError:
        return math.nan


def _attr_text(ctx: ConfigContext, control: Any, name: str) -> str | None:
    """The attribute (or extra param) as stripped text; None when unset or blank."""
    value = ctx.attr(control, name)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def generation_of(ctx: ConfigContext) -> dict[str, Any]:
    generation = ctx.defaults.get("generation") or {}
    if not isinstance(generation, Mapping):
        raise PlanError(
            f"extra_params 'generation' must be an object, got {generation!r}"
        )
    return dict(generation)


def label_map_of(control: Any) -> LabelMap:
    """The control's labels, each asked as itself or its ``predicted_values``
    aliases; a free map when it has no labels."""
    labels = list(getattr(control, "labels", None) or [])
    if not labels:
        return LabelMap(free=True)
    attrs = getattr(control, "labels_attrs", None) or {}
    aliases = {
        label: split_phrases((attrs[label].attr or {}).get("predicted_values"))
        for label in labels
        if label in attrs
    }
    return LabelMap.from_labels(labels, aliases)


def task_attr(ctx: ConfigContext, control: Any) -> Task | None:
    value = (control.attr or {}).get("rex_task")
    if value is None or str(value).strip() == "":
        return None
    try:
        return Task.from_value(value)
    except ValueError as exc:
        raise PlanError(f"{describe(control)}: rex_task: {exc}") from None


def keypoint_set_of(labels: list[str]) -> KeypointSet | None:
    """The smallest keypoint set whose joints include every label (spelt
    ``left_eye``, ``Left Eye`` or ``left-eye`` alike), else None."""
    if not labels:
        return None
    for kp_set in sorted(KEYPOINT_SETS.values(), key=lambda s: len(s.joints)):
        if all(kp_set.joint_for(label) is not None for label in labels):
            return kp_set
    return None


def control_plan(
    ctx: ConfigContext,
    control: Any,
    to_name: str,
    call: ModelCall,
    label_map: LabelMap,
    **fields: Any,
) -> ControlPlan:
    """The :class:`ControlPlan` putting ``call``'s regions in ``control`` on
    image ``to_name``; ``fields`` set the plan's optional attributes."""
    return ControlPlan(
        control=control.name,
        tag=control.tag,
        to_name=to_name,
        value_key=ctx.images[to_name],
        call=call,
        label_map=label_map,
        **fields,
    )
