"""Worker results -> one Label Studio prediction per task.

A task's image results (``common.jobspec.ImageResult``) are turned into
Label Studio result dicts control by control with
:func:`converters.labelstudio.writer.to_labelstudio`, using the plan that asked for
them: the call's ``key`` names its control, the plan says which result type,
which per-region TextArea gets OCR text and how model phrases map to labels.
Keypoint instances of a control planned with a ``box_control`` become a
rectangle there (labelled through ``box_map``) plus joints whose ``parentID``
is that rectangle's id.

Model phrases that match no label are dropped and reported (warnings), never
given another label. A task that got no region because something failed is
``failed`` (its reasons in ``errors``): ``/predict`` answers it with
:func:`failed_prediction`, bulk jobs post nothing for it, so Label Studio
predicts it again later; only interactive replies use the empty prediction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.labels import LabelMap, Match
from backend.planner import DRAWN_BOX_IOU, ControlPlan, Plan
from common.jobspec import CallResult, ImageResult
from converters.labelstudio.base import LabelStudioError
from converters.labelstudio.writer import (
    Output,
    to_labelstudio,
    to_labelstudio_prediction,
)
from converters.prediction import Prediction
from converters.tags import REGION_TAGS, RegionTag

log = logging.getLogger(__name__)


def empty_prediction(model_version: str) -> dict[str, Any]:
    """What a task gets when nothing could be predicted for it."""
    return {"result": [], "score": 0, "model_version": model_version}


def failed_prediction(model_version: str, error: str) -> dict[str, Any]:
    """The ``/predict`` item of a task that failed (or ran out of time).

    It has no ``result``: Label Studio 1.23 skips such an item (logging it,
    error included) and stores nothing, so the next "Retrieve Predictions" or
    task open asks again. An empty ``result`` would be stored under this
    ``model_version`` and the task never predicted again.
    """
    return {"model_version": model_version, "error": error}


@dataclass
class TaskPrediction:
    """One task's prediction plus what went wrong on the way.

    ``errors`` mean the task (or one of its images) got nothing; ``warnings``
    mean something was dropped (unmatched phrases, a truncated answer).
    """

    prediction: dict[str, Any]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Errors left the task without any region: nothing worth storing."""
        return bool(self.errors) and not self.prediction.get("result")


def _iou(a: tuple[float, ...], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _kept(control: ControlPlan, predictions: Iterable[Prediction]) -> list[Prediction]:
    """Predictions scoring at least their label's threshold
    (:meth:`ControlPlan.threshold_of`: per label, else the control's) and not
    a box the user drew. Every path's results pass here: ``/predict``,
    interactive answers and bulk jobs."""
    out = []
    for p in predictions:
        threshold = control.threshold_of(p.label) if p.score is not None else None
        if threshold is not None and p.score < threshold:
            continue
        if control.drop_boxes and any(
            _iou(p.bbox, box) >= DRAWN_BOX_IOU for box in control.drop_boxes
        ):
            continue
        out.append(p)
    return out


@dataclass
class _LabelNotes:
    """What the labeller met while mapping one call's phrases to labels."""

    unmatched: list[str] = field(default_factory=list)
    """Model phrases that match no label (dropped)."""
    dropped_joints: list[str] = field(default_factory=list)
    """Joints of the keypoint set the config does not list (dropped)."""
    fuzzy: dict[str, str] = field(default_factory=dict)
    """Model phrase -> label, where only a fuzzy match joined them."""

    def warnings(self, control: ControlPlan) -> list[str]:
        where = f"{control.tag} {control.control!r}"
        out = []
        if self.unmatched:
            labels = (control.box_map or control.label_map).labels
            out.append(
                f"{where}: model phrase(s) "
                f"{', '.join(repr(u) for u in self.unmatched)} match no label "
                f"({', '.join(labels) or 'none'}); dropped"
            )
        if self.dropped_joints:
            counts = Counter(self.dropped_joints)
            out.append(
                f"{where}: {len(self.dropped_joints)} keypoint(s) of joints the "
                "config does not list dropped ("
                + ", ".join(f"{joint!r} x{n}" for joint, n in counts.items())
                + ")"
            )
        if self.fuzzy:
            out.append(
                f"{where}: model phrase(s) read by fuzzy match: "
                + ", ".join(f"{p!r} -> {label!r}" for p, label in self.fuzzy.items())
            )
        return out


def _mapper(mapping: LabelMap, notes: _LabelNotes) -> Callable[[str], Any]:
    """Phrase -> label through ``mapping``; notes what was not an exact match."""

    def label(phrase: str) -> Any:
        resolved, how = mapping.match(phrase)
        if resolved is None:
            if phrase not in notes.unmatched:
                notes.unmatched.append(phrase)
        elif how is Match.FUZZY:
            notes.fuzzy[phrase] = resolved
        return resolved

    return label


def _labeller(control: ControlPlan, notes: _LabelNotes) -> Callable[[str], Any]:
    """Phrase -> label for the writer; what it drops or guesses goes to ``notes``."""
    if control.relabel is not None:
        relabel = control.relabel
        return lambda phrase: relabel
    if control.keypoint_set is None:
        return _mapper(control.label_map, notes)
    from converters.keypoint_sets import get_keypoint_set

    kp_set = get_keypoint_set(control.keypoint_set)
    # Joints map exactly (after joint_key), never fuzzily: "left knee" is not
    # "left eye" however alike the words look.
    joint_labels = dict(control.label_map.phrases)
    box_label = _mapper(control.box_map, notes) if control.box_map else None

    def joint_label(phrase: str) -> Any:
        joint = kp_set.joint_for(phrase)
        if joint is not None:
            label = joint_labels.get(joint)
            if label is None:
                notes.dropped_joints.append(joint)
            return label
        if box_label is None:
            return phrase  # the instance's category (person1 -> person)
        return box_label(phrase)  # the label of the instance's box

    return joint_label


def _strip_labels(
    results: list[dict[str, Any]], from_name: str, region: RegionTag
) -> None:
    """Make labelled results of a label-less control plain geometry results."""
    plain, labelled = region.result_type, region.labelled_type
    for r in results:
        if r.get("from_name") == from_name and r.get("type") == labelled:
            r["type"] = plain
            r["value"].pop(labelled, None)


def call_results(
    control: ControlPlan, call: CallResult, width: int, height: int, id_seed: str = ""
) -> tuple[list[dict[str, Any]], list[str]]:
    """Label Studio results of one call, and warnings about what was dropped;
    ``id_seed`` goes into the region ids (see :class:`RegionIds`)."""
    notes = _LabelNotes()
    predictions = _kept(control, call.predictions)
    kwargs: dict[str, Any] = {
        "to_name": control.to_name,
        "width": width,
        "height": height,
        "label_map": _labeller(control, notes),
        "text_from_name": control.text_control,
        "keypoint_box_from_name": control.box_control,
        "id_seed": id_seed,
    }
    if control.labels_control is not None:
        results = to_labelstudio(
            predictions,
            from_name=control.labels_control,
            output=Output.LABELS,
            geometry_from_name=control.control,
            **{**kwargs, "label_map": _labels_tag_labeller(control)},
        )
    else:
        # Label-less tags are written labelled, then the label key is removed.
        region = REGION_TAGS[control.tag]
        results = to_labelstudio(
            predictions,
            from_name=control.control,
            output=Output(region.labelled_type),
            **kwargs,
        )
        if not region.labelled:
            _strip_labels(results, control.control, region)
    warnings = notes.warnings(control)
    if call.truncated:
        warnings.append(
            f"{control.tag} {control.control!r}: the model's answer was cut off "
            f"({call.finish_reason or 'truncated'}); later regions may be missing"
        )
    return results, warnings


def _labels_tag_labeller(control: ControlPlan) -> Callable[[str], Any]:
    labels_map = control.labels_map
    return lambda phrase: labels_map.resolve(phrase) if labels_map else None


@dataclass(frozen=True)
class RegionIds:
    """How one prediction names its regions.

    Label Studio merges regions by id: an accepted suggestion whose region has
    the id of a region in the annotation replaces that region (a box the user
    had just moved went back to where the model put it). So ids are unique per
    prediction -- ``seed`` differs between a task's pre-annotation and each
    interactive answer -- stable only for the same prediction sent again (same
    seed, same regions), and never one of ``taken``.

    Attributes:
        seed: mixed into every id (``converters.labelstudio.writer.to_labelstudio``).
        taken: ids of regions already in the task's annotations, drafts and
            the interactive context; a result id among them is renamed.
    """

    seed: str = ""
    taken: frozenset[str] = frozenset()

    @classmethod
    def for_task(
        cls,
        task: Mapping[str, Any],
        model_version: str,
        context: Mapping[str, Any] | None = None,
    ) -> RegionIds:
        """Ids for ``task``'s prediction (an interactive one when ``context``)."""
        seed = f"{model_version}|task {task.get('id')}"
        if context:
            digest = hashlib.sha256(
                json.dumps(context, sort_keys=True, default=str).encode()
            ).hexdigest()[:16]
            seed += f"|interactive {digest}"
        return cls(seed, frozenset(_region_ids_in(task, context)))

    def settle(self, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``results`` with every id (and ``parentID``) that is taken renamed."""
        if not self.taken:
            return results
        ids = {r.get("id") for r in results}
        renamed: dict[Any, str] = {}
        for rid in ids:
            if rid in self.taken:
                n = 1
                while f"{rid}r{n}" in self.taken or f"{rid}r{n}" in ids:
                    n += 1
                renamed[rid] = f"{rid}r{n}"
        if not renamed:
            return results
        out = []
        for r in results:
            r = dict(r)
            if r.get("id") in renamed:
                r["id"] = renamed[r["id"]]
            if r.get("parentID") in renamed:
                r["parentID"] = renamed[r["parentID"]]
            out.append(r)
        return out


ANNOTATION_KEYS = ("annotations", "drafts")
"""Lists of a task whose items hold people's regions (``result``). Not
``predictions``: our own earlier prediction sent again keeps its ids."""


def _region_ids_in(
    task: Mapping[str, Any], context: Mapping[str, Any] | None
) -> Iterator[str]:
    """Region ids in a task's annotations and drafts and in an interactive
    context (untrusted input: anything malformed is skipped)."""
    lists: list[Any] = [task.get(key) for key in ANNOTATION_KEYS]
    if isinstance(context, Mapping):
        lists.append([{"result": context.get("result")}])
    for items in lists:
        if not isinstance(items, list):
            continue
        for item in items:
            results = item.get("result") if isinstance(item, Mapping) else None
            if not isinstance(results, list):
                continue
            for r in results:
                rid = r.get("id") if isinstance(r, Mapping) else None
                if isinstance(rid, str) and rid:
                    yield rid


def task_prediction(
    plan: Plan,
    images: Iterable[ImageResult],
    model_version: str,
    ids: RegionIds | None = None,
) -> TaskPrediction:
    """The prediction of one task from its image results (all of its images);
    region ids follow ``ids`` (see :class:`RegionIds`)."""
    ids = ids or RegionIds(seed=model_version)
    results: list[dict[str, Any]] = []
    errors: list[str] = []
    warnings: list[str] = []
    for image in images:
        if image.error:  # the image, or some of its calls: keep the others
            errors.append(f"image {image.id}: {image.error}")
        for call in image.calls:
            try:
                control = plan.control(call.key)
            except KeyError:
                warnings.append(
                    f"image {image.id}: result for unknown call {call.key!r}"
                )
                continue
            try:
                found, dropped = call_results(
                    control, call, image.width, image.height, id_seed=ids.seed
                )
            except (LabelStudioError, ValueError) as exc:
                errors.append(
                    f"image {image.id}, {control.tag} {control.control!r}: {exc}"
                )
                continue
            results.extend(found)
            warnings.extend(dropped)
    if errors and not results:
        return TaskPrediction(empty_prediction(model_version), errors, warnings)
    prediction = to_labelstudio_prediction(
        ids.settle(results), model_version=model_version
    )
    return TaskPrediction(prediction, errors, warnings)
