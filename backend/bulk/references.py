"""Per-image reference boxes for visual prompting in bulk (``--reference-boxes``).

Rex-Omni's visual prompt is boxes *inside the image asked about*: "find more
things like the ones boxed here". An exemplar drawn on one image says nothing
to the model about another image, so every image needs its own boxes, and an
image without any is skipped (never prompted with another image's boxes).

A reference file is either

- a COCO file (``.json``): the ``bbox`` of each annotation (xywh pixels) of the
  chosen categories (``--categories``; all categories with boxes when none is
  named), found per image by its ``file_name``; or
- JSON lines (``.jsonl``/``.ndjson``): ``{"image": ..., "boxes": [[x0, y0, x1,
  y1], ...], "label": ...}``, xyxy pixels of that image; without ``label`` the
  one ``--categories`` name; lines of other labels than ``--categories`` names
  are not used.

An image matches a reference entry when the entry names it exactly (a URL, a
path relative to the reference file or absolute) or when the entry's path is
the tail of the image's path (``images/a.jpg`` matches ``/data/set/images/a.jpg``);
the longest such tail wins. One entry matching two different images is refused:
its boxes would be applied to an image they were not drawn on.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from backend.bulk.sources import (
    MANIFEST_EXTENSIONS,
    MANIFEST_KEYS,
    SourceError,
    image_name,
    iter_json_lines,
)

Boxes = list[list[float]]
"""xyxy boxes in pixels of one image."""


def _is_remote(name: str) -> bool:
    """A URL (``scheme://``): matched only exactly. Label Studio's ``/data/...``
    references are paths here, so they match by their tail too."""
    return "://" in name


class _Entry:
    """The boxes of one named image, per label (in the order first seen)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.boxes: dict[str, Boxes] = {}
        self.used_by: str | None = None

    def add(self, label: str, boxes: Iterable[list[float]]) -> None:
        self.boxes.setdefault(label, []).extend(boxes)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _xyxy(value: Any, where: str) -> list[float]:
    """One ``[x0, y0, x1, y1]`` box (x1 > x0, y1 > y0) or SourceError at ``where``."""
    if (
        not isinstance(value, Sequence)
        or isinstance(value, (str, bytes))
        or len(value) != 4
        or not all(_is_number(v) for v in value)
        or value[2] <= value[0]
        or value[3] <= value[1]
    ):
        raise SourceError(
            f"{where}: expected a box [x0, y0, x1, y1] in pixels with x1 > x0 and "
            f"y1 > y0, got {json.dumps(value)[:120]}"
        )
    return [float(v) for v in value]


def _tail_key(name: str) -> tuple[str, ...] | None:
    """Path components of a relative name (``./`` dropped), or None for names
    that cannot be a tail (URLs, ``..``)."""
    if _is_remote(name):
        return None
    parts = tuple(p for p in PurePosixPath(name.replace("\\", "/")).parts if p != ".")
    parts = tuple(p for p in parts if p != "/")
    if not parts or ".." in parts:
        return None
    return parts


class ReferenceBoxes:
    """Reference boxes per image, read from one file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.labels: list[str] = []
        self._entries: dict[str, _Entry] = {}
        self._exact: dict[str, _Entry] = {}
        self._tails: dict[tuple[str, ...], _Entry] = {}
        self.digest = hashlib.sha256(path.read_bytes()).hexdigest()

    # Building -------------------------------------------------------------------
    def add(self, name: str, label: str, boxes: Iterable[list[float]]) -> None:
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = _Entry(name)
            self._index(entry)
        entry.add(label, boxes)
        if label not in self.labels:
            self.labels.append(label)

    def _index(self, entry: _Entry) -> None:
        name = entry.name
        if _is_remote(name):
            self._exact.setdefault(name, entry)
            return
        base = self.path.resolve().parent
        resolved = str((base / os.path.expanduser(name)).resolve())
        self._exact.setdefault(resolved, entry)
        tail = _tail_key(name)
        if tail is not None:
            self._tails.setdefault(tail, entry)

    # Looking up -----------------------------------------------------------------
    def _find(self, image: str) -> _Entry | None:
        found = self._exact.get(image)
        if found is not None or _is_remote(image):
            return found
        parts = PurePosixPath(image).parts
        for start in range(1, len(parts)):
            found = self._tails.get(tuple(parts[start:]))
            if found is not None:
                return found
        return None

    def boxes_for(self, image: str) -> dict[str, Boxes] | None:
        """``{label: boxes}`` drawn on ``image``, or None when it has none.

        Raises:
            SourceError: the matching entry already matched another image.
        """
        entry = self._find(image)
        if entry is None:
            return None
        if entry.used_by is not None and entry.used_by != image:
            raise SourceError(
                f"{self.path}: the reference boxes of {entry.name!r} match both "
                f"{entry.used_by} and {image}; name the image by a longer path "
                "(boxes belong to one image)"
            )
        entry.used_by = image
        return {label: list(boxes) for label, boxes in entry.boxes.items()}


def _coco_categories(
    data: Mapping[str, Any], wanted: Sequence[str], where: str
) -> dict[Any, str]:
    """Category id -> name of the categories whose boxes are used."""
    names = {c.get("id"): str(c.get("name")) for c in data.get("categories") or []}
    if not wanted:
        return names
    missing = [w for w in wanted if w not in names.values()]
    if missing:
        raise SourceError(
            f"{where}: no category named {', '.join(map(repr, missing))} "
            f"(it has {', '.join(map(repr, names.values())) or 'none'})"
        )
    return {i: n for i, n in names.items() if n in wanted}


def _read_coco(
    refs: ReferenceBoxes, data: Mapping[str, Any], wanted: Sequence[str]
) -> None:
    where = str(refs.path)
    chosen = _coco_categories(data, wanted, where)
    files = {i.get("id"): i.get("file_name") for i in data.get("images") or []}
    per_image: dict[Any, dict[str, Boxes]] = {}
    for ann in data.get("annotations") or []:
        label = chosen.get(ann.get("category_id"))
        if label is None:
            continue
        at = f"{where}: annotation {ann.get('id')!r}"
        bbox = ann.get("bbox")
        if (
            not isinstance(bbox, list)
            or len(bbox) != 4
            or not all(map(_is_number, bbox))
            or bbox[2] <= 0
            or bbox[3] <= 0
        ):
            raise SourceError(
                f"{at}: bbox must be [x, y, width, height] pixels with a positive "
                f"width and height, got {json.dumps(bbox)[:120]}"
            )
        x, y, w, h = (float(v) for v in bbox)
        box = [x, y, x + w, y + h]
        if not isinstance(files.get(ann.get("image_id")), str):
            image_id = ann.get("image_id")
            raise SourceError(f"{at}: image_id {image_id!r} has no file_name")
        per_image.setdefault(ann["image_id"], {}).setdefault(label, []).append(box)
    for image_id, by_label in per_image.items():
        for label, boxes in by_label.items():
            refs.add(files[image_id], label, boxes)
    order = list(wanted or chosen.values())
    refs.labels.sort(key=order.index)


def _line_label(item: Mapping[str, Any], wanted: Sequence[str], at: str) -> str:
    label = item.get("label")
    if label is None:
        if len(wanted) != 1:
            raise SourceError(
                f"{at}: no 'label'; give one per line or exactly one --categories name"
            )
        return wanted[0]
    if not isinstance(label, str) or not label.strip():
        raise SourceError(f"{at}: 'label' must be a non-empty string, got {label!r}")
    return label.strip()


def _read_lines(refs: ReferenceBoxes, wanted: Sequence[str]) -> None:
    for at, item in iter_json_lines(refs.path):
        if not isinstance(item, dict):
            raise SourceError(f"{at}: expected an object with image and boxes")
        name = image_name(item)
        if not isinstance(name, str):
            raise SourceError(f"{at}: no image (one of {', '.join(MANIFEST_KEYS)})")
        boxes = item.get("boxes")
        if not isinstance(boxes, list) or not boxes:
            raise SourceError(f"{at}: 'boxes' must be a non-empty list of boxes")
        label = _line_label(item, wanted, at)
        if wanted and label not in wanted:
            continue
        refs.add(name.strip(), label, [_xyxy(b, f"{at} 'boxes'") for b in boxes])
    if wanted:
        refs.labels.sort(key=list(wanted).index)


def load_references(path: str | Path, categories: Sequence[str] = ()) -> ReferenceBoxes:
    """Read a COCO file or JSON lines of reference boxes (module docstring).

    ``categories``: the labels to use (COCO: category names); empty: all.

    Raises:
        SourceError: the file is missing, malformed or holds no usable box;
            the message names the file, line or annotation.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise SourceError(f"reference boxes {str(path)!r}: no such file")
    refs = ReferenceBoxes(path)
    if path.suffix.lower() in MANIFEST_EXTENSIONS:
        _read_lines(refs, categories)
    else:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise SourceError(f"{path}: not JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
            raise SourceError(
                f"{path}: expected a COCO file (images, annotations, categories) "
                "or JSON lines (.jsonl)"
            )
        _read_coco(refs, data, categories)
    if not refs.labels:
        wanted = f" of {', '.join(map(repr, categories))}" if categories else ""
        raise SourceError(f"{path}: no reference boxes{wanted}")
    return refs
