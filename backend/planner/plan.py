"""What the planner hands on: one :class:`ControlPlan` per served control, the
:class:`Plan` of a task, and the errors a config or a request is refused with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.labels import LabelMap
from common.jobspec import ImageJob, ModelCall
from converters.tags import REGION_TAGS


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
        score_threshold: regions scoring below it are dropped, unless their
            label has an entry in ``label_thresholds`` (the control's
            ``model_score_threshold``, else the project-wide one; None: none).
        label_thresholds: label -> threshold (0..1) of regions with that
            label (``model_score_thresholds`` of the extra params); wins over
            ``score_threshold``. The call's ``score_threshold`` is the loosest
            of the two (:meth:`loosest_threshold`): the worker drops only what
            every label would, the exact cut is made per label when results
            are written (:mod:`backend.predictions`).
    """

    control: str
    tag: str
    to_name: str
    value_key: str
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
    score_threshold: float | None = None
    label_thresholds: dict[str, float] = field(default_factory=dict)

    @property
    def output(self) -> str:
        """Label Studio result type of its regions (``rectanglelabels``...)."""
        return REGION_TAGS[self.tag].result_type

    def _region_map(self) -> LabelMap | None:
        """The map giving a model phrase its region's label: the ``Labels``
        tag's for labelled OCR, the box control's for keypoint instances
        (joints alone: none), else the control's own."""
        if self.labels_control is not None:
            return self.labels_map
        if self.keypoint_set is not None:
            return self.box_map
        return self.label_map

    def region_label(self, phrase: str) -> str | None:
        """The label the regions of a model ``phrase`` get in Label Studio
        (keypoint instances: their box's); None when it gets none."""
        if self.relabel is not None:
            return self.relabel
        mapping = self._region_map()
        return mapping.resolve(phrase) if mapping is not None else None

    @property
    def region_labels(self) -> list[str]:
        """Every label :meth:`region_label` can give (free maps: the phrases
        asked)."""
        if self.relabel is not None:
            return [self.relabel]
        mapping = self._region_map()
        return mapping.labels if mapping is not None else []

    def threshold_of(self, phrase: str) -> float | None:
        """The score a region of model ``phrase`` needs to be kept: its
        label's entry in ``label_thresholds``, else ``score_threshold``."""
        if self.label_thresholds:
            label = self.region_label(phrase)
            if label in self.label_thresholds:
                return self.label_thresholds[label]
        return self.score_threshold

    def loosest_threshold(self) -> float | None:
        """The lowest threshold any region of this control can have: what the
        worker may drop before labels are known (None when some region has
        no threshold)."""
        if self.score_threshold is None:
            return None
        own = [
            self.label_thresholds[label]
            for label in self.region_labels
            if label in self.label_thresholds
        ]
        return min([self.score_threshold, *own])


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
