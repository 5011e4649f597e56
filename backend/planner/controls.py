"""Which control gets which task: one :class:`ControlPlan` per region control
of the config (:func:`plan_config`), or for the control an interactive prompt
fills (:func:`plan_control` with the task and phrases forced)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from backend.labels import LabelMap, split_phrases
from backend.planner.config import (
    UNSERVABLE_REGION_TAGS,
    ConfigContext,
    bool_attr,
    control_plan,
    describe,
    generation_of,
    keypoint_set_of,
    label_map_of,
    max_instances_attr,
    parse_config,
    set_score_thresholds,
    task_attr,
    tile_attrs,
    unknown_threshold_labels,
)
from backend.planner.keypoint_boxes import link_keypoint_boxes
from backend.planner.plan import ControlPlan, Plan, PlanError, shown
from common.jobspec import MaskOutput, ModelCall
from converters.keypoint_sets import KEYPOINT_SETS
from converters.tags import LABELS_TAG, REGION_TAGS, Geometry
from converters.tasks import Task

log = logging.getLogger(__name__)

OCR_DEFAULT_CATEGORY = "text line"
"""OCR granularity asked when ``rex_categories`` is absent: lines are what
Label Studio's OCR template transcribes per region."""

SAM_GEOMETRIES = frozenset({Geometry.POLYGON, Geometry.BRUSH})
"""Geometries whose controls get SAM masks unless ``rex_sam="false"``."""

OCR_TASKS = {Geometry.RECTANGLE: Task.OCR_BOX, Geometry.POLYGON: Task.OCR_POLYGON}
"""The task of a label-less control of these geometries beside a per-region
TextArea: OCR, its text going to that TextArea."""


def plan_control(
    ctx: ConfigContext,
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
    region = REGION_TAGS[control.tag]
    geometry = region.geometry
    if label_map is None:
        label_map = label_map_of(control)
    text_area = ctx.region_text_area(to_name)
    task = force_task or task_attr(ctx, control)
    if task is None:
        if not region.labelled and geometry in OCR_TASKS and text_area is not None:
            task = OCR_TASKS[geometry]
        elif geometry is Geometry.KEYPOINT:
            task = Task.KEYPOINT if keypoint_set_of(label_map.labels) else Task.POINTING
        else:
            task = Task.DETECTION
    if task is Task.VISUAL_PROMPTING:
        raise PlanError(
            f"{describe(control)}: rex_task=visual_prompting needs a drawn box; "
            "draw one with Auto-Annotation on instead"
        )
    if task not in region.tasks:
        allowed = ", ".join(sorted(t.value for t in region.tasks))
        raise PlanError(
            f"{describe(control)}: rex_task={task.value!r} cannot be shown as "
            f"{geometry.value} regions; use one of: {allowed}"
        )

    plan = control_plan(
        ctx, control, to_name, ModelCall(task=task, key=control.name), label_map
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

    masks = MaskOutput.NONE
    sam = bool_attr(ctx, control, "rex_sam", geometry in SAM_GEOMETRIES)
    if geometry is Geometry.BRUSH:
        if not sam:
            raise PlanError(
                f"{describe(control)}: brush regions need SAM masks; remove "
                'rex_sam="false" or use a Rectangle/Polygon control'
            )
        masks = MaskOutput.BRUSH
    elif geometry is Geometry.POLYGON and task is not Task.OCR_POLYGON and sam:
        masks = MaskOutput.POLYGON
    plan.call.masks = masks
    set_score_thresholds(ctx, control, plan)
    plan.call.max_instances = max_instances_attr(ctx, control)
    plan.call.generation = generation_of(ctx)
    plan.call.tile = tile_attrs(ctx, control)
    return plan


def _plan_phrases(control: Any, plan: ControlPlan, categories: list[str]) -> None:
    if categories:
        try:
            plan.label_map = plan.label_map.restricted_to(categories)
        except ValueError as exc:
            raise PlanError(
                f"{describe(control)}: rex_categories {exc}; alias a label with "
                '<Label predicted_values="...">'
            ) from None
    if not plan.label_map.categories:
        raise PlanError(
            f"{describe(control)} has no labels to ask for: add <Label> tags or "
            "rex_categories"
        )
    plan.call.categories = plan.label_map.categories


def _plan_keypoint(control: Any, plan: ControlPlan, categories: list[str]) -> None:
    kp_set = keypoint_set_of(plan.label_map.labels)
    if kp_set is None:
        known = "; ".join(
            f"{s.name}: {', '.join(s.joints)}" for s in KEYPOINT_SETS.values()
        )
        raise PlanError(
            f"{describe(control)}: rex_task=keypoint needs labels that are joints "
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
    ctx: ConfigContext,
    control: Any,
    plan: ControlPlan,
    categories: list[str],
    text_area: Any,
) -> None:
    if text_area is None:
        raise PlanError(
            f"{describe(control)}: rex_task={plan.call.task.value!r} needs a "
            f'<TextArea perRegion="true" toName={plan.to_name!r}> for the text'
        )
    plan.text_control = text_area.name
    plan.call.categories = categories or [OCR_DEFAULT_CATEGORY]
    if plan.label_map.free:
        plan.label_map = LabelMap.free_phrases(plan.call.categories)
        for labels_tag in ctx.on_image(plan.to_name, (LABELS_TAG,)):
            labels_map = _ocr_labels(label_map_of(labels_tag), plan.call.categories)
            if labels_map is not None:
                plan.labels_control = labels_tag.name
                plan.labels_map = labels_map
                break
            log.info(
                "plan: %s: OCR category %s matches no label of %s; regions get "
                "no label (alias one with predicted_values)",
                describe(control),
                plan.call.categories,
                describe(labels_tag),
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


def plan_config(
    label_config: str, extra_params: Mapping[str, Any] | None = None
) -> Plan:
    """The plan for predicting a task of this config.

    ``extra_params`` (the model's "Extra params") give project-wide defaults
    for the ``rex_*``/``model_score_threshold`` attributes, per-label
    thresholds (``model_score_thresholds``) and ``generation`` overrides.
    Raises PlanError naming the tag when nothing can be served or an
    attribute is unusable (naming the label for a bad per-label threshold; a
    label the config lacks is a note).
    """
    ctx = ConfigContext(parse_config(label_config), extra_params or {})
    controls: list[ControlPlan] = []
    notes: list[str] = []
    ocr_images: set[str] = set()
    for control in ctx.controls:
        if control.tag in UNSERVABLE_REGION_TAGS:
            notes.append(f"{describe(control)}: rexlabel cannot produce these regions")
            continue
        if control.tag not in REGION_TAGS:
            continue
        to_name = ctx.image_of(control)
        if to_name is None:
            targets = ", ".join(
                f"{ctx.object_tags.get(n, '?')} {n!r}" for n in control.to_name or []
            )
            notes.append(f"{describe(control)} labels {targets}, not an <Image>")
            continue
        if bool_attr(ctx, control, "rex_skip", False):
            notes.append(f"{describe(control)}: skipped (rex_skip)")
            continue
        region = REGION_TAGS[control.tag]
        has_task = bool((control.attr or {}).get("rex_task"))
        if not region.labelled and not has_task:
            if region.geometry in OCR_TASKS and ctx.region_text_area(to_name):
                if to_name in ocr_images:
                    notes.append(
                        f"{describe(control)}: skipped, another region control on "
                        f"{to_name!r} already serves the OCR text"
                    )
                    continue
                ocr_images.add(to_name)
            elif not ctx.attr(control, "rex_categories"):
                notes.append(
                    f"{describe(control)} has no labels: add rex_categories to "
                    "have it pre-annotated (it still serves interactive prompts)"
                )
                continue
        controls.append(plan_control(ctx, control, to_name))
    controls = link_keypoint_boxes(ctx, controls, notes)
    for plan in controls:  # keypoint boxes changed which labels a call gives
        plan.call.score_threshold = plan.loosest_threshold()
    for label in unknown_threshold_labels(ctx, controls):
        notes.append(
            f"extra_params model_score_thresholds: {shown(label)} is no label of "
            "this config (renamed?); its threshold is not used"
        )
    if not controls:
        found = ", ".join(describe(c) for c in ctx.controls) or "no control tags"
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
