"""Label config -> what the model is asked (one plan per config).

Every region control tag on an ``<Image>`` becomes one :class:`ControlPlan`
holding one :class:`~common.jobspec.ModelCall` (``key`` = the control's name);
all calls on one image go to the worker as one :class:`~common.jobspec.ImageJob`,
so a config with several controls is served in one pass over the image.

=====================================  ======================================
control tag                            model call
=====================================  ======================================
``RectangleLabels``                    ``detection`` of the labels
``KeyPointLabels`` (joints of a set)   ``keypoint`` (category: the set name)
``KeyPointLabels`` (other labels)      ``pointing`` of the labels
``PolygonLabels`` / ``BrushLabels``    ``detection`` then SAM (polygon/brush)
``Rectangle``/``Polygon`` + per-region ``ocr_box`` / ``ocr_polygon``
``TextArea`` (``perRegion="true"``)    (category ``text line``)
=====================================  ======================================

The phrases asked are each ``<Label>``'s value, or its ``predicted_values``
aliases. Attributes on the control tag override the plan (project-wide
defaults may come from the model's "Extra params" JSON, same names):

- ``rex_task``: any Rex-Omni task that fits the control's geometry.
- ``rex_categories``: the phrases to ask (comma separated). Detection and
  pointing phrases must map to a label; for keypoints the instance category
  (``cat,dog``); for OCR the granularity (``word`` or ``text line``).
- ``model_score_threshold``: drop predictions scoring below (0..1).
- ``rex_max_instances``: runaway guard for this control.
- ``rex_sam="true|false"``: masks for Polygon/Brush controls (Polygon without
  SAM gets the detected box as a 4-point polygon).
- ``rex_skip="true"``: leave this control out of pre-annotation.
- ``rex_target``: on a prompt ``TextArea`` or a smart ``KeyPointLabels``, the
  control that receives interactive results.

A ``Rectangle``/``Polygon`` with a per-region ``TextArea`` is read as OCR; a
``Labels`` tag on the same image then labels the OCR regions (its ``<Label
predicted_values="text line">`` maps the category). A ``RectangleLabels`` or
``PolygonLabels`` beside a per-region TextArea stays a detection unless
``rex_task`` says ``ocr_box``/``ocr_polygon``. In Label Studio's stock OCR
template (both ``Rectangle`` and ``Polygon``) only the first one is served.

Interactive context (:func:`plan_interactive`): a drawn rectangle ->
``visual_prompting`` with it (and earlier boxes of that label); a phrase typed
into a prompt ``TextArea`` -> ``detection`` of that phrase as typed (a label,
or a free phrase such as ``red sports car``: its regions take the label it
names, else the control's only label; see :meth:`LabelMap.prompt_match`);
keypoint clicks -> a SAM point prompt -> a brush mask or a polygon.

Keypoint instances get boxes: a keypoint ``KeyPointLabels`` whose instance
categories (``person``, or its ``rex_categories``) all map to labels of a
``RectangleLabels`` detecting on the same image (the first such one; phrase
matching as in :mod:`backend.labels`) puts each instance's box there and
gives its joints that box as ``parentID``. That rectangle then no longer
detects those categories itself (one box per instance); its other labels are
detected as usual, and it is left out when none remain. Animal joints
without ``rex_categories`` ask for the species of such a rectangle: every
label of the first one that is not people or hands (:data:`HUMAN_WORDS`), so
``Cat``/``Dog`` boxes hold their animals' joints. Without such a rectangle
(or with it ``rex_skip``-ped) joints stand alone (animal joints then ask for
``animal``).

A config that cannot be served raises :class:`PlanError` naming the tag.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from backend.labels import LabelMap, Match, phrase_words, split_phrases
from common.jobspec import ImageJob, ModelCall
from converters.keypoint_sets import ANIMAL, KEYPOINT_SETS, KeypointSet
from converters.tasks import Task

log = logging.getLogger(__name__)

OCR_DEFAULT_CATEGORY = "text line"
"""OCR granularity asked when ``rex_categories`` is absent: lines are what
Label Studio's OCR template transcribes per region."""

DRAWN_BOX_IOU = 0.8
"""Visual prompting finds the drawn box again; answers overlapping a drawn box
this much are that box, so they are not suggested a second time."""

HUMAN_WORDS = frozenset(
    {
        "person", "persons", "people", "human", "humans", "man", "men",
        "woman", "women", "child", "children", "kid", "kids", "boy", "boys",
        "girl", "girls", "pedestrian", "pedestrians", "player", "players",
        "rider", "riders", "hand", "hands",
    }
)  # fmt: skip
"""Words of a box label that is people or hands (the person and hand keypoint
sets' instances), not a species: animal joints without ``rex_categories``
ask for every other label of the rectangle boxing their instances."""

PROMPT_MAX_CHARS = 1000
"""Longest typed prompt (all its text): referring phrases are a few words;
a longer text would only fill the model's prompt with what a user pasted."""

PARSED_CONFIG_CACHE = 64
"""Parsed label configs kept: one per active project is plenty."""

IMAGE_TAGS = frozenset({"Image"})
"""Object tags rexlabel can send to the model."""

RECTANGLE_TAGS = frozenset({"RectangleLabels", "Rectangle"})
POLYGON_TAGS = frozenset({"PolygonLabels", "Polygon"})
BRUSH_TAGS = frozenset({"BrushLabels", "Brush"})
KEYPOINT_TAGS = frozenset({"KeyPointLabels", "KeyPoint"})
REGION_TAGS = RECTANGLE_TAGS | POLYGON_TAGS | BRUSH_TAGS | KEYPOINT_TAGS
"""Region controls the planner serves."""

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

OUTPUT_TYPES = {
    "RectangleLabels": "rectanglelabels",
    "Rectangle": "rectangle",
    "PolygonLabels": "polygonlabels",
    "Polygon": "polygon",
    "BrushLabels": "brushlabels",
    "Brush": "brush",
    "KeyPointLabels": "keypointlabels",
    "KeyPoint": "keypoint",
}
"""Label Studio result ``type`` of each control's regions."""

_BOX_OUTPUT_TASKS = frozenset({Task.DETECTION, Task.GUI_GROUNDING, Task.OCR_BOX})
_TASKS_BY_GEOMETRY = {
    "rectangle": _BOX_OUTPUT_TASKS,
    "polygon": _BOX_OUTPUT_TASKS | {Task.OCR_POLYGON},
    "brush": frozenset({Task.DETECTION, Task.GUI_GROUNDING}),
    "keypoint": frozenset({Task.POINTING, Task.GUI_POINTING, Task.KEYPOINT}),
}
"""Tasks whose predictions each control geometry can show."""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class PlanError(ValueError):
    """The label config (or interactive context) cannot be served; names the tag."""


class ContextError(PlanError):
    """A field of an interactive request's ``params.context`` is malformed (not
    a number, not a list of labels, ...); the message names the field. The
    backend answers it 400: the request, not the config, is wrong."""


SHOWN_VALUE_CHARS = 40
"""A bad value is quoted in an error up to this many characters: enough to
recognise it, never a whole attacker-sized string echoed back."""


def shown(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOWN_VALUE_CHARS` for error messages."""
    text = repr(value)
    if len(text) <= SHOWN_VALUE_CHARS:
        return text
    return text[: SHOWN_VALUE_CHARS - 3] + "..."


@dataclass
class ControlPlan:
    """How one control tag is served.

    Attributes:
        control: the control's name (``from_name`` of its results; the call's key).
        tag: the control's tag (``RectangleLabels``, ...).
        to_name: the ``<Image>`` it labels.
        value_key: the task data key holding that image's URL.
        output: Label Studio result type of its regions (``rectanglelabels``...).
        call: the model call.
        label_map: model phrase -> label of this control.
        text_control: OCR: the per-region TextArea receiving the text.
        labels_control: OCR: a ``Labels`` tag labelling the regions, if any.
        labels_map: the map for ``labels_control``.
        relabel: every prediction gets this label (visual prompting: the label
            of the drawn box).
        drop_boxes: xyxy pixel boxes the user drew; predictions overlapping one
            by ``DRAWN_BOX_IOU`` or more are dropped.
        keypoint_set: keypoint calls: the set whose joints the labels are.
        box_control: keypoint calls: the ``RectangleLabels`` receiving each
            instance's box (its joints' ``parentID``); None: joints stand alone.
        box_map: instance category -> label of ``box_control``.
    """

    control: str
    tag: str
    to_name: str
    value_key: str
    output: str
    call: ModelCall
    label_map: LabelMap
    text_control: str | None = None
    labels_control: str | None = None
    labels_map: LabelMap | None = None
    relabel: str | None = None
    drop_boxes: list[list[float]] = field(default_factory=list)
    keypoint_set: str | None = None
    box_control: str | None = None
    box_map: LabelMap | None = None


@dataclass
class Plan:
    """Everything to ask for one task, and the notes on what is not served."""

    controls: list[ControlPlan]
    notes: list[str] = field(default_factory=list)

    def control(self, name: str) -> ControlPlan:
        for plan in self.controls:
            if plan.control == name:
                return plan
        raise KeyError(name)

    @property
    def images(self) -> dict[str, str]:
        """``<Image>`` name -> task data key, for the images the plan uses."""
        return {c.to_name: c.value_key for c in self.controls}

    def image_jobs(self, task: Mapping[str, Any]) -> list[ImageJob]:
        """One job per image of ``task`` (id ``"<task id>"``, or
        ``"<task id>/<image name>"`` when the config has several images).

        Raises PlanError naming the missing data key.
        """
        task_id = checked_task_id(task)
        data = task.get("data") if isinstance(task, Mapping) else None
        if not isinstance(data, Mapping):
            raise PlanError(f"task {task_id!r} has no 'data' object")
        jobs: list[ImageJob] = []
        several = len(self.images) > 1
        for to_name, key in self.images.items():
            url = data.get(key)
            if not isinstance(url, str) or not url.strip():
                raise PlanError(
                    f"task {task_id!r} has no image URL under data[{key!r}] "
                    f"(the <Image name={to_name!r}> value)"
                )
            jobs.append(
                ImageJob(
                    id=f"{task_id}/{to_name}" if several else str(task_id),
                    image=url,
                    task_id=task_id,
                    calls=[c.call for c in self.controls if c.to_name == to_name],
                )
            )
        return jobs


def is_id(value: Any) -> bool:
    """True for a Label Studio id: an int, and not a bool (``true`` is no task 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def task_id_of(task: Any) -> int | None:
    """A task's id, or None when it has none or it is not an id (see
    :func:`checked_task_id` to refuse those)."""
    value = task.get("id") if isinstance(task, Mapping) else None
    return value if is_id(value) else None


def checked_task_id(task: Any) -> int | None:
    """A task's id (None when it has none); PlanError when ``id`` is something
    else than an int, e.g. ``true`` or ``"1"``."""
    value = task.get("id") if isinstance(task, Mapping) else None
    if value is None or is_id(value):
        return value
    raise PlanError(f"task id {shown(value)} is not an integer")


# --------------------------------------------------------------------------- #
# Reading the config
# --------------------------------------------------------------------------- #


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


def _describe(control: Any) -> str:
    return f"{control.tag} {control.name!r}"


class _Context:
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

    def attr(self, control: Any, name: str) -> Any:
        value = (control.attr or {}).get(name)
        return self.defaults.get(name) if value is None else value

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
        for c in self.on_image(to_name, ("TextArea",)):
            if str((c.attr or {}).get("perRegion", "")).lower() in _TRUE:
                return c
        return None


def _bool_attr(ctx: _Context, control: Any, name: str, default: bool) -> bool:
    value = ctx.attr(control, name)
    if value is None:
        return default
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise PlanError(f"{_describe(control)}: {name}={value!r} must be true or false")


def _threshold(ctx: _Context, control: Any) -> float | None:
    value = ctx.attr(control, "model_score_threshold")
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise PlanError(
            f"{_describe(control)}: model_score_threshold={value!r} must be a "
            "number from 0 to 1"
        )
    return number


def _max_instances(ctx: _Context, control: Any) -> int | None:
    value = ctx.attr(control, "rex_max_instances")
    if value is None or str(value).strip() == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1:
        raise PlanError(
            f"{_describe(control)}: rex_max_instances={value!r} must be a whole "
            "number of at least 1"
        )
    return number


def _generation(ctx: _Context) -> dict[str, Any]:
    generation = ctx.defaults.get("generation") or {}
    if not isinstance(generation, Mapping):
        raise PlanError(
            f"extra_params 'generation' must be an object, got {generation!r}"
        )
    return dict(generation)


def _label_map(control: Any) -> LabelMap:
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


def _task_attr(ctx: _Context, control: Any) -> Task | None:
    value = (control.attr or {}).get("rex_task")
    if value is None or str(value).strip() == "":
        return None
    try:
        return Task.from_value(value)
    except ValueError as exc:
        raise PlanError(f"{_describe(control)}: rex_task: {exc}") from None


def _geometry(tag: str) -> str:
    if tag in RECTANGLE_TAGS:
        return "rectangle"
    if tag in POLYGON_TAGS:
        return "polygon"
    if tag in BRUSH_TAGS:
        return "brush"
    return "keypoint"


def _keypoint_set_of(labels: list[str]) -> KeypointSet | None:
    """The smallest keypoint set whose joints include every label (spelt
    ``left_eye``, ``Left Eye`` or ``left-eye`` alike), else None."""
    if not labels:
        return None
    for kp_set in sorted(KEYPOINT_SETS.values(), key=lambda s: len(s.joints)):
        if all(kp_set.joint_for(label) is not None for label in labels):
            return kp_set
    return None


# --------------------------------------------------------------------------- #
# One control
# --------------------------------------------------------------------------- #


def _plan_control(
    ctx: _Context,
    control: Any,
    to_name: str,
    *,
    force_task: Task | None = None,
    phrases: list[str] | None = None,
    label_map: LabelMap | None = None,
) -> ControlPlan:
    """How ``control`` is served; ``force_task``, ``phrases`` and
    ``label_map`` (phrase -> label) replace what its attributes and labels
    would give (interactive prompts)."""
    tag = control.tag
    geometry = _geometry(tag)
    if label_map is None:
        label_map = _label_map(control)
    text_area = ctx.region_text_area(to_name)
    task = force_task or _task_attr(ctx, control)
    if task is None:
        if tag in ("Rectangle", "Polygon") and text_area is not None:
            task = Task.OCR_BOX if tag == "Rectangle" else Task.OCR_POLYGON
        elif geometry == "keypoint":
            task = (
                Task.KEYPOINT if _keypoint_set_of(label_map.labels) else Task.POINTING
            )
        else:
            task = Task.DETECTION
    if task is Task.VISUAL_PROMPTING:
        raise PlanError(
            f"{_describe(control)}: rex_task=visual_prompting needs a drawn box; "
            "draw one with Auto-Annotation on instead"
        )
    if task not in _TASKS_BY_GEOMETRY[geometry]:
        allowed = ", ".join(sorted(t.value for t in _TASKS_BY_GEOMETRY[geometry]))
        raise PlanError(
            f"{_describe(control)}: rex_task={task.value!r} cannot be shown as "
            f"{geometry} regions; use one of: {allowed}"
        )

    plan = ControlPlan(
        control=control.name,
        tag=tag,
        to_name=to_name,
        value_key=ctx.images[to_name],
        output=OUTPUT_TYPES[tag],
        call=ModelCall(task=task, key=control.name),
        label_map=label_map,
    )
    categories = (
        phrases
        if phrases is not None
        else split_phrases(ctx.attr(control, "rex_categories"))
    )
    if task.is_ocr:
        _plan_ocr(ctx, control, plan, categories, text_area)
    elif task is Task.KEYPOINT:
        _plan_keypoint(control, plan, categories)
    else:
        _plan_phrases(control, plan, categories)

    masks = "none"
    sam = _bool_attr(ctx, control, "rex_sam", geometry in ("polygon", "brush"))
    if geometry == "brush":
        if not sam:
            raise PlanError(
                f"{_describe(control)}: brush regions need SAM masks; remove "
                'rex_sam="false" or use a Rectangle/Polygon control'
            )
        masks = "brush"
    elif geometry == "polygon" and task is not Task.OCR_POLYGON and sam:
        masks = "polygon"
    plan.call.masks = masks
    plan.call.score_threshold = _threshold(ctx, control)
    plan.call.max_instances = _max_instances(ctx, control)
    plan.call.generation = _generation(ctx)
    return plan


def _plan_phrases(control: Any, plan: ControlPlan, categories: list[str]) -> None:
    if categories:
        try:
            plan.label_map = plan.label_map.restricted_to(categories)
        except ValueError as exc:
            raise PlanError(
                f"{_describe(control)}: rex_categories {exc}; alias a label with "
                '<Label predicted_values="...">'
            ) from None
    if not plan.label_map.categories:
        raise PlanError(
            f"{_describe(control)} has no labels to ask for: add <Label> tags or "
            "rex_categories"
        )
    plan.call.categories = plan.label_map.categories


def _plan_keypoint(control: Any, plan: ControlPlan, categories: list[str]) -> None:
    kp_set = _keypoint_set_of(plan.label_map.labels)
    if kp_set is None:
        known = "; ".join(
            f"{s.name}: {', '.join(s.joints)}" for s in KEYPOINT_SETS.values()
        )
        raise PlanError(
            f"{_describe(control)}: rex_task=keypoint needs labels that are joints "
            f"of a keypoint set ({known}); got {plan.label_map.labels}"
        )
    plan.keypoint_set = kp_set.name
    plan.call.keypoint_type = kp_set.name
    plan.call.categories = categories or [kp_set.name]
    # Joint names as the model writes them -> the config's spelling of them.
    plan.label_map = LabelMap(
        phrases={kp_set.joint_for(label): label for label in plan.label_map.labels}
    )


def _plan_ocr(
    ctx: _Context,
    control: Any,
    plan: ControlPlan,
    categories: list[str],
    text_area: Any,
) -> None:
    if text_area is None:
        raise PlanError(
            f"{_describe(control)}: rex_task={plan.call.task.value!r} needs a "
            f'<TextArea perRegion="true" toName={plan.to_name!r}> for the text'
        )
    plan.text_control = text_area.name
    plan.call.categories = categories or [OCR_DEFAULT_CATEGORY]
    if plan.label_map.free:
        plan.label_map = LabelMap.free_phrases(plan.call.categories)
        for labels_tag in ctx.on_image(plan.to_name, ("Labels",)):
            labels_map = _ocr_labels(_label_map(labels_tag), plan.call.categories)
            if labels_map is not None:
                plan.labels_control = labels_tag.name
                plan.labels_map = labels_map
                break
            log.info(
                "plan: %s: OCR category %s matches no label of %s; regions get "
                "no label (alias one with predicted_values)",
                _describe(control),
                plan.call.categories,
                _describe(labels_tag),
            )


def _ocr_labels(labels_map: LabelMap, categories: list[str]) -> LabelMap | None:
    """How OCR regions of ``categories`` take a label of a ``Labels`` tag: each
    category's own label (``predicted_values``, or its name), else the tag's
    only label, else the one label named in every category (Label Studio's
    stock OCR template: ``Text`` for ``text line``); None when none fits."""
    if all(labels_map.resolve(c) for c in categories):
        return labels_map
    labels = labels_map.labels
    if len(labels) == 1:
        return LabelMap(phrases={c: labels[0] for c in categories})
    named = {labels_map.label_in_phrase(c) for c in categories}
    if len(named) == 1 and None not in named:
        return LabelMap(phrases={c: named.pop() for c in categories})
    return None


def _names_a_category(phrase: str, categories: LabelMap) -> bool:
    """``phrase`` is one of ``categories`` (exact, case/space or fuzzy match)."""
    return categories.resolve(phrase) is not None


def _without_categories(label_map: LabelMap, categories: list[str]) -> LabelMap:
    """``label_map`` less the phrases naming one of ``categories``: a phrase
    goes when it, or its label, names one (``Person`` drops all its aliases
    for ``person``; ``Animal`` keeps ``dog`` when only ``cat`` goes)."""
    named = LabelMap(phrases={c: c for c in categories})
    return LabelMap(
        phrases={
            phrase: label
            for phrase, label in label_map.phrases.items()
            if not _names_a_category(phrase, named)
            and not _names_a_category(label, named)
        },
        free=label_map.free,
    )


def _is_human(label: str, label_map: LabelMap) -> bool:
    """``label`` (or a phrase asked for it) names people or hands
    (:data:`HUMAN_WORDS`, as whole words)."""
    names = [label, *(p for p, lab in label_map.phrases.items() if lab == label)]
    return any(HUMAN_WORDS.intersection(phrase_words(name)) for name in names)


def _instance_categories(
    ctx: _Context, control: Any, kp: ControlPlan, rect: ControlPlan
) -> list[str]:
    """The instance categories keypoint call ``kp`` asks when ``rect`` boxes
    its instances: its own (``person``, or ``rex_categories``); but animal
    joints without ``rex_categories`` ask for the species ``rect`` detects --
    its phrases whose label is not people or hands (:func:`_is_human`)."""
    if kp.keypoint_set != ANIMAL.name or ctx.attr(control, "rex_categories"):
        return kp.call.categories
    species = rect.label_map
    return [p for p, label in species.phrases.items() if not _is_human(label, species)]


def _link_keypoint_boxes(
    ctx: _Context, controls: list[ControlPlan], notes: list[str]
) -> list[ControlPlan]:
    """Give keypoint calls a ``RectangleLabels`` for their instance boxes.

    The rectangle must detect on the same image and have a label for every
    instance category (:func:`_instance_categories`: animal joints take the
    rectangle's species); it stops detecting those categories (they would be
    a second box per instance) and is dropped when nothing is left to ask.
    """
    tags = {c.name: c for c in ctx.controls}
    emptied: set[str] = set()
    for kp in controls:
        if kp.call.task is not Task.KEYPOINT:
            continue
        for rect in controls:
            if (
                rect.tag != "RectangleLabels"
                or rect.to_name != kp.to_name
                or rect.call.task is not Task.DETECTION
            ):
                continue
            labels = _label_map(tags[rect.control])
            categories = _instance_categories(ctx, tags[kp.control], kp, rect)
            if labels.free or not categories:
                continue
            try:
                box_map = labels.restricted_to(categories)
            except ValueError:
                continue
            kp.call.categories = categories
            kp.box_control = rect.control
            kp.box_map = box_map
            rect.label_map = _without_categories(rect.label_map, kp.call.categories)
            rect.call.categories = rect.label_map.categories
            if not rect.call.categories:
                emptied.add(rect.control)
            notes.append(
                f"{rect.tag} {rect.control!r}: "
                f"{', '.join(box_map.labels)} boxes come with the keypoint "
                f"instances of {kp.tag} {kp.control!r}, not a separate detection"
            )
            break
    return [c for c in controls if c.control not in emptied]


# --------------------------------------------------------------------------- #
# The whole config
# --------------------------------------------------------------------------- #


def plan_config(
    label_config: str, extra_params: Mapping[str, Any] | None = None
) -> Plan:
    """The plan for predicting a task of this config.

    ``extra_params`` (the model's "Extra params") give project-wide defaults
    for the ``rex_*``/``model_score_threshold`` attributes and ``generation``
    overrides. Raises PlanError naming the tag when nothing can be served or an
    attribute is unusable.
    """
    ctx = _Context(parse_config(label_config), extra_params or {})
    controls: list[ControlPlan] = []
    notes: list[str] = []
    ocr_images: set[str] = set()
    for control in ctx.controls:
        if control.tag in UNSERVABLE_REGION_TAGS:
            notes.append(f"{_describe(control)}: rexlabel cannot produce these regions")
            continue
        if control.tag not in REGION_TAGS:
            continue
        to_name = ctx.image_of(control)
        if to_name is None:
            targets = ", ".join(
                f"{ctx.object_tags.get(n, '?')} {n!r}" for n in control.to_name or []
            )
            notes.append(f"{_describe(control)} labels {targets}, not an <Image>")
            continue
        if _bool_attr(ctx, control, "rex_skip", False):
            notes.append(f"{_describe(control)}: skipped (rex_skip)")
            continue
        unlabeled = control.tag in ("Rectangle", "Polygon", "KeyPoint", "Brush")
        has_task = bool((control.attr or {}).get("rex_task"))
        if unlabeled and not has_task:
            if control.tag in ("Rectangle", "Polygon") and ctx.region_text_area(
                to_name
            ):
                if to_name in ocr_images:
                    notes.append(
                        f"{_describe(control)}: skipped, another region control on "
                        f"{to_name!r} already serves the OCR text"
                    )
                    continue
                ocr_images.add(to_name)
            elif not ctx.attr(control, "rex_categories"):
                notes.append(
                    f"{_describe(control)} has no labels: add rex_categories to "
                    "have it pre-annotated (it still serves interactive prompts)"
                )
                continue
        controls.append(_plan_control(ctx, control, to_name))
    controls = _link_keypoint_boxes(ctx, controls, notes)
    if not controls:
        found = ", ".join(_describe(c) for c in ctx.controls) or "no control tags"
        detail = f" ({'; '.join(notes)})" if notes else ""
        raise PlanError(
            f"no control tag rexlabel can pre-annotate in this config: found "
            f"{found}{detail}; rexlabel serves RectangleLabels, PolygonLabels, "
            "BrushLabels, KeyPointLabels and Rectangle/Polygon with a per-region "
            "TextArea on an <Image>"
        )
    for note in notes:
        log.info("plan: %s", note)
    return Plan(controls=controls, notes=notes)


# --------------------------------------------------------------------------- #
# Interactive context
# --------------------------------------------------------------------------- #


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


def _control_or_error(ctx: _Context, name: Any, what: str) -> Any:
    for control in ctx.controls:
        if control.name == name:
            return control
    raise PlanError(f"context {what} comes from {name!r}, which is not in the config")


def _target(ctx: _Context, source: Any, to_name: str, tags: tuple[str, ...]) -> Any:
    wanted = (source.attr or {}).get("rex_target")
    if wanted:
        target = _control_or_error(ctx, wanted, f"{_describe(source)} rex_target")
        if target.tag not in tags:
            raise PlanError(
                f"{_describe(source)}: rex_target={wanted!r} is a {target.tag}; "
                f"expected one of {', '.join(tags)}"
            )
        return target
    for tag in tags:
        found = ctx.on_image(to_name, (tag,))
        if found:
            return found[0]
    raise PlanError(
        f"{_describe(source)}: no {' / '.join(tags)} control on {to_name!r} "
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
    ctx = _Context(parse_config(label_config), extra_params or {})
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
        raise PlanError(f"{_describe(source)} does not label an <Image>")
    if kind in ("rectanglelabels", "rectangle"):
        return Plan([_plan_visual_prompt(ctx, source, to_name, items, last)])
    if kind == "textarea":
        return Plan([_plan_text_prompt(ctx, source, to_name, last)])
    if kind in ("keypointlabels", "keypoint"):
        return Plan([_plan_point_prompt(ctx, source, to_name, items, last)])
    raise PlanError(
        f"interactive {kind or 'untyped'} regions from {_describe(source)} are not "
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
    ctx: _Context, source: Any, to_name: str, items: list, last: Mapping[str, Any]
) -> ControlPlan:
    if source.tag not in RECTANGLE_TAGS:
        raise PlanError(
            f"{_describe(source)}: a drawn rectangle must come from a Rectangle control"
        )
    boxes = [_region_box(i) for i in _same_region_kind(items, last)]
    label = _first_label(last)
    label_map = _label_map(source)
    plan = ControlPlan(
        control=source.name,
        tag=source.tag,
        to_name=to_name,
        value_key=ctx.images[to_name],
        output=OUTPUT_TYPES[source.tag],
        call=ModelCall(
            task=Task.VISUAL_PROMPTING,
            visual_prompt_boxes=boxes,
            key=source.name,
            score_threshold=_threshold(ctx, source),
            max_instances=_max_instances(ctx, source),
            generation=_generation(ctx),
        ),
        label_map=label_map,
        relabel=label,
        drop_boxes=boxes,
    )
    return plan


def _plan_text_prompt(
    ctx: _Context, source: Any, to_name: str, last: Mapping[str, Any]
) -> ControlPlan:
    """Detection of each typed phrase as typed, its regions labelled by
    :func:`_prompt_labels`."""
    if source.tag != "TextArea":
        raise PlanError(f"{_describe(source)}: a text prompt must come from a TextArea")
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
        raise PlanError(f"{_describe(source)}: the prompt is empty")
    target = _target(ctx, source, to_name, TEXT_PROMPT_TARGETS)
    return _plan_control(
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
    labels = _label_map(target)
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
                _describe(target),
                "named in the phrase" if how is Match.HEAD else "its only label",
            )
    if unknown:
        typed = shown(", ".join(unknown))
        raise PlanError(
            f"prompt {typed} matches no label of {_describe(target)} and names"
            f" no one label (labels: {', '.join(labels.labels)}); type a "
            f"label, or a phrase naming one (e.g. 'red {labels.labels[0]}'), and "
            "separate phrases for different labels with commas"
        )
    return LabelMap(phrases=mapped, free=labels.free)


def _plan_point_prompt(
    ctx: _Context, source: Any, to_name: str, items: list, last: Mapping[str, Any]
) -> ControlPlan:
    points = [_region_point(i) for i in _same_region_kind(items, last)]
    target = _target(ctx, source, to_name, POINT_PROMPT_TARGETS)
    clicked = _first_label(last)
    label_map = _label_map(target)
    label = label_map.resolve(clicked) if clicked else None
    if label is None and not label_map.free:
        raise PlanError(
            f"keypoint label {clicked!r} matches no label of {_describe(target)} "
            f"(labels: {', '.join(label_map.labels)})"
        )
    masks = "brush" if target.tag in BRUSH_TAGS else "polygon"
    return ControlPlan(
        control=target.name,
        tag=target.tag,
        to_name=to_name,
        value_key=ctx.images[to_name],
        output=OUTPUT_TYPES[target.tag],
        call=ModelCall(
            task=Task.POINTING,
            categories=[label or clicked or "object"],
            sam_points=points,
            masks=masks,
            key=target.name,
        ),
        label_map=label_map,
        relabel=label,
    )
