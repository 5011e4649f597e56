"""Keypoint instances get boxes.

A keypoint ``KeyPointLabels`` whose instance categories (``person``, or its
``rex_categories``) all map to labels of a ``RectangleLabels`` detecting on
the same image (the first such one; phrase matching as in
:mod:`backend.labels`) puts each instance's box there and gives its joints
that box as ``parentID``. That rectangle then no longer detects those
categories itself (one box per instance); its other labels are detected as
usual, and it is left out when none remain. Animal joints without
``rex_categories`` ask for the species of such a rectangle: every label of
the first one that is not people or hands (:data:`HUMAN_WORDS`), so
``Cat``/``Dog`` boxes hold their animals' joints. Without such a rectangle
(or with it ``rex_skip``-ped) joints stand alone (animal joints then ask for
``animal``).
"""

from __future__ import annotations

from typing import Any

from backend.labels import LabelMap, phrase_words
from backend.planner.config import ConfigContext, label_map_of
from backend.planner.plan import ControlPlan
from converters.keypoint_sets import ANIMAL
from converters.tasks import Task

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
    ctx: ConfigContext, control: Any, kp: ControlPlan, rect: ControlPlan
) -> list[str]:
    """The instance categories keypoint call ``kp`` asks when ``rect`` boxes
    its instances: its own (``person``, or ``rex_categories``); but animal
    joints without ``rex_categories`` ask for the species ``rect`` detects --
    its phrases whose label is not people or hands (:func:`_is_human`)."""
    if kp.keypoint_set != ANIMAL.name or ctx.attr(control, "rex_categories"):
        return kp.call.categories
    species = rect.label_map
    return [p for p, label in species.phrases.items() if not _is_human(label, species)]


def link_keypoint_boxes(
    ctx: ConfigContext, controls: list[ControlPlan], notes: list[str]
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
            labels = label_map_of(tags[rect.control])
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
