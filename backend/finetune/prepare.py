"""A project's tasks -> a fine-tuning run's data directory
(``common.finetune_data``): examples split into train and held-out, replay,
and the images stored once at the size the model sees.

- Tasks are split by task id, never an image's examples across splits: a
  seeded hash orders the annotated tasks and the first ``val_split`` share
  (rounded up, at least one when there are two or more) is held out.
- With ``focus`` labels, a training example that holds none of them is
  replayed rather than learnt (:mod:`backend.finetune.replay`).
- Replay requests: detection questions on the project's images for the base
  model to answer before training; tasks without an annotation first.
- Each image is stored as ``smart_resize`` gives it (what the vision encoder
  sees), as a JPEG named by the hash of its pixels, so a project that repeats
  an image stores it once.

Nothing is downloaded twice: ``--resume`` reads the directory again.
"""

from __future__ import annotations

import hashlib
import io
import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from backend.bulk.convert import TASK_ERRORS, pick_results
from backend.finetune.examples import Example
from backend.finetune.replay import (
    DEFAULT_REPLAY_IMAGES_PER_EXAMPLE,
    replay_phrases,
    replay_request,
)
from backend.finetune.source import ExampleStats, annotated_images, image_examples
from backend.planner import Plan, task_id_of
from common.finetune_data import (
    IMAGE_FORMAT,
    IMAGE_QUALITY,
    IMAGE_SUFFIX,
    IMAGES_DIR_NAME,
    Record,
    write_manifest,
    write_split,
)
from common.images.errors import ImageLoadError
from converters.geometry import smart_resize
from converters.prediction import predictions_to_dicts

DEFAULT_VAL_SPLIT = 0.1
"""Share of annotated tasks held out to measure the run (never trained on)."""
VISUAL_PROMPT_SHARE = 0.25
"""Share of annotated images whose boxes also give visual-prompting examples
(picked by a seeded hash of the task): the project's boxes are mostly for
finding its phrases, and on the tiny model a visual-prompting example for
every image took half of each batch's new examples, leaving the new class
at IoU 0.0 after 300 steps where it reached 0.70 without them."""

LoadImage = Callable[[str, "int | None"], Image.Image]
"""Loads an image reference of a task (RGB, EXIF applied); raises
``ImageLoadError`` when it cannot."""


@dataclass(frozen=True)
class PrepareOptions:
    """What becomes data (defaults: named constants)."""

    val_split: float = DEFAULT_VAL_SPLIT
    focus: tuple[str, ...] = ()
    replay_phrases: tuple[str, ...] | None = None
    """None: COCO's categories less the project's phrases; empty: no
    self-labelled replay."""
    replay_images: int | None = None
    """How many images the base model labels for replay (None: one per
    training example)."""
    task_ids: frozenset[int] | None = None
    """Only these tasks (``--tasks``); None: every task."""
    seed: int = 0
    visual_prompt_share: float = VISUAL_PROMPT_SHARE

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_split < 1.0:
            raise ValueError(f"--val-split must be in [0, 1), got {self.val_split}")
        if not 0.0 <= self.visual_prompt_share <= 1.0:
            raise ValueError(
                f"--visual-prompts must be in [0, 1], got {self.visual_prompt_share}"
            )
        if self.replay_images is not None and self.replay_images < 0:
            raise ValueError(f"--replay-images must be >= 0, got {self.replay_images}")


@dataclass
class Prepared:
    """What :func:`prepare_data` wrote and passed over."""

    stats: ExampleStats = field(default_factory=ExampleStats)
    counts: dict[str, int] = field(default_factory=dict)
    tasks_not_selected: int = 0
    images_stored: int = 0
    train_tasks: list[int] = field(default_factory=list)
    val_tasks: list[int] = field(default_factory=list)
    annotation_ids: list[int] = field(default_factory=list)
    replay_phrases: list[str] = field(default_factory=list)

    def manifest(self) -> dict[str, Any]:
        ids = ",".join(str(i) for i in sorted(self.annotation_ids))
        return {
            "counts": dict(self.counts),
            "images_stored": self.images_stored,
            "tasks_not_selected": self.tasks_not_selected,
            "train_tasks": len(self.train_tasks),
            "val_tasks": sorted(self.val_tasks),
            "annotations": len(self.annotation_ids),
            "annotation_ids_sha256": hashlib.sha256(ids.encode()).hexdigest(),
            "replay_phrases": list(self.replay_phrases),
            **self.stats.to_dict(),
        }


class ImageStore:
    """Writes images under ``<data>/images`` at the model's size, once each."""

    def __init__(self, data: Path) -> None:
        self.data = Path(data)
        (self.data / IMAGES_DIR_NAME).mkdir(parents=True, exist_ok=True)
        self.written = 0

    def put(self, image: Image.Image) -> str:
        """The stored image's path, relative to the data directory."""
        height, width = smart_resize(image.height, image.width)
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, IMAGE_FORMAT, quality=IMAGE_QUALITY)
        body = buffer.getvalue()
        name = f"{IMAGES_DIR_NAME}/{hashlib.sha256(body).hexdigest()}{IMAGE_SUFFIX}"
        path = self.data / name
        if not path.exists():
            tmp = path.with_suffix(".partial")
            tmp.write_bytes(body)
            tmp.replace(path)
            self.written += 1
        return name


def record_of(example: Example, stored: str) -> Record:
    regions = predictions_to_dicts(example.regions)
    return Record(
        prompt=example.prompt,
        answer=example.answer,
        image=stored,
        task=example.task.value,
        width=example.width,
        height=example.height,
        categories=tuple(example.categories),
        regions=tuple(regions),
        labels=example.labels,
        task_id=example.task_id,
        source="annotation",
        keypoint_type=example.keypoint_type,
        visual_prompt_boxes=tuple(
            tuple(float(v) for v in box) for box in example.visual_prompt_boxes or ()
        ),
    )


def project_phrases(plan: Plan) -> list[str]:
    """Every phrase the plan's calls ask (labels and their aliases)."""
    phrases: dict[str, None] = {}
    for control in plan.controls:
        phrases.update(dict.fromkeys(control.call.categories or []))
        phrases.update(dict.fromkeys(control.label_map.phrases))
        phrases.update(dict.fromkeys(control.label_map.phrases.values()))
    return list(phrases)


def plan_labels(plan: Plan) -> list[str]:
    """Every Label Studio label the plan's controls answer with (what
    ``--focus`` may name)."""
    labels: dict[str, None] = {}
    for control in plan.controls:
        labels.update(dict.fromkeys(control.label_map.labels))
    return list(labels)


def held_out_tasks(task_ids: Iterable[int], share: float, seed: int) -> set[int]:
    """The tasks held out: ``ceil(share * n)`` of them (at least one when
    ``share`` > 0 and n >= 2, never all), in a seeded hash order."""
    ordered = sorted(
        set(task_ids), key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest()
    )
    if share <= 0 or len(ordered) < 2:
        return set()
    count = min(len(ordered) - 1, max(1, math.ceil(share * len(ordered))))
    return set(ordered[:count])


def prepare_data(
    tasks: Iterable[Any],
    plan: Plan,
    load_image: LoadImage,
    data: Path,
    options: PrepareOptions,
) -> Prepared:
    """Write ``data`` (a run's data directory) from ``tasks``; see the module."""
    prepared = Prepared()
    stats = prepared.stats
    store = ImageStore(data)
    by_task: dict[int, list[Record]] = {}
    unannotated: list[tuple[int | None, str]] = []
    stored_sizes: dict[str, tuple[int, int, int | None]] = {}
    for n, task in enumerate(tasks):
        task_id = task_id_of(task) if isinstance(task, Mapping) else None
        if options.task_ids is not None and task_id not in options.task_ids:
            prepared.tasks_not_selected += 1
            continue
        try:
            results = (
                pick_results(task, "annotations") if isinstance(task, Mapping) else []
            )
        except TASK_ERRORS:
            results = []  # annotated_images counts it as failed, with the reason
        if isinstance(task, Mapping) and results is None:
            stats.tasks += 1
            stats.skipped_no_annotation += 1
            _remember_unannotated(task, task_id, plan, unannotated)
            continue
        if isinstance(task, Mapping):
            prepared.annotation_ids.extend(_annotation_ids(task))
        for image in annotated_images([task], plan, stats):
            picture = _load(load_image, image.ref, image.task_id, stats)
            if picture is None:
                continue
            size = image.size or picture.size
            built = image_examples(
                image,
                plan,
                stats,
                size,
                visual_prompts=_picked(image.task_id, n, options),
                seed=options.seed,
            )
            if built is None or not built.examples:
                continue
            try:
                stored = store.put(picture)
            except ValueError as exc:  # smart_resize: an aspect ratio over 200
                stats.skipped_no_image += 1
                stats.warn(f"task {image.task_id}: {exc}; skipped")
                continue
            stored_sizes[stored] = (size[0], size[1], image.task_id)
            key = image.task_id if image.task_id is not None else -(n + 1)
            by_task.setdefault(key, []).extend(
                record_of(e, stored) for e in built.examples
            )
    val_tasks = held_out_tasks(by_task, options.val_split, options.seed)
    focus = {f.strip().lower() for f in options.focus}
    train, replay, val = [], [], []
    for task_id in sorted(by_task):
        for record in by_task[task_id]:
            if task_id in val_tasks:
                val.append(record)
            elif focus and not any(label.lower() in focus for label in record.labels):
                replay.append(record)
            else:
                train.append(record)
    prepared.val_tasks = sorted(t for t in val_tasks if t >= 0)
    prepared.train_tasks = sorted(t for t in by_task if t not in val_tasks and t >= 0)
    prepared.replay_phrases = replay_phrases(
        options.replay_phrases, project_phrases(plan)
    )
    requests = _replay_requests(
        prepared,
        options,
        len(train),
        unannotated,
        stored_sizes,
        val_tasks,
        load_image,
        store,
    )
    for split, records in (
        ("train", train),
        ("replay", replay),
        ("val", val),
        ("replay_requests", requests),
    ):
        prepared.counts[split] = write_split(data, split, records)
    prepared.images_stored = store.written
    write_manifest(data, prepared.manifest())
    return prepared


def _picked(task_id: int | None, n: int, options: PrepareOptions) -> bool:
    """Whether this task's boxes also give visual-prompting examples."""
    key = f"vp:{options.seed}:{task_id if task_id is not None else -n}".encode()
    fraction = int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF
    return fraction < options.visual_prompt_share


def _annotation_ids(task: Mapping[str, Any]) -> list[int]:
    return [
        a["id"]
        for a in task.get("annotations") or []
        if isinstance(a, Mapping)
        and isinstance(a.get("id"), int)
        and not a.get("was_cancelled")
    ]


def _remember_unannotated(
    task: Mapping[str, Any], task_id: int | None, plan: Plan, out: list
) -> None:
    data = task.get("data")
    if not isinstance(data, Mapping):
        return
    for key in plan.images.values():
        ref = data.get(key)
        if isinstance(ref, str) and ref.strip():
            out.append((task_id, ref))


def _load(load_image: LoadImage, ref: str, task_id: int | None, stats: ExampleStats):
    try:
        return load_image(ref, task_id)
    except (ImageLoadError, OSError, ValueError) as exc:
        stats.skipped_no_image += 1
        stats.warn(f"task {task_id}: {exc}; skipped")
        return None


def _replay_requests(
    prepared: Prepared,
    options: PrepareOptions,
    train_count: int,
    unannotated: list[tuple[int | None, str]],
    stored_sizes: dict[str, tuple[int, int, int | None]],
    val_tasks: set[int],
    load_image: LoadImage,
    store: ImageStore,
) -> list[Record]:
    """Questions for the base model, ``wanted`` of them plus a ``val_split``
    share held out. On the images of unannotated tasks when the project has
    any (each asked again with other phrases until there are enough: on the
    tiny model, replaying old phrases on the new class's own images kept the
    old classes at 0.46 of 0.80 where other images kept 0.74); on annotated
    training images only when it has none. Held-out images are never asked
    in a trained request."""
    phrases = prepared.replay_phrases
    wanted = (
        options.replay_images
        if options.replay_images is not None
        else round(train_count * DEFAULT_REPLAY_IMAGES_PER_EXAMPLE)
    )
    if not phrases or wanted <= 0:
        return []
    held = max(1, math.ceil(wanted * options.val_split)) if options.val_split > 0 else 0
    rng = random.Random(f"replay:{options.seed}")
    images: list[tuple[str, int, int, int | None]] = []
    for task_id, ref in unannotated:
        if len(images) >= wanted + held:
            break
        picture = _load(load_image, ref, task_id, prepared.stats)
        if picture is None:
            continue
        try:
            images.append((store.put(picture), picture.width, picture.height, task_id))
        except ValueError as exc:  # smart_resize: an aspect ratio over 200
            prepared.stats.warn(f"task {task_id}: {exc}; not used for replay")
    if not images:
        images = [
            (stored, width, height, task_id)
            for stored, (width, height, task_id) in stored_sizes.items()
            if task_id not in val_tasks
        ][: wanted + held]
    if not images:
        return []
    held = min(held, len(images) // 2)  # at least as many images left to train on
    spread = {int(i * len(images) / held) for i in range(held)} if held else set()
    held_images = [image for n, image in enumerate(images) if n in spread]
    train_images = [image for n, image in enumerate(images) if n not in spread]
    requests = [
        replay_request(stored, w, h, phrases, rng, task_id=task_id, held_out=True)
        for stored, w, h, task_id in held_images
    ]
    for n in range(wanted):
        stored, w, h, task_id = train_images[n % len(train_images)]
        requests.append(
            replay_request(stored, w, h, phrases, rng, task_id=task_id, held_out=False)
        )
    return requests
