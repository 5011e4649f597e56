"""Ground-truth and prediction files -> :class:`ImagePair` s, keyed by image.

Each file is one of what rexlabel already reads (no new parsers here):

- a Label Studio JSON export (a JSON list of tasks, ``rexlabel export``): as
  ground truth each task's latest non-cancelled annotation, as predictions its
  latest prediction (``backend.bulk.convert.pick_results``), read back with
  ``converters.labelstudio.reader.from_labelstudio``;
- a COCO dataset (a JSON object), read with ``converters.coco.from_coco``;
- JSON lines: ``rexlabel prelabel``'s raw JSONL (``image``, ``width``,
  ``height``, ``calls[].predictions``) or upstream raw answers (parsed as
  ``rexlabel convert --raw`` does).

Images pair up by their reference (the task's image, ``file_name``, the line's
``image``), else by Label Studio task id. Bad input raises
:class:`EvaluateInputError` naming the file and the task, line or image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.bulk.convert import (
    TASK_ERRORS,
    ConvertError,
    ConvertStats,
    image_ref,
    image_size,
    iter_json_list,
    iter_jsonl,
    named_region,
    parse_raw_lines,
    pick_results,
    size_from_results,
)
from backend.bulk.writers import line_predictions
from backend.evaluate.pairs import ImagePair
from converters.coco import CocoError, from_coco
from converters.prediction import Prediction

GROUND_TRUTH, PREDICTIONS = "ground truth", "predictions"


class EvaluateInputError(ValueError):
    """A file cannot be evaluated; the message names the file and the part."""


@dataclass
class SideImage:
    """One image as one file gives it."""

    key: str
    where: str
    width: int
    height: int
    regions: list[Prediction]
    task_id: Any = None
    warnings: list[str] = field(default_factory=list)
    """What the reader passed over in this image (a choices result...)."""


@dataclass
class Side:
    """What one file gives: its images, and how many it passed over."""

    path: str
    images: list[SideImage] = field(default_factory=list)
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class Pairing:
    """The pairs to score and what did not pair up."""

    pairs: list[ImagePair]
    gt_skipped: int = 0
    pred_skipped: int = 0
    without_predictions: int = 0
    predictions_without_ground_truth: int = 0
    paired_by_task_id: int = 0
    """Images whose references differ on the two sides, paired by Label Studio
    task id: right for two exports of one project, wrong across projects, so
    each one is warned about."""
    warnings: list[str] = field(default_factory=list)


def _kind(path: Path) -> str:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return "jsonl"
    with open(path, encoding="utf-8") as handle:
        head = handle.read(4096).lstrip()
    if head.startswith("["):
        return "labelstudio"
    if head.startswith("{"):
        return "coco"
    raise EvaluateInputError(
        f"{path}: not a Label Studio export (JSON list), COCO (JSON object) "
        "or JSON lines (.jsonl)"
    )


def read_side(path: str | Path, role: str) -> Side:
    """Read one file as ``role`` (:data:`GROUND_TRUTH` or :data:`PREDICTIONS`)."""
    path = Path(path)
    side = Side(str(path))
    try:
        kind = _kind(path)
        if kind == "labelstudio":
            _read_labelstudio(path, role, side)
        elif kind == "coco":
            _read_coco(path, side)
        else:
            _read_jsonl(path, side)
    except EvaluateInputError:
        raise
    except (ConvertError, CocoError) as exc:
        message = str(exc)
        raise EvaluateInputError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EvaluateInputError(f"{path}: {exc}") from None
    return side


def _read_labelstudio(path: Path, role: str, side: Side) -> None:
    source = "annotations" if role == GROUND_TRUTH else "predictions"
    for n, task in enumerate(iter_json_list(path)):
        if not isinstance(task, Mapping):
            raise EvaluateInputError(f"{path}: item {n} is not a task object")
        where = f"task {task.get('id', n)}"
        try:
            results = pick_results(task, source)
            if results is None and role == GROUND_TRUTH:
                side.skipped += 1  # not annotated yet: nothing to compare with
                continue
            image = task_image(task, results or [], where)
        except TASK_ERRORS as exc:
            raise EvaluateInputError(
                f"{path}: {where}: {str(exc) or type(exc).__name__}"
            ) from None
        side.warnings.extend(f"{path}: {where}: {w}" for w in image.warnings)
        side.images.append(image)


def task_image(
    task: Mapping[str, Any],
    results: list[dict[str, Any]],
    where: str,
    *,
    local_size: bool = True,
) -> SideImage:
    """One Label Studio task's ``results`` (one annotation's or prediction's)
    as an image in pixels. The size comes from the results'
    ``original_width/height``, else (``local_size``) from the task's image
    when it is a readable local file, else it stays 0. Raises one of
    :data:`~backend.bulk.convert.TASK_ERRORS` on malformed results."""
    from converters.labelstudio.reader import from_labelstudio

    ref = image_ref(task, None)
    width, height = size_from_results(results)
    if not width and local_size:
        width, height = image_size(ref)
    parsed = from_labelstudio(results, width=width or None, height=height or None)
    regions = [named_region(p) for p in parsed.predictions]
    return SideImage(
        ref, where, width, height, regions, task.get("id"), list(parsed.warnings)
    )


def _read_coco(path: Path, side: Side) -> None:
    with open(path, encoding="utf-8") as handle:
        dataset = json.load(handle)
    if not isinstance(dataset, Mapping):
        raise EvaluateInputError(f"{path}: not a COCO dataset")
    for image in from_coco(dataset):
        where = f"image {image.id} ({image.file_name})"
        side.images.append(
            SideImage(
                image.file_name,
                where,
                image.width,
                image.height,
                [named_region(p) for p in image.predictions],
            )
        )


def _read_jsonl(path: Path, side: Side) -> None:
    upstream: list[dict[str, Any]] = []
    for line in iter_jsonl(path):
        where = f"line {line.get('__line__')}"
        if "calls" not in line:
            upstream.append(line)
            continue
        if line.get("error") or line.get("status") == "skipped":
            side.skipped += 1
            continue
        try:
            regions = [named_region(p) for p in line_predictions(line)]
            side.images.append(
                SideImage(
                    str(line["image"]),
                    where,
                    int(line.get("width") or 0),
                    int(line.get("height") or 0),
                    regions,
                    line.get("task_id"),
                )
            )
        except TASK_ERRORS as exc:
            raise EvaluateInputError(
                f"{path}: {where}: {str(exc) or type(exc).__name__}"
            ) from None
    if upstream:
        stats = ConvertStats()
        for image in parse_raw_lines(upstream, stats=stats):
            side.images.append(
                SideImage(
                    image.image,
                    image.where,
                    image.width,
                    image.height,
                    [named_region(p) for p in image.predictions],
                )
            )
        if stats.failures:
            raise EvaluateInputError(f"{path}: {stats.failures[0]}")
        side.skipped += stats.skipped
        side.warnings.extend(f"{path}: {w}" for w in stats.warnings)


def _index(side: Side) -> tuple[dict[str, SideImage], dict[Any, SideImage]]:
    by_key: dict[str, SideImage] = {}
    by_task: dict[Any, SideImage] = {}
    for image in side.images:
        if image.key in by_key:
            raise EvaluateInputError(
                f"{side.path}: {image.where}: image {image.key!r} also in "
                f"{by_key[image.key].where}"
            )
        by_key[image.key] = image
        if image.task_id is not None:
            by_task[image.task_id] = image
    return by_key, by_task


def pair_sides(gt: Side, pred: Side) -> Pairing:
    """Pair each ground-truth image with its predictions (none found: empty).
    Different sizes on the two sides are an error naming the task."""
    pred_by_key, pred_by_task = _index(pred)
    _index(gt)  # duplicate images are an error on either side
    pairing = Pairing(
        [], gt.skipped, pred.skipped, warnings=gt.warnings + pred.warnings
    )
    used: set[int] = set()
    for g in gt.images:
        p = pred_by_key.get(g.key)
        if p is None and g.task_id is not None:
            p = pred_by_task.get(g.task_id)
            if p is not None:
                pairing.paired_by_task_id += 1
                pairing.warnings.append(
                    f"{g.where}: {g.key!r} in {gt.path} paired with {p.key!r} in "
                    f"{pred.path} by task id {g.task_id!r} (the references differ)"
                )
        if p is None:
            pairing.without_predictions += 1
        else:
            used.add(id(p))
        pairing.pairs.append(pair_images(g, p, gt.path, pred.path))
    pairing.predictions_without_ground_truth = sum(
        id(p) not in used for p in pred.images
    )
    return pairing


def pair_images(
    g: SideImage, p: SideImage | None, gt_name: str, pred_name: str
) -> ImagePair:
    """``g`` 's ground truth with ``p`` 's regions (none when ``p`` is None).
    Different sizes on the two sides, or no size for an image with regions,
    are an error naming the image and where each side came from."""
    width, height = g.width, g.height
    regions: list[Prediction] = []
    if p is not None:
        regions = p.regions
        if width and p.width and (width, height) != (p.width, p.height):
            raise EvaluateInputError(
                f"{g.where} ({g.key}): image size {width}x{height} in "
                f"{gt_name} but {p.width}x{p.height} in {pred_name} ({p.where})"
            )
        width, height = width or p.width, height or p.height
    if not (width and height) and (g.regions or regions):
        raise EvaluateInputError(
            f"{gt_name}: {g.where} ({g.key}): image size unknown "
            "(no original_width/height, image not readable)"
        )
    return ImagePair(g.key, width, height, g.regions, regions)


def load_pairs(gt_path: str | Path, pred_path: str | Path) -> Pairing:
    """Read both files and pair their images."""
    return pair_sides(
        read_side(gt_path, GROUND_TRUTH), read_side(pred_path, PREDICTIONS)
    )
