"""Label Studio tasks -> annotated images -> examples, with what was skipped.

A task gives its latest submitted (non-cancelled) annotation, as ``rexlabel
evaluate`` and ``rexlabel export`` pick it (``backend.bulk.convert.
pick_results``). A submitted annotation counts as complete: a phrase it has no
region of is absent from the image. Skipped and counted, never guessed:

- a task without a submitted annotation (``skipped_no_annotation``);
- an image the task has no reference for, whose size is unknown (no region
  says it and it cannot be read), or that cannot be loaded
  (``skipped_no_image``);
- a task that is not a JSON object or whose results are malformed
  (``failed``, with the reason).

Tasks stream through one at a time; nothing here holds more than one task.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.bulk.convert import TASK_ERRORS, pick_results, size_from_results
from backend.finetune.examples import BuiltExamples, Example, build_examples
from backend.planner import Plan, shown, task_id_of

WARNINGS_KEPT = 50
"""Warnings listed word for word; the count goes on past this (a project
with a systematic problem would otherwise repeat one line per task)."""


@dataclass
class ExampleStats:
    """What a pass over a project's tasks used and what it passed over."""

    tasks: int = 0
    images: int = 0
    """Annotated images that were read (whether or not they gave examples)."""
    skipped_no_annotation: int = 0
    skipped_no_image: int = 0
    failed: int = 0
    regions_dropped: int = 0
    examples: Counter = field(default_factory=Counter)
    """Examples by task value (``detection``, ``visual_prompting``, ...)."""
    warnings: list[str] = field(default_factory=list)
    warning_count: int = 0

    def warn(self, message: str) -> None:
        self.warning_count += 1
        if len(self.warnings) < WARNINGS_KEPT:
            self.warnings.append(message)

    def add(self, built: BuiltExamples) -> None:
        self.images += 1
        self.regions_dropped += built.dropped
        for warning in built.warnings:
            self.warn(warning)
        self.examples.update(e.task.value for e in built.examples)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.tasks,
            "images": self.images,
            "skipped_no_annotation": self.skipped_no_annotation,
            "skipped_no_image": self.skipped_no_image,
            "failed": self.failed,
            "regions_dropped": self.regions_dropped,
            "examples": dict(sorted(self.examples.items())),
            "warning_count": self.warning_count,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class AnnotatedImage:
    """One image of a task with a submitted annotation.

    Attributes:
        task_id: the task's id (None when it has none).
        to_name: the ``<Image>`` tag's name.
        ref: the image reference in the task's data.
        results: the annotation's results on this image.
        size: ``(width, height)`` the results give (Label Studio's
            ``original_width/height``), None when no result says.
    """

    task_id: int | None
    to_name: str
    ref: str
    results: list[dict[str, Any]]
    size: tuple[int, int] | None


def annotated_images(
    tasks: Iterable[Any], plan: Plan, stats: ExampleStats
) -> Iterator[AnnotatedImage]:
    """The images of ``tasks`` (Label Studio task objects) that have a
    submitted annotation, one at a time; ``stats`` counts the rest."""
    for n, task in enumerate(tasks):
        stats.tasks += 1
        if not isinstance(task, Mapping):
            stats.failed += 1
            stats.warn(f"item {n}: not a task object ({shown(task)}); skipped")
            continue
        task_id = task_id_of(task)
        try:
            results = pick_results(task, "annotations")
        except TASK_ERRORS as exc:
            stats.failed += 1
            stats.warn(f"task {task_id}: unreadable annotations ({exc}); skipped")
            continue
        if results is None:
            stats.skipped_no_annotation += 1
            continue
        data = task.get("data")
        data = data if isinstance(data, Mapping) else {}
        for to_name, key in plan.images.items():
            ref = data.get(key)
            if not isinstance(ref, str) or not ref.strip():
                stats.skipped_no_image += 1
                stats.warn(f"task {task_id}: no image under data[{key!r}]; skipped")
                continue
            mine = [
                r
                for r in results
                if isinstance(r, Mapping) and r.get("to_name") in (None, to_name)
            ]
            width, height = size_from_results(mine)
            yield AnnotatedImage(
                task_id, to_name, ref, mine, (width, height) if width else None
            )


SizeOf = Callable[[AnnotatedImage], tuple[int, int] | None]
"""Reads an image's ``(width, height)`` when its results do not say (None when
it cannot be read)."""


def iter_examples(
    tasks: Iterable[Any],
    plan: Plan,
    stats: ExampleStats,
    *,
    size_of: SizeOf | None = None,
    visual_prompts: bool = True,
    seed: int = 0,
) -> Iterator[Example]:
    """Every example of ``tasks``, one image at a time (see
    :func:`~backend.finetune.examples.build_examples`); ``stats`` counts
    examples, drops and skips as they stream."""
    for image in annotated_images(tasks, plan, stats):
        size = image.size or (size_of(image) if size_of is not None else None)
        if not size:
            stats.skipped_no_image += 1
            stats.warn(
                f"task {image.task_id}: the size of {image.ref!r} is unknown "
                "(no region gives it and the image cannot be read); skipped"
            )
            continue
        built = image_examples(
            image, plan, stats, size, visual_prompts=visual_prompts, seed=seed
        )
        if built is not None:
            yield from built.examples


def image_examples(
    image: AnnotatedImage,
    plan: Plan,
    stats: ExampleStats,
    size: tuple[int, int],
    *,
    visual_prompts: bool = True,
    seed: int = 0,
) -> BuiltExamples | None:
    """:func:`~backend.finetune.examples.build_examples` for one annotated
    image of ``size`` (width, height), added to ``stats``; None (counted as
    failed, with the reason) when its results are malformed."""
    try:
        built = build_examples(
            plan,
            image.results,
            to_name=image.to_name,
            image=image.ref,
            width=size[0],
            height=size[1],
            task_id=image.task_id,
            visual_prompts=visual_prompts,
            seed=seed,
        )
    except TASK_ERRORS as exc:
        stats.failed += 1
        stats.warn(f"task {image.task_id}: malformed results ({exc}); skipped")
        return None
    stats.add(built)
    return built
