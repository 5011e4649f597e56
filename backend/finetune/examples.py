"""A submitted annotation -> training examples in Rex-Omni's own grammar.

Every control the planner serves on the image gives the example of its call
(:func:`build_examples`): the prompt is built by ``converters.prompts.
build_prompt`` from the call's task, categories and keypoint type, exactly as
the worker builds it (``worker.pipeline.call_prompt``), and the answer is
written by ``converters.answer.format_answer`` from the annotator's regions
(:mod:`backend.finetune.regions`).

- ``detection``/``pointing`` (and the GUI tasks): the prompt asks every
  phrase the call asks; a phrase with no region answers ``None``, as upstream
  trains absent categories. A label asked under several ``predicted_values``
  aliases is answered under its first alias; when it has regions its other
  aliases are left out of the prompt (which of them the regions are is
  unknown, and ``None`` would be wrong for it).
- ``visual_prompting``: for each phrase with boxes in a detection answer, one
  example whose reference boxes are a seeded subset of those boxes (1 to
  :data:`MAX_REFERENCE_BOXES`) and whose answer is all of them, under
  upstream's phrase ``object_1``.
- ``keypoint`` and OCR: only when the image holds an instance or a text
  region (upstream trains no empty keypoint or OCR answer).

Coordinates: the answer's bins are fractions of the *original* image's width
and height (``converters.geometry``); the ``smart_resize`` the vision encoder
applies never enters them, so an example needs the original size only, and
``parse_output(answer, task, width, height)`` reads the regions back.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from backend.finetune.regions import ControlRegions, phrase_by_label, read_regions
from backend.planner import ControlPlan, Plan
from converters.answer import format_answer
from converters.prediction import Prediction, RegionType, predictions_from_dicts
from converters.prompts import VISUAL_PROMPT_KEY, build_prompt
from converters.tasks import Task

MAX_REFERENCE_BOXES = 3
"""Most reference boxes in one visual-prompting example: a person marks one
to a few examples of what they want found, never all of them."""


@dataclass(frozen=True)
class Example:
    """One supervised example, as plain data (no image pixels).

    Attributes:
        task: the Rex-Omni task asked.
        categories: the phrases the prompt asks, in prompt order (keypoint:
            instance categories; OCR: the granularity; visual prompting: none).
        prompt: the user's question, byte for byte what inference sends.
        answer: the assistant's answer in Rex-Omni's grammar, without the
            final ``<|im_end|>`` (the chat template adds it).
        image: the image reference, as the task's data holds it.
        width, height: the original image's size in pixels (as Label Studio
            shows it, EXIF applied): what the answer's bins are fractions of.
        regions: what the answer holds, pixels of the original image, labelled
            with the answer's phrases (OCR: the granularity, text in ``text``).
        control: the control tag the example comes from.
        task_id: the Label Studio task, when known.
        keypoint_type: ``keypoint`` only: the keypoint set asked.
        visual_prompt_boxes: ``visual_prompting`` only: the reference boxes,
            xyxy pixels of the original image.
        labels: the Label Studio labels of the regions, in first-seen order
            (``Vehicle`` for regions answered as its alias ``car``; a
            visual-prompting example's boxes are ``object_1`` in the answer
            but keep their label here): what ``--focus`` selects on.
    """

    task: Task
    categories: tuple[str, ...]
    prompt: str
    answer: str
    image: str
    width: int
    height: int
    regions: tuple[Prediction, ...]
    control: str
    task_id: int | None = None
    keypoint_type: str | None = None
    visual_prompt_boxes: tuple[tuple[float, float, float, float], ...] = ()
    labels: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (``task`` as its value, regions as ``Prediction.to_dict``)."""
        return {
            "task": self.task.value,
            "categories": list(self.categories),
            "prompt": self.prompt,
            "answer": self.answer,
            "image": self.image,
            "width": self.width,
            "height": self.height,
            "regions": [r.to_dict() for r in self.regions],
            "control": self.control,
            "task_id": self.task_id,
            "keypoint_type": self.keypoint_type,
            "visual_prompt_boxes": [list(b) for b in self.visual_prompt_boxes],
            "labels": list(self.labels),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Example:
        """Inverse of :meth:`to_dict`."""
        return cls(
            task=Task.from_value(data["task"]),
            categories=tuple(data["categories"]),
            prompt=data["prompt"],
            answer=data["answer"],
            image=data["image"],
            width=int(data["width"]),
            height=int(data["height"]),
            regions=tuple(predictions_from_dicts(data["regions"])),
            control=data["control"],
            task_id=data.get("task_id"),
            keypoint_type=data.get("keypoint_type"),
            visual_prompt_boxes=tuple(
                tuple(b) for b in data.get("visual_prompt_boxes") or ()
            ),
            labels=tuple(data.get("labels") or ()),
        )


@dataclass
class BuiltExamples:
    """The examples of one image, the regions left out and why."""

    examples: list[Example] = field(default_factory=list)
    dropped: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Image:
    ref: str
    width: int
    height: int
    task_id: int | None
    where: str


def build_examples(
    plan: Plan,
    results: Sequence[Mapping[str, Any]],
    *,
    to_name: str,
    image: str,
    width: int,
    height: int,
    task_id: int | None = None,
    visual_prompts: bool = True,
    seed: int = 0,
) -> BuiltExamples:
    """The examples one annotation gives for the ``<Image>`` ``to_name``.

    Args:
        plan: the label config's plan (``backend.planner.plan_config``).
        results: the annotation's results (those on other images are ignored).
        image: the image's reference (the task data's value).
        width, height: the original image's size in pixels.
        task_id: the Label Studio task, named in warnings and examples.
        visual_prompts: also build ``visual_prompting`` examples from
            detection boxes.
        seed: picks the reference boxes of visual-prompting examples (the
            same seed, task and boxes give the same examples).
    """
    where = f"task {task_id}" if task_id is not None else f"image {image!r}"
    info = _Image(image, int(width), int(height), task_id, where)
    own = [r for r in results if r.get("to_name") in (None, to_name)]
    built = BuiltExamples()
    for control in plan.controls:
        if control.to_name != to_name:
            continue
        regions = read_regions(plan, control, own, width, height, where)
        built.examples.extend(
            _control_examples(control, regions, info, visual_prompts, seed)
        )
        built.dropped += regions.dropped
        built.warnings.extend(regions.warnings)
    return built


def _control_examples(
    control: ControlPlan,
    found: ControlRegions,
    info: _Image,
    visual_prompts: bool,
    seed: int,
) -> list[Example]:
    call = control.call
    task = call.task
    regions = found.regions
    if found.unreadable:
        found.warnings.append(
            f"{info.where}: {found.unreadable} region(s) of {control.control!r} "
            "could not be read, so what the image holds is unknown; no "
            f"{task.value} example"
        )
        return []
    if task is Task.KEYPOINT or task.is_ocr:
        if not regions:
            return []
        categories = list(call.categories or [])
    else:
        categories = _asked(control, regions)
    try:
        answer = format_answer(
            task, regions, info.width, info.height, categories=categories
        )
    except ValueError as exc:
        found.warnings.append(f"{info.where}: {control.control!r}: {exc}; skipped")
        return []
    examples = [
        Example(
            task=task,
            categories=tuple(categories),
            prompt=build_prompt(task, categories, keypoint_type=call.keypoint_type),
            answer=answer,
            image=info.ref,
            width=info.width,
            height=info.height,
            regions=tuple(regions),
            control=control.control,
            task_id=info.task_id,
            keypoint_type=call.keypoint_type if task is Task.KEYPOINT else None,
            labels=tuple(
                dict.fromkeys(_label_of_phrase(control, r.label) for r in regions)
            ),
        )
    ]
    if visual_prompts and task is Task.DETECTION:
        examples.extend(_visual_prompt_examples(control, regions, info, seed))
    return examples


def _asked(control: ControlPlan, regions: list[Prediction]) -> list[str]:
    """The call's phrases less the other aliases of labels that have regions
    (those regions are written under the label's first phrase)."""
    first = phrase_by_label(control.label_map)
    present = {r.label for r in regions}
    labels = control.label_map.phrases
    return [
        phrase
        for phrase in control.call.categories or []
        if phrase in present
        or labels.get(phrase) not in first
        or first[labels[phrase]] not in present
    ]


def _label_of_phrase(control: ControlPlan, phrase: str) -> str:
    """The Label Studio label a region answered as ``phrase`` carries (the
    phrase itself where the control maps none, e.g. OCR's granularity)."""
    return control.label_map.phrases.get(phrase, phrase)


def _visual_prompt_examples(
    control: ControlPlan, regions: list[Prediction], info: _Image, seed: int
) -> list[Example]:
    by_phrase: dict[str, list[Prediction]] = {}
    for region in regions:
        by_phrase.setdefault(region.label, []).append(region)
    examples = []
    for phrase, boxes in by_phrase.items():
        rng = random.Random(
            f"{seed}:{info.task_id}:{info.ref}:{control.control}:{phrase}"
        )
        count = rng.randint(1, min(MAX_REFERENCE_BOXES, len(boxes)))
        references = [b.coords for b in rng.sample(boxes, count)]
        answers = [
            Prediction(RegionType.BOX, VISUAL_PROMPT_KEY, b.coords) for b in boxes
        ]
        examples.append(
            Example(
                task=Task.VISUAL_PROMPTING,
                categories=(),
                prompt=build_prompt(
                    Task.VISUAL_PROMPTING,
                    None,
                    visual_prompt_boxes=references,
                    image_size=(info.width, info.height),
                ),
                answer=format_answer(
                    Task.VISUAL_PROMPTING, answers, info.width, info.height
                ),
                image=info.ref,
                width=info.width,
                height=info.height,
                regions=tuple(answers),
                control=control.control,
                task_id=info.task_id,
                visual_prompt_boxes=tuple(tuple(b) for b in references),
                labels=(_label_of_phrase(control, phrase),),
            )
        )
    return examples
