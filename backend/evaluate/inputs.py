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
Bad input raises :class:`EvaluateInputError` naming the file and the task,
line or image.
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


def iter_side(path: str | Path, role: str, side: Side) -> Iterator[SideImage]:
    """The images of one file as ``role`` (:data:`GROUND_TRUTH` or
    :data:`PREDICTIONS`), one at a time; ``side`` counts what was skipped."""
    path = Path(path)
    try:
        kind = _kind(path)
        if kind == "labelstudio":
            yield from _read_labelstudio(path, role, side)
        elif kind == "coco":
            yield from _read_coco(path, side)
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
    from converters.labelstudio.reader import from_labelstudio

    if not isinstance(task, Mapping):
        raise EvaluateInputError(f"{path}: item {n} is not a task object")
    source = "annotations" if role == GROUND_TRUTH else "predictions"
    where = f"task {task.get('id', n)}"
    try:
        results = pick_results(task, source)
        if results is None:
            if role == GROUND_TRUTH:
                side.skipped += 1  # not annotated yet: nothing to compare with
            return None
        ref = image_ref(task, None)
        width, height = size_from_results(results)
        if not width:
            width, height = image_size(ref)
        parsed = from_labelstudio(results, width=width or None, height=height or None)
    except TASK_ERRORS as exc:
        raise EvaluateInputError(
            f"{path}: {where}: {str(exc) or type(exc).__name__}"
        ) from None
    side.warnings.extend(f"{path}: {where}: {w}" for w in parsed.warnings)
    regions = [named_region(p) for p in parsed.predictions]
    return SideImage(ref, where, width, height, regions, task.get("id"))


def _read_coco(path: Path, side: Side) -> Iterator[SideImage]:
    with open(path, encoding="utf-8") as handle:
        dataset = json.load(handle)
    if not isinstance(dataset, Mapping):
        raise EvaluateInputError(f"{path}: not a COCO dataset")
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
            regions = [named_region(p) for p in line_predictions(line)]
            image = SideImage(
                str(line["image"]),
                where,
                int(line.get("width") or 0),
                int(line.get("height") or 0),
                regions,
                line.get("task_id"),
            )
        except TASK_ERRORS as exc:
            raise EvaluateInputError(
                f"{path}: {where}: {str(exc) or type(exc).__name__}"
            ) from None
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
    g: SideImage, p: SideImage | None, gt: Side, pred: Side, pairing: Pairing
) -> ImagePair:
    """Ground-truth image ``g`` with its predictions ``p`` (None: none), checked
    and counted into ``pairing``."""
    width, height = g.width, g.height
    if p is None:
        pairing.without_predictions += 1
        regions: list[Prediction] = []
    else:
        regions = p.regions
        if width and p.width and (width, height) != (p.width, p.height):
            raise EvaluateInputError(
                f"{g.where} ({g.key}): image size {width}x{height} in "
                f"{gt.path} but {p.width}x{p.height} in {pred.path} ({p.where})"
            )
        width, height = width or p.width, height or p.height
    if not (width and height) and (g.regions or regions):
        raise EvaluateInputError(
            f"{gt.path}: {g.where} ({g.key}): image size unknown "
            "(no original_width/height, image not readable)"
        )
    pairing.pairs += 1
    return ImagePair(g.key, width, height, g.regions, regions)


def iter_pairs(
    gt: Side,
    gt_images: Iterable[SideImage],
    predictions: PredictionIndex,
    pairing: Pairing,
) -> Iterator[ImagePair]:
    """Pair each ground-truth image with its predictions (none found: empty),
    counting into ``pairing`` as it goes. Different sizes on the two sides are
    an error naming the task; so is an image listed twice."""
    pred = predictions.side
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
        yield _paired(g, p, gt, pred, pairing)
    pairing.gt_skipped = gt.skipped
    pairing.predictions_without_ground_truth = predictions.unused()
    pairing.warnings.extend(gt.warnings)


def iter_export_pairs(path: Path, pairing: Pairing) -> Iterator[ImagePair]:
    """Both sides from one Label Studio export, task by task (each task holds
    its annotations and predictions): nothing is held between tasks."""
    gt, pred = Side(str(path)), Side(str(path))
    try:
        for n, task in enumerate(iter_json_list(path)):
            g = _task_image(path, n, task, GROUND_TRUTH, gt)
            p = _task_image(path, n, task, PREDICTIONS, pred)
            if g is None:
                pairing.predictions_without_ground_truth += p is not None
                continue
            yield _paired(g, p, gt, pred, pairing)
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
    gt_path: str | Path, pred_path: str | Path
) -> tuple[Iterator[ImagePair], Pairing]:
    """The pairs (read lazily; errors raise while iterating) and the counts,
    complete once the pairs are consumed. One Label Studio export given as
    both files is read once, task by task; otherwise the predictions file is
    read whole and the ground truth streams past it."""
    gt_path, pred_path = Path(gt_path), Path(pred_path)
    if _same_export(gt_path, pred_path):
        pairing = Pairing()
        return iter_export_pairs(gt_path, pairing), pairing
    pred = Side(str(pred_path))
    index = PredictionIndex(pred, iter_side(pred_path, PREDICTIONS, pred))
    pairing = Pairing(pred_skipped=pred.skipped, warnings=list(pred.warnings))
    gt = Side(str(gt_path))
    return iter_pairs(gt, iter_side(gt_path, GROUND_TRUTH, gt), index, pairing), pairing
