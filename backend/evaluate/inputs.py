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
``image``), else by Label Studio task id. The predictions file is read whole
(:class:`PredictionIndex`); the ground truth streams past it one image at a
time, so only one side's regions and the ground-truth references are held.
Every pair's sizes and regions are checked (``backend.evaluate.bounds``) in
:func:`pair_images`, which every source goes through, before anything is
rasterised. Bad input raises :class:`EvaluateInputError` naming the file and
the task, line or image.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
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
from backend.evaluate.bounds import (
    GeometryError,
    check_coco,
    check_regions,
    check_size,
    dimension,
)
from backend.evaluate.pairs import ImagePair
from backend.planner import shown
from converters.coco import CocoError, from_coco
from converters.geometry import MAX_IMAGE_PIXELS
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
    """What one file gives: its images, and how many it passed over (counted
    as the images are read)."""

    path: str
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)


@dataclass
class Pairing:
    """What did not pair up, counted while :func:`iter_pairs` runs."""

    pairs: int = 0
    with_predictions: int = 0
    """Ground-truth images that found their predictions."""
    prediction_images: int = 0
    """Images the predictions side holds, paired or not."""
    gt_example: str | None = None
    pred_example: str | None = None
    """A reference of each side (the first), to show when nothing pairs."""
    gt_skipped: int = 0
    pred_skipped: int = 0
    without_predictions: int = 0
    predictions_without_ground_truth: int = 0
    paired_by_task_id: int = 0
    """Images whose references differ on the two sides, paired by Label Studio
    task id: right for two exports of one project, wrong across projects, so
    each one is warned about."""
    warnings: list[str] = field(default_factory=list)
    same_file: bool = False
    """Both sides from one Label Studio export (pairs are its tasks)."""

    def unpaired(self, gt_name: str, pred_name: str) -> str | None:
        """Why nothing can be scored, once the pairs are consumed: no
        ground-truth image, no predictions at all, or predictions of which not
        one paired with a ground-truth image (an example reference of each
        side, and how images pair); None when something paired."""
        if not self.pairs:
            return (
                f"{gt_name}: no ground-truth image to score ({self.gt_skipped} "
                "skipped without a non-cancelled annotation)"
            )
        if not self.prediction_images:
            return f"{pred_name}: no predictions in it (no image, no task predicted)"
        if self.with_predictions:
            return None
        if self.same_file:
            return f"{gt_name}: no task has both an annotation and a prediction"
        return (
            f"not one of the {self.prediction_images} images in {pred_name} pairs "
            f"with one of the {self.pairs} ground-truth images in {gt_name} "
            f"(e.g. {self.gt_example!r} in {gt_name}, {self.pred_example!r} in "
            f"{pred_name}). Images "
            "pair by equal references (a task's image as Label Studio stores it, "
            "such as /data/local-files/?d=..., a COCO file_name, a line's "
            "image), else by Label Studio task id (task_id in JSON lines): "
            "write both files with the same references"
        )


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


def iter_side(
    path: str | Path, role: str, side: Side, max_pixels: int = MAX_IMAGE_PIXELS
) -> Iterator[SideImage]:
    """The images of one file as ``role`` (:data:`GROUND_TRUTH` or
    :data:`PREDICTIONS`), one at a time; ``side`` counts what was skipped.
    ``max_pixels``: a COCO file's masks are decoded as it is read, so its
    image sizes are checked against it first."""
    path = Path(path)
    try:
        kind = _kind(path)
        if kind == "labelstudio":
            yield from _read_labelstudio(path, role, side)
        elif kind == "coco":
            yield from _read_coco(path, side, max_pixels)
        else:
            yield from _read_jsonl(path, side)
    except EvaluateInputError:
        raise
    except (ConvertError, CocoError) as exc:
        message = str(exc)
        raise EvaluateInputError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EvaluateInputError(f"{path}: {exc}") from None


def _read_labelstudio(path: Path, role: str, side: Side) -> Iterator[SideImage]:
    for n, task in enumerate(iter_json_list(path)):
        image = _task_image(path, n, task, role, side)
        if image is not None:
            yield image


def _task_image(
    path: Path, n: int, task: Any, role: str, side: Side
) -> SideImage | None:
    """One exported task as ``role`` sees it; None when it has nothing of
    that role: ground truth never annotated (counted as skipped), or no
    prediction at all (a prediction that found nothing is an empty image)."""
    if not isinstance(task, Mapping):
        raise EvaluateInputError(f"{path}: item {n} is not a task object")
    source = "annotations" if role == GROUND_TRUTH else "predictions"
    where = f"task {task.get('id', n)}"
    try:
        check_task(task, source)
        results = pick_results(task, source)
        if results is None:
            if role == GROUND_TRUTH:
                side.skipped += 1  # not annotated yet: nothing to compare with
            return None
        image = task_image(task, results, where)
    except TASK_ERRORS as exc:
        raise EvaluateInputError(f"{path}: {where}: {reason(exc)}") from None
    side.warnings.extend(f"{path}: {where}: {w}" for w in image.warnings)
    return image


def reason(exc: BaseException) -> str:
    """An error from reading a malformed task or line, for a message: a
    missing key says which field is missing (a bare KeyError says ``'image'``),
    a value of the wrong JSON type says so (not ``'str' object has no
    attribute 'get'``)."""
    if isinstance(exc, KeyError) and exc.args:
        return f"no {exc.args[0]!r} field"
    if isinstance(exc, (AttributeError, TypeError)):
        return f"a value of the wrong JSON type ({exc})"
    return str(exc) or type(exc).__name__


def _objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, Mapping) for v in value)


def check_task(task: Mapping[str, Any], source: str) -> None:
    """A task's ``data`` (an object) and its ``annotations`` or
    ``predictions`` (``source``): absent, or a list of objects each with a
    ``result`` list of objects, as ``pick_results`` reads them; else
    EvaluateInputError naming the field."""
    if not isinstance(task.get("data", {}), Mapping):
        raise EvaluateInputError(f"'data' must be an object, got {shown(task['data'])}")
    items = task.get(source)
    if items is None:
        return
    if not _objects(items):
        raise EvaluateInputError(
            f"{source!r} must be a list of {source[:-1]} objects, got {shown(items)}"
        )
    for item in items:
        if not _objects(item.get("result", [])):
            raise EvaluateInputError(
                f"{source[:-1]} {item.get('id')!r}: 'result' must be a list of "
                f"result objects, got {shown(item['result'])}"
            )


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


def _read_coco(path: Path, side: Side, max_pixels: int) -> Iterator[SideImage]:
    with open(path, encoding="utf-8") as handle:
        dataset = json.load(handle)
    if not isinstance(dataset, Mapping):
        raise EvaluateInputError(f"{path}: not a COCO dataset")
    try:
        check_coco(dataset, max_pixels)
    except GeometryError as exc:
        raise EvaluateInputError(f"{path}: {exc}") from None
    for image in from_coco(dataset):
        where = f"image {image.id} ({image.file_name})"
        yield SideImage(
            image.file_name,
            where,
            image.width,
            image.height,
            [named_region(p) for p in image.predictions],
        )


def _read_jsonl(path: Path, side: Side) -> Iterator[SideImage]:
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
            image = _line_image(line, where)
        except TASK_ERRORS as exc:
            raise EvaluateInputError(f"{path}: {where}: {reason(exc)}") from None
        yield image
    if upstream:
        stats = ConvertStats()
        for image in parse_raw_lines(upstream, stats=stats):
            yield SideImage(
                image.image,
                image.where,
                image.width,
                image.height,
                [named_region(p) for p in image.predictions],
            )
        if stats.failures:
            raise EvaluateInputError(f"{path}: {stats.failures[0]}")
        side.skipped += stats.skipped
        side.warnings.extend(f"{path}: {w}" for w in stats.warnings)


def _line_image(line: Mapping[str, Any], where: str) -> SideImage:
    """One ``rexlabel prelabel`` line (``image``, ``width``, ``height``,
    ``calls[].predictions``) as an image; ValueError naming the bad field."""
    if "image" not in line:
        raise ValueError("no 'image' field (the image's path or URL)")
    ref = line["image"]
    if not isinstance(ref, str) or not ref:
        raise ValueError(f"'image' must be the image's path or URL, got {shown(ref)}")
    calls = line["calls"]
    if not isinstance(calls, list) or not all(
        isinstance(c, Mapping) and isinstance(c.get("predictions") or [], list)
        for c in calls
    ):
        raise ValueError(
            "'calls' must be a list of objects with a 'predictions' list, "
            f"got {shown(calls)}"
        )
    return SideImage(
        ref,
        where,
        dimension(line.get("width"), "width"),
        dimension(line.get("height"), "height"),
        [named_region(p) for p in line_predictions(line)],
        line.get("task_id"),
    )


def _duplicate(
    side: Side, image: SideImage, first: SideImage | str
) -> EvaluateInputError:
    where = first if isinstance(first, str) else first.where
    return EvaluateInputError(
        f"{side.path}: {image.where}: image {image.key!r} also in {where}"
    )


class PredictionIndex:
    """The predictions file, read whole and indexed by image reference and by
    Label Studio task id: the side held in memory while the ground truth
    streams past it."""

    def __init__(self, side: Side, images: Iterable[SideImage]) -> None:
        self.side = side
        self.by_key: dict[str, SideImage] = {}
        self.by_task: dict[Any, SideImage] = {}
        for image in images:
            if image.key in self.by_key:
                raise _duplicate(side, image, self.by_key[image.key])
            self.by_key[image.key] = image
            if image.task_id is not None:
                self.by_task[image.task_id] = image
        self.used: set[int] = set()

    def find(self, g: SideImage) -> tuple[SideImage | None, bool]:
        """The predictions of ground-truth image ``g``, and whether they were
        found by task id (the references differ)."""
        p = self.by_key.get(g.key)
        if p is None and g.task_id is not None:
            p = self.by_task.get(g.task_id)
            return p, p is not None
        return p, False

    def unused(self) -> int:
        return sum(id(p) not in self.used for p in self.by_key.values())


def _paired(
    g: SideImage,
    p: SideImage | None,
    gt: Side,
    pred: Side,
    pairing: Pairing,
    max_pixels: int,
) -> ImagePair:
    """Ground-truth image ``g`` with its predictions ``p`` (None: none), checked
    and counted into ``pairing``."""
    pair = pair_images(g, p, gt.path, pred.path, max_pixels)
    pairing.without_predictions += p is None
    pairing.with_predictions += p is not None
    pairing.pairs += 1
    if pairing.gt_example is None:
        pairing.gt_example = g.key
    return pair


def _named(image: SideImage) -> str:
    """Where ``image`` is in its file, and its reference unless that says it."""
    return image.where if image.key in image.where else f"{image.where} ({image.key})"


def _refused(image: SideImage, name: str, exc: GeometryError) -> EvaluateInputError:
    """``exc`` about ``image`` of ``name`` (the file), naming both."""
    return EvaluateInputError(f"{name}: {_named(image)}: {exc}")


def pair_images(
    g: SideImage,
    p: SideImage | None,
    gt_name: str,
    pred_name: str,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> ImagePair:
    """``g`` 's ground truth with ``p`` 's regions (none when ``p`` is None).
    Different sizes on the two sides, or no size for an image with regions,
    are an error naming the image and where each side came from; so is a
    size over ``max_pixels`` or a region :mod:`backend.evaluate.bounds`
    refuses, naming the region. Every source pairs its images here."""
    sides = [(g, gt_name)] if p is None else [(g, gt_name), (p, pred_name)]
    for image, name in sides:
        try:
            check_size(image.width, image.height, max_pixels)
        except GeometryError as exc:
            raise _refused(image, name, exc) from None
    width, height = g.width, g.height
    regions: list[Prediction] = []
    if p is not None:
        regions = p.regions
        if width and p.width and (width, height) != (p.width, p.height):
            raise EvaluateInputError(
                f"{_named(g)}: image size {width}x{height} in "
                f"{gt_name} but {p.width}x{p.height} in {pred_name} ({p.where})"
            )
        width, height = width or p.width, height or p.height
    if not (width and height) and (g.regions or regions):
        raise EvaluateInputError(
            f"{gt_name}: {_named(g)}: image size unknown "
            "(no original_width/height, image not readable)"
        )
    for image, name in sides:
        try:
            check_regions(image.regions, width, height)
        except GeometryError as exc:
            raise _refused(image, name, exc) from None
    return ImagePair(g.key, width, height, g.regions, regions)


def iter_pairs(
    gt: Side,
    gt_images: Iterable[SideImage],
    predictions: PredictionIndex,
    pairing: Pairing,
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Iterator[ImagePair]:
    """Pair each ground-truth image with its predictions (none found: empty),
    counting into ``pairing`` as it goes. Different sizes on the two sides are
    an error naming the task; so is an image listed twice, and what
    :func:`pair_images` refuses."""
    pred = predictions.side
    pairing.prediction_images = len(predictions.by_key)
    pairing.pred_example = next(iter(predictions.by_key), None)
    seen: dict[str, str] = {}
    for g in gt_images:
        if g.key in seen:
            raise _duplicate(gt, g, seen[g.key])
        seen[g.key] = g.where
        p, by_task = predictions.find(g)
        if by_task:
            pairing.paired_by_task_id += 1
            pairing.warnings.append(
                f"{g.where}: {g.key!r} in {gt.path} paired with {p.key!r} in "
                f"{pred.path} by task id {g.task_id!r} (the references differ)"
            )
        if p is not None:
            predictions.used.add(id(p))
        yield _paired(g, p, gt, pred, pairing, max_pixels)
    pairing.gt_skipped = gt.skipped
    pairing.predictions_without_ground_truth = predictions.unused()
    pairing.warnings.extend(gt.warnings)


def iter_export_pairs(
    path: Path, pairing: Pairing, max_pixels: int = MAX_IMAGE_PIXELS
) -> Iterator[ImagePair]:
    """Both sides from one Label Studio export, task by task (each task holds
    its annotations and predictions): nothing is held between tasks."""
    gt, pred = Side(str(path)), Side(str(path))
    try:
        for n, task in enumerate(iter_json_list(path)):
            g = _task_image(path, n, task, GROUND_TRUTH, gt)
            p = _task_image(path, n, task, PREDICTIONS, pred)
            pairing.prediction_images += p is not None
            if p is not None and pairing.pred_example is None:
                pairing.pred_example = p.key
            if g is None:
                pairing.predictions_without_ground_truth += p is not None
                continue
            yield _paired(g, p, gt, pred, pairing, max_pixels)
    except (ConvertError, OSError, UnicodeDecodeError, ValueError) as exc:
        message = str(exc)
        raise EvaluateInputError(
            message if message.startswith(str(path)) else f"{path}: {message}"
        ) from None
    pairing.gt_skipped = gt.skipped
    pairing.warnings.extend(gt.warnings + pred.warnings)


def _same_export(gt_path: Path, pred_path: Path) -> bool:
    try:
        same = gt_path.samefile(pred_path)
    except OSError:
        return False  # a missing file is named when it is read
    return same and _kind(gt_path) == "labelstudio"


def load_pairs(
    gt_path: str | Path, pred_path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS
) -> tuple[Iterator[ImagePair], Pairing]:
    """The pairs (read lazily; errors raise while iterating) and the counts,
    complete once the pairs are consumed. One Label Studio export given as
    both files is read once, task by task; otherwise the predictions file is
    read whole and the ground truth streams past it. ``max_pixels``: the
    largest image size accepted (``REXLABEL_MAX_IMAGE_PIXELS``)."""
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    if _same_export(gt_path, pred_path):
        pairing = Pairing(same_file=True)
        return iter_export_pairs(gt_path, pairing, max_pixels), pairing
    pred = Side(str(pred_path))
    index = PredictionIndex(pred, iter_side(pred_path, PREDICTIONS, pred, max_pixels))
    pairing = Pairing(pred_skipped=pred.skipped, warnings=list(pred.warnings))
    gt = Side(str(gt_path))
    gt_images = iter_side(gt_path, GROUND_TRUTH, gt, max_pixels)
    return iter_pairs(gt, gt_images, index, pairing, max_pixels), pairing
