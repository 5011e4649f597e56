"""One control's regions in a submitted annotation, as the model would answer them.

The planner says what a control asks (:class:`~backend.planner.ControlPlan`);
this module reads back what the annotator drew for it, in the shape of that
call's answer: pixels of the original image, each region labelled with the
*phrase* the prompt asks (a label's first ``predicted_values`` alias, else the
label), clipped to the image (:mod:`backend.finetune.clipping`).

================================  =========================================
call (from the planner)           regions read
================================  =========================================
``detection``, ``gui_grounding``  the control's regions as boxes (polygons,
                                  rotated rectangles and brush masks by their
                                  bounding box)
``pointing``, ``gui_pointing``    the control's points (keypoints without a
                                  parent box)
``keypoint``                      each box of the ``box_control`` holding
                                  joints' category, with its joints (set
                                  order, missing joints not visible)
``ocr_box``, ``ocr_polygon``      every region with text in the call's
                                  per-region TextArea (a box; a polygon or
                                  rotated rectangle by its bounds for boxes)
================================  =========================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.finetune.clipping import clip_region
from backend.labels import LabelMap
from backend.planner import ControlPlan, Plan
from converters.keypoint_sets import get_keypoint_set
from converters.labelstudio.reader import from_labelstudio
from converters.parser import DEFAULT_OCR_LABEL
from converters.prediction import Prediction, RegionType
from converters.tags import TEXT_TYPE
from converters.tasks import BOX_TASKS, POINT_TASKS, Task


@dataclass
class ControlRegions:
    """What one control's regions became: ``regions`` labelled with phrases
    (OCR: labelled with the granularity asked, the text in ``text``), how
    many were ``dropped``, and why (``warnings``). ``unreadable`` counts the
    regions Label Studio's results did not describe well enough to read:
    what they were is unknown, so no answer about the image can be trusted."""

    regions: list[Prediction] = field(default_factory=list)
    dropped: int = 0
    unreadable: int = 0
    warnings: list[str] = field(default_factory=list)

    def drop(self, message: str) -> None:
        self.dropped += 1
        self.warnings.append(message)


def phrase_by_label(label_map: LabelMap) -> dict[str, str]:
    """Each label's phrase in training answers: its first phrase asked (the
    first ``predicted_values`` alias, else the label itself)."""
    phrases: dict[str, str] = {}
    for phrase, label in label_map.phrases.items():
        phrases.setdefault(label, phrase)
    return phrases


def _label_of(result: Mapping[str, Any]) -> str | None:
    value = result.get("value")
    if not isinstance(value, Mapping):
        return None
    labels = value.get(str(result.get("type", "")).lower())
    if isinstance(labels, list):
        return str(labels[0]) if labels else None
    return str(labels) if isinstance(labels, str) else None


def _grouped(results: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping]]:
    """Results by region id, in first-seen order (one without an id alone)."""
    groups: dict[str, list[Mapping]] = {}
    for index, result in enumerate(results):
        rid = result.get("id")
        groups.setdefault(str(rid) if rid is not None else f"#{index}", []).append(
            result
        )
    return groups


def _read(
    group: list[Mapping], width: float, height: float, out: ControlRegions, where: str
) -> list[Prediction]:
    parsed = from_labelstudio(group, width=int(width), height=int(height))
    out.warnings.extend(f"{where}: {w}" for w in parsed.warnings)
    if not parsed.predictions:
        out.unreadable += 1
        out.dropped += 1
    return parsed.predictions


def _as_box(region: Prediction) -> Prediction:
    """A box of the region's bounds (polygons, rotated boxes, brush masks)."""
    if region.type is RegionType.BOX:
        return region.with_(mask=None)
    return Prediction(RegionType.BOX, region.label, region.bbox, text=region.text)


def _keep(
    region: Prediction, width: float, height: float, out: ControlRegions, where: str
) -> None:
    clipped, warnings = clip_region(region, width, height, where)
    if clipped is None:
        out.dropped += 1
    else:
        out.regions.append(clipped)
    out.warnings.extend(warnings)


def read_regions(
    plan: Plan,
    control: ControlPlan,
    results: Sequence[Mapping[str, Any]],
    width: float,
    height: float,
    where: str,
) -> ControlRegions:
    """``control``'s regions among one image's annotation ``results`` (a
    ``width`` x ``height`` image, pixels of the original image), as its call
    would answer them; ``where`` (``task 3``) starts every warning."""
    task = control.call.task
    if task is Task.KEYPOINT:
        return _keypoint_regions(control, results, width, height, where)
    if task.is_ocr:
        return _ocr_regions(control, results, width, height, where)
    return _labelled_regions(plan, control, results, width, height, where)


def _claimed_labels(plan: Plan, control: ControlPlan) -> set[str]:
    """Labels of ``control`` that box another control's keypoint instances:
    their regions belong to that keypoint call, not to this one."""
    return {
        label
        for other in plan.controls
        if other.box_control == control.control and other.box_map is not None
        for label in other.box_map.labels
    }


def _labelled_regions(
    plan: Plan,
    control: ControlPlan,
    results: Sequence[Mapping[str, Any]],
    width: float,
    height: float,
    where: str,
) -> ControlRegions:
    out = ControlRegions()
    task = control.call.task
    phrases = phrase_by_label(control.label_map)
    claimed = _claimed_labels(plan, control)
    asked = control.call.categories or []
    own = [r for r in results if r.get("from_name") == control.control]
    for rid, group in _grouped(own).items():
        here = f"{where} region {rid!r}"
        for region in _read(group, width, height, out, here):
            if region.label in claimed:
                continue
            phrase = phrases.get(region.label)
            if phrase is None and not region.label and len(asked) == 1:
                phrase = asked[0]  # a label-less control asking one phrase
            if phrase is None:
                out.drop(
                    f"{here}: label {region.label!r} is not asked by "
                    f"{control.control!r} (asked: {', '.join(asked)}); dropped"
                )
                continue
            region = region.with_(label=phrase, score=None)
            if task in BOX_TASKS:
                region = _as_box(region)
            elif task in POINT_TASKS and region.type is not RegionType.POINT:
                out.drop(f"{here}: a {region.type.value}, not a point; dropped")
                continue
            _keep(region, width, height, out, here)
    return out


def _keypoint_regions(
    control: ControlPlan,
    results: Sequence[Mapping[str, Any]],
    width: float,
    height: float,
    where: str,
) -> ControlRegions:
    out = ControlRegions()
    joints = [r for r in results if r.get("from_name") == control.control]
    if control.box_control is None or control.box_map is None:
        if joints:
            out.dropped += len(joints)
            out.warnings.append(
                f"{where}: the joints of {control.control!r} have no instance "
                "boxes (no RectangleLabels boxes them), so they cannot be "
                "grouped into instances; no keypoint example"
            )
        return out
    phrases = phrase_by_label(control.box_map)
    boxes = [
        r
        for r in results
        if r.get("from_name") == control.box_control and _label_of(r) in phrases
    ]
    box_ids = {str(r.get("id")) for r in boxes}
    orphans = [r for r in joints if str(r.get("parentID")) not in box_ids]
    if orphans:
        out.dropped += len(orphans)
        out.warnings.append(
            f"{where}: {len(orphans)} joint(s) of {control.control!r} belong to "
            "no instance box; dropped"
        )
    kp_set = get_keypoint_set(control.keypoint_set or "")
    for rid, group in _grouped(boxes).items():
        here = f"{where} instance {rid!r}"
        own_joints = [r for r in joints if str(r.get("parentID")) == rid]
        for region in _read(group + own_joints, width, height, out, here):
            if region.type is RegionType.POINT:
                continue  # a joint whose box failed to read: reported above
            named = {name: None for name in kp_set.joints}
            for name, point in (region.keypoints or {}).items():
                joint = kp_set.joint_for(name)
                if joint is None:
                    out.warnings.append(
                        f"{here}: {name!r} is no joint of the {kp_set.name} "
                        "set; left out"
                    )
                else:
                    named[joint] = point
            instance = Prediction(
                RegionType.KEYPOINT,
                phrases[region.label],
                region.bbox,
                keypoints=named,
            )
            _keep(instance, width, height, out, here)
    return out


def _ocr_regions(
    control: ControlPlan,
    results: Sequence[Mapping[str, Any]],
    width: float,
    height: float,
    where: str,
) -> ControlRegions:
    """Regions drawn with ``control`` and every region given text in its
    TextArea (Label Studio's OCR template draws with a Rectangle and a Polygon
    and serves only one of them)."""
    out = ControlRegions()
    category = (control.call.categories or [DEFAULT_OCR_LABEL])[0]
    for rid, group in _grouped(results).items():
        mine = any(r.get("from_name") == control.control for r in group)
        texted = any(
            r.get("from_name") == control.text_control
            and str(r.get("type", "")).lower() == TEXT_TYPE
            for r in group
        )
        if not (mine or texted):
            continue
        here = f"{where} region {rid!r}"
        for region in _read(group, width, height, out, here):
            if region.text is None or not region.text.strip():
                out.drop(f"{here}: an OCR region without text; dropped")
                continue
            region = region.with_(label=category, score=None, mask=None)
            outline = control.call.task is Task.OCR_POLYGON
            if not (outline and region.type is RegionType.POLYGON):
                region = _as_box(region)  # a box: the polygon answer writes 4 corners
            _keep(region, width, height, out, here)
    return out
