"""Files made elsewhere -> COCO (or Label Studio tasks), streaming.

- A Label Studio JSON export (``rexlabel export`` downloads one; the UI's
  "JSON" export is the same): each task's annotation or prediction results are
  read back with ``converters.from_labelstudio`` and written with
  :class:`~backend.bulk.writers.CocoStreamWriter`, so masks (brush RLE -> COCO
  RLE), per-instance keypoints, OCR text and scores survive, which Label
  Studio's own COCO export drops.
- Raw Rex-Omni outputs (one JSON object a line, e.g. upstream's evaluation
  output ``{"image_path", "raw_response", "task_name", "categories"}``): parsed
  with ``converters.parser.parse_output`` into COCO or Label Studio tasks with
  predictions.

Tasks are read one at a time (``ijson``), so exports of any size convert in
flat memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from backend.bulk.writers import CocoStreamWriter
from converters.parser import DEFAULT_OCR_LABEL
from converters.prediction import Prediction
from converters.tags import LABELS_TAG, REGION_TAGS, Geometry
from converters.tasks import Task

SOURCES = ("annotations", "predictions")
"""What a Label Studio task contributes: its annotations or its predictions."""
RAW_TEXT_KEYS = ("raw_response", "raw_text", "response", "answer", "output", "text")
"""Keys a raw-output line may hold the model's answer under (first present wins)."""
IMAGE_KEYS = ("image_path", "image", "file_name", "path", "url")
"""Keys a raw-output line may name its image under."""
UPSTREAM_TASK_NAMES = (
    ("keypoint", "keypoint"),
    ("visual_prompt", "visual_prompting"),
    ("pointing", "pointing"),
    ("gui", None),  # grounding or pointing: typed by the token count
    ("recog", "ocr_polygon"),
    ("polygon", "ocr_polygon"),
    ("detection", "detection"),
)
"""Substrings of upstream evaluation task names -> our task (first match wins)."""
UNLABELLED_CATEGORY = "region"
"""COCO category of a region without a label or text (a plain ``Rectangle``):
COCO tools need a name, and an empty one reads as a missing category."""

REGION_CONTROLS = frozenset(
    {
        t.tag
        for t in REGION_TAGS.values()
        if t.labelled and t.geometry is not Geometry.KEYPOINT
    }
    | {LABELS_TAG}
)
"""Control tags whose labels become COCO categories (keypoint labels are joints)."""
CATEGORY_TASKS = (Task.OCR_BOX.value, Task.OCR_POLYGON.value, Task.KEYPOINT.value)
"""Tasks of a raw line whose first category is the parser's ``category`` (OCR
granularity, keypoint instance); the others name their categories in the answer."""
TASK_ERRORS = (
    ValueError,  # ConvertError, MaskError, bad numbers
    ArithmeticError,  # a size too large for int() or the arithmetic
    TypeError,
    KeyError,
    AttributeError,  # a task or result of the wrong JSON type
    OSError,
    Image.DecompressionBombError,
)
"""What one task (or raw line) can raise from its own data: it fails alone and is
reported; the file itself being unreadable stays fatal (ConvertError)."""
FAILURES_KEPT = 50
"""Failures listed by name (the count goes on past this)."""


class ConvertError(ValueError):
    """An input line or task cannot be converted; names the line or the task."""


@dataclass
class ConvertStats:
    """What a conversion wrote and what it passed over."""

    images: int = 0
    annotations: int = 0
    skipped: int = 0
    failed: int = 0
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def warn(self, message: str, limit: int = 50) -> None:
        if len(self.warnings) < limit:
            self.warnings.append(message)

    @contextmanager
    def each(self, where: str) -> Iterator[None]:
        """Run one task's conversion: a :data:`TASK_ERRORS` error counts it as
        failed (``where`` and the reason in ``failures``) and the run goes on."""
        try:
            yield
        except TASK_ERRORS as exc:
            self.failed += 1
            if len(self.failures) < FAILURES_KEPT:
                self.failures.append(f"{where}: {str(exc) or type(exc).__name__}")


def iter_json_list(path: str | Path) -> Iterator[dict[str, Any]]:
    """The items of a JSON array file (a Label Studio export), one at a time.
    A ``.jsonl`` file is read line by line."""
    path = Path(path)
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        yield from iter_jsonl(path)
        return
    import ijson

    with open(path, "rb") as handle:
        try:
            yield from ijson.items(handle, "item", use_float=True)
        except ijson.JSONError as exc:
            raise ConvertError(f"{path}: not a JSON list of tasks ({exc})") from None


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise ConvertError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(item, dict):
                raise ConvertError(f"{path}:{number}: expected a JSON object")
            item.setdefault("__line__", number)
            yield item


def config_categories(label_config: str) -> list[str]:
    """Labels of the config's region controls, in config order."""
    from backend.planner import parse_config

    interface = parse_config(label_config)
    names: list[str] = []
    for control in interface.controls:
        if control.tag in REGION_CONTROLS:
            for label in control.labels or []:
                if label not in names:
                    names.append(label)
    return names


def config_image_key(label_config: str) -> str | None:
    """The task data key of the config's first ``<Image>``."""
    from backend.planner import parse_config

    interface = parse_config(label_config)
    for obj in interface.objects:
        if obj.tag == "Image":
            return str(obj.value).lstrip("$")
    return None


def image_ref(task: Mapping[str, Any], image_key: str | None) -> str:
    data = task.get("data") or {}
    if image_key and isinstance(data.get(image_key), str):
        return data[image_key]
    if isinstance(data.get("image"), str):
        return data["image"]
    for value in data.values():
        if isinstance(value, str):
            return value
    return f"task-{task.get('id')}"


def _latest(items: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    chosen = None
    for item in items:
        key = (
            str(item.get("updated_at") or item.get("created_at") or ""),
            item.get("id") or 0,
        )
        if chosen is None or key >= chosen[0]:
            chosen = (key, item)
    return chosen[1] if chosen else None


def pick_results(
    task: Mapping[str, Any], source: str, model_version: str | None = None
) -> list[dict[str, Any]] | None:
    """The results to convert for one task: its latest non-cancelled annotation,
    or its latest prediction (of ``model_version`` when given); None if none."""
    if source == "annotations":
        kept = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    elif source == "predictions":
        kept = [
            p
            for p in task.get("predictions") or []
            if isinstance(p, Mapping)
            and (model_version is None or p.get("model_version") == model_version)
        ]
    else:
        raise ConvertError(
            f"source must be one of {', '.join(SOURCES)}, got {source!r}"
        )
    chosen = _latest(kept)
    return list(chosen.get("result") or []) if chosen is not None else None


def size_from_results(results: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
    for r in results:
        if r.get("original_width") and r.get("original_height"):
            return int(r["original_width"]), int(r["original_height"])
    return 0, 0


def image_size(ref: str) -> tuple[int, int]:
    """Width and height of a local image as Label Studio shows it (EXIF applied);
    ``(0, 0)`` when it is not a readable local file."""
    from PIL import Image, UnidentifiedImageError

    path = ref[len("file://") :] if ref.startswith("file://") else ref
    if not os.path.isfile(path):
        return 0, 0
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError):
        return 0, 0
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def labelstudio_to_coco(
    tasks: Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    source: str = "annotations",
    model_version: str | None = None,
    categories: Iterable[str] = (),
    image_key: str | None = None,
) -> ConvertStats:
    """COCO from Label Studio tasks (export JSON): one image per task.

    Tasks without a result of the chosen ``source`` become images without
    annotations. Results rexlabel cannot read (choices, whole-image text) are
    skipped and reported in ``warnings`` (so is a malformed brush region). A
    task that cannot be converted (a bomb-sized image, malformed JSON) fails
    alone: it is named in ``failures`` and the other tasks are written.
    """
    stats = ConvertStats()
    with _coco_file(out, stats, f"Label Studio {source}", categories) as writer:
        for task in tasks:
            task_id = task.get("id") if isinstance(task, Mapping) else None
            with stats.each(f"task {task_id}"):
                _add_task(writer, task, source, model_version, image_key, stats)
    return stats


@contextmanager
def _coco_file(
    out: str | Path, stats: ConvertStats, description: str, categories: Iterable[str]
) -> Iterator[CocoStreamWriter]:
    """A COCO writer for ``out``: closed (and its annotations counted in
    ``stats``) when the body ends, aborted (no file) when it raises."""
    writer = CocoStreamWriter(out, list(categories), info={"description": description})
    try:
        yield writer
        stats.annotations = writer.annotation_count
    except BaseException:
        writer.abort()
        raise
    writer.close()


def _add_task(
    writer: CocoStreamWriter,
    task: Mapping[str, Any],
    source: str,
    model_version: str | None,
    image_key: str | None,
    stats: ConvertStats,
) -> None:
    """One Label Studio task as one COCO image with its annotations."""
    from converters.labelstudio.reader import from_labelstudio

    results = pick_results(task, source, model_version) or []
    ref = image_ref(task, image_key)
    width, height = size_from_results(results)
    if not width:
        width, height = image_size(ref)
    parsed = from_labelstudio(results, width=width or None, height=height or None)
    for warning in parsed.warnings:
        stats.warn(f"task {task.get('id')}: {warning}")
    predictions = [named_region(p) for p in parsed.predictions]
    writer.add(ref, width, height, predictions, task_id=task.get("id"))
    stats.images += 1


def named_region(p: Prediction) -> Prediction:
    """A region without a label (a plain ``Rectangle``/``Polygon``) named for
    its COCO category: OCR text regions ``text``, as the parser names OCR
    answers, others ``UNLABELLED_CATEGORY`` -- never a category called ``""``."""
    if p.label:
        return p
    label = DEFAULT_OCR_LABEL if p.text is not None else UNLABELLED_CATEGORY
    return dataclasses.replace(p, label=label)


# Raw model outputs -------------------------------------------------------------------


def _raw_task(line: Mapping[str, Any]) -> str | None:
    if line.get("task"):
        return Task.from_value(line["task"]).value
    name = str(line.get("task_name") or "").lower()
    for key, task in UPSTREAM_TASK_NAMES:
        if key in name:
            return task
    return None


def _raw_categories(line: Mapping[str, Any]) -> list[str]:
    value = line.get("categories") or []
    if isinstance(value, str):
        return [c.strip() for c in value.split(",") if c.strip()]
    return [str(c) for c in value]


@dataclass
class RawImage:
    """One parsed raw-output line."""

    image: str
    width: int
    height: int
    task: str | None
    predictions: list[Prediction]
    where: str = ""
    """How failures name the line (``line 7``)."""


def parse_raw_lines(
    lines: Iterable[Mapping[str, Any]],
    *,
    image_root: str | Path | None = None,
    stats: ConvertStats | None = None,
) -> Iterator[RawImage]:
    """Raw Rex-Omni answers -> canonical predictions, line by line.

    A line needs its image (``image_path``/``image``...), the answer
    (``raw_response``/``raw_text``...), and the image size (``width``/``height``,
    else read from the image file). The task comes from ``task`` or upstream's
    ``task_name``; None types items by their token count. A line that cannot
    be read fails alone (``stats.failures``).
    """
    stats = stats or ConvertStats()
    for line in lines:
        where = f"line {line.get('__line__', '?')}"
        image = None
        with stats.each(where):
            image = _raw_image(line, where, image_root, stats)
        if image is not None:
            yield image


def _raw_image(
    line: Mapping[str, Any],
    where: str,
    image_root: str | Path | None,
    stats: ConvertStats,
) -> RawImage | None:
    """One raw-output line parsed; None (counted as skipped) without a size."""
    from converters.parser import parse_output

    ref = next((line[k] for k in IMAGE_KEYS if isinstance(line.get(k), str)), None)
    text = next((line[k] for k in RAW_TEXT_KEYS if isinstance(line.get(k), str)), None)
    if ref is None or text is None:
        raise ConvertError(
            f"needs an image ({', '.join(IMAGE_KEYS)}) and the raw answer "
            f"({', '.join(RAW_TEXT_KEYS)})"
        )
    if image_root and not ref.startswith(("http://", "https://", "/", "file://")):
        ref = str(Path(image_root) / ref)
    width, height = int(line.get("width") or 0), int(line.get("height") or 0)
    if not (width and height):
        width, height = image_size(ref)
    if not (width and height):
        stats.skipped += 1
        stats.warn(f"{where}: size of {ref!r} unknown (no width/height, not readable)")
        return None
    task = _raw_task(line)
    categories = _raw_categories(line)
    category = categories[0] if categories and task in CATEGORY_TASKS else None
    parsed = parse_output(text, task, width, height, category=category)
    for warning in parsed.warnings:
        stats.warn(f"{where}: {warning}")
    return RawImage(ref, width, height, task, parsed.predictions, where)


def raw_to_coco(
    lines: Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    image_root: str | Path | None = None,
) -> ConvertStats:
    """COCO from raw Rex-Omni answers (categories in order of first appearance,
    the lines' ``categories`` first)."""
    stats = ConvertStats()
    with _coco_file(out, stats, "Rex-Omni raw outputs", ()) as writer:
        for image in parse_raw_lines(lines, image_root=image_root, stats=stats):
            with stats.each(image.where):
                writer.add(image.image, image.width, image.height, image.predictions)
                stats.images += 1
    return stats


def raw_to_labelstudio(
    lines: Iterable[Mapping[str, Any]],
    out: str | Path,
    *,
    image_root: str | Path | None = None,
    from_name: str = "label",
    keypoint_box_from_name: str | None = None,
    text_from_name: str | None = None,
    to_name: str = "image",
    data_key: str = "image",
    model_version: str = "rex-omni",
) -> ConvertStats:
    """Label Studio tasks with one prediction each (import them with the
    project's ``from_name``/``to_name``), written as a JSON list, streaming.
    ``keypoint_box_from_name``: a ``RectangleLabels`` tag receiving each
    keypoint instance's box, the ``parentID`` of its joints.
    ``text_from_name``: a per-region ``TextArea`` receiving OCR text under its
    region's id (as the backend writes it); None drops the text."""
    from converters.labelstudio.writer import (
        to_labelstudio,
        to_labelstudio_prediction,
    )

    stats = ConvertStats()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write("[")
            for image in parse_raw_lines(lines, image_root=image_root, stats=stats):
                task = None
                with stats.each(image.where):
                    results = to_labelstudio(
                        image.predictions,
                        from_name=from_name,
                        to_name=to_name,
                        width=image.width,
                        height=image.height,
                        keypoint_box_from_name=keypoint_box_from_name,
                        text_from_name=text_from_name,
                    )
                    prediction = to_labelstudio_prediction(
                        results, model_version=model_version
                    )
                    task = json.dumps(
                        {"data": {data_key: image.image}, "predictions": [prediction]},
                        ensure_ascii=False,
                    )
                if task is None:
                    continue
                handle.write(("," if stats.images else "") + "\n")
                handle.write(task)
                stats.images += 1
                stats.annotations += len(image.predictions)
            handle.write("\n]\n")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return stats
