"""A fine-tuning run's prepared data: what the backend writes and the trainer
reads (no torch here).

``rexlabel finetune`` turns a project's annotations into examples
(``backend.finetune``), stores each image once, already resized to what the
model sees, and writes the examples as JSON lines::

    <out>/data/images/<sha256 of the image's pixels>.jpg
    <out>/data/train.jsonl     the examples the run learns
    <out>/data/replay.jsonl    earlier behaviour mixed into every batch
    <out>/data/val.jsonl       held-out examples (never trained on)
    <out>/data/replay_requests.jsonl   questions for the base model
    <out>/data/replay_answers.jsonl    its answers (written before step 1)
    <out>/data/manifest.json   counts, skips, and what the data was made from

A stored image is what ``smart_resize`` gives for the original, so the
processor's own resize leaves it as it is; the answer's bins are fractions of
the original's width and height, which a resize does not change. ``--resume``
reads this directory again instead of downloading the project twice.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DATA_DIR_NAME = "data"
"""The prepared data's directory inside a run's output directory."""
IMAGES_DIR_NAME = "images"
SPLITS = ("train", "replay", "val", "replay_requests", "replay_answers")
"""The JSON-lines files of a data directory: ``train`` (learnt), ``replay``
(mixed into every batch), ``val`` (held-out annotations), ``replay_requests``
(questions the base model answers before training) and ``replay_answers``
(its answers: replayed, or, those ``held_out``, what forgetting is measured
on)."""
MANIFEST_NAME = "manifest.json"
IMAGE_FORMAT = "JPEG"
IMAGE_SUFFIX = ".jpg"
IMAGE_QUALITY = 95
"""JPEG quality of stored images: photos lose nothing the model can see, at a
tenth of PNG's size (a 10,000-image project is a few GB, not tens)."""


class FinetuneDataError(ValueError):
    """A data directory or one of its lines cannot be used; says where."""


@dataclass(frozen=True)
class Record:
    """One example as stored.

    Attributes:
        prompt: the user's question, as inference sends it.
        answer: the answer in Rex-Omni's grammar, without ``<|im_end|>``.
        image: the stored image's path, relative to the data directory.
        task: the Rex-Omni task (``detection``...).
        width, height: the original image's size in pixels (what the bins are
            fractions of; the stored image may be smaller).
        categories: the phrases the prompt asks.
        regions: the answer's regions as prediction dicts, pixels of the
            original image (``converters.prediction``), to score held-out
            examples against.
        labels: the Label Studio labels the regions carry (``--focus`` splits
            on them).
        task_id: the Label Studio task, when known.
        source: ``annotation`` or ``prediction`` (a model's own labels, replayed).
        held_out: a replay request whose answer is scored, never trained on.
    """

    prompt: str
    answer: str
    image: str
    task: str
    width: int
    height: int
    categories: tuple[str, ...] = ()
    regions: tuple[dict[str, Any], ...] = ()
    labels: tuple[str, ...] = ()
    task_id: int | None = None
    source: str = "annotation"
    held_out: bool = False
    keypoint_type: str | None = None
    visual_prompt_boxes: tuple[tuple[float, float, float, float], ...] = field(
        default_factory=tuple
    )

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=True, sort_keys=True)

    @classmethod
    def from_json(cls, line: str, where: str) -> Record:
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise TypeError("not a JSON object")
            record = cls(
                prompt=_text(raw, "prompt"),
                answer=_text(raw, "answer"),
                image=_text(raw, "image"),
                task=_text(raw, "task"),
                width=int(raw["width"]),
                height=int(raw["height"]),
                categories=tuple(str(c) for c in raw.get("categories") or ()),
                regions=tuple(dict(r) for r in raw.get("regions") or ()),
                labels=tuple(str(c) for c in raw.get("labels") or ()),
                task_id=raw.get("task_id"),
                source=str(raw.get("source") or "annotation"),
                held_out=bool(raw.get("held_out", False)),
                keypoint_type=raw.get("keypoint_type"),
                visual_prompt_boxes=tuple(
                    tuple(float(v) for v in box)
                    for box in raw.get("visual_prompt_boxes") or ()
                ),
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise FinetuneDataError(f"{where}: not an example ({exc})") from exc
        if record.width < 1 or record.height < 1:
            raise FinetuneDataError(f"{where}: image size must be positive")
        image = Path(record.image)
        if image.is_absolute() or ".." in image.parts:
            raise FinetuneDataError(
                f"{where}: image {record.image!r} must be a path inside the "
                "data directory"
            )
        return record


def _text(raw: dict[str, Any], key: str) -> str:
    value = raw[key]
    if not isinstance(value, str):
        raise TypeError(f"{key!r} must be a string")
    return value


def data_dir(out_dir: Path) -> Path:
    return Path(out_dir) / DATA_DIR_NAME


def split_path(data: Path, split: str) -> Path:
    if split not in SPLITS:
        raise FinetuneDataError(f"unknown split {split!r}; expected {SPLITS}")
    return Path(data) / f"{split}.jsonl"


def write_split(data: Path, split: str, records: Iterable[Record]) -> int:
    """Write one split's records (atomic); returns how many."""
    path = split_path(data, split)
    fd, tmp = tempfile.mkstemp(dir=data, prefix=f".{split}-")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            for record in records:
                out.write(record.to_json() + "\n")
                count += 1
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def read_split(data: Path, split: str) -> list[Record]:
    """One split's records; a missing file is an empty split."""
    path = split_path(data, split)
    if not path.exists():
        return []
    return list(_read_lines(path))


def _read_lines(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            if line.strip():
                yield Record.from_json(line, f"{path}:{n}")


def write_manifest(data: Path, manifest: dict[str, Any]) -> None:
    path = Path(data) / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n")


def read_manifest(data: Path) -> dict[str, Any]:
    path = Path(data) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FinetuneDataError(f"{path} is missing: prepare the data first") from exc
    except (OSError, json.JSONDecodeError) as exc:
        raise FinetuneDataError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict):
        raise FinetuneDataError(f"{path} is not a JSON object")
    return manifest
