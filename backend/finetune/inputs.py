"""Where ``rexlabel finetune`` reads tasks, the label config and images from.

- ``--project ID``: Label Studio's JSON export of the project, its label
  config, the connected model's Extra params, and images downloaded through
  ``common.images.loader.ImageLoader`` (the token goes to Label Studio only).
- ``--from FILE --images DIR``: a Label Studio JSON export (with
  ``--label-config FILE``) or a COCO file (boxes; polygons by their box; a
  ``RectangleLabels`` config is made from its categories). An image is looked
  up in ``DIR`` by its file name only, so a task's reference can never reach
  outside ``DIR``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import quoteattr

from PIL import Image, ImageOps

from backend.finetune.prepare import LoadImage
from common.images.errors import ImageLoadError

COCO_TO_NAME = "image"
COCO_FROM_NAME = "label"
COCO_DATA_KEY = "image"


class FinetuneInputError(ValueError):
    """An input file, directory or option cannot be used; says which."""


@dataclass
class Source:
    """Tasks (an iterator of Label Studio task objects), the label config, how
    to load a task's image, and the Extra params to plan with."""

    tasks: Iterator[Any]
    label_config: str
    load_image: LoadImage
    description: dict[str, Any]
    extra_params: dict[str, Any] = field(default_factory=dict)
    """The Extra params the plan uses: ``--extra-params``, else (``--project``)
    those of the model connected to the project."""


JSON_LINES_SUFFIXES = (".jsonl", ".ndjson")
"""Label Studio exports as JSON lines (one task object a line): never COCO."""


def is_coco(path: Path) -> bool:
    """A JSON object with ``images`` and ``annotations`` (an export is a list,
    or JSON lines)."""
    if path.suffix.lower() in JSON_LINES_SUFFIXES:
        return False
    with path.open("rb") as stream:
        head = stream.read(4096).lstrip()
    return head[:1] == b"{"


def coco_source(path: Path, images_dir: Path) -> Source:
    """A COCO detection file as Label Studio tasks with rectangle annotations."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FinetuneInputError(f"--from {path}: {exc}") from exc
    if not isinstance(coco, Mapping) or not isinstance(coco.get("images"), list):
        raise FinetuneInputError(f"--from {path}: a COCO file needs an 'images' list")
    categories = {
        c["id"]: str(c["name"])
        for c in coco.get("categories") or []
        if isinstance(c, Mapping) and "id" in c and "name" in c
    }
    if not categories:
        raise FinetuneInputError(f"--from {path}: a COCO file needs 'categories'")
    by_image: dict[Any, list[Mapping[str, Any]]] = {}
    for ann in coco.get("annotations") or []:
        if isinstance(ann, Mapping):
            by_image.setdefault(ann.get("image_id"), []).append(ann)
    labels = "".join(
        f"<Label value={quoteattr(n)}/>" for n in dict.fromkeys(categories.values())
    )
    config = (
        f'<View><Image name="{COCO_TO_NAME}" value="${COCO_DATA_KEY}"/>'
        f'<RectangleLabels name="{COCO_FROM_NAME}" toName="{COCO_TO_NAME}">{labels}'
        "</RectangleLabels></View>"
    )

    def tasks() -> Iterator[dict[str, Any]]:
        for n, image in enumerate(coco["images"]):
            if not isinstance(image, Mapping):
                raise FinetuneInputError(f"--from {path}: images[{n}] is not an object")
            width, height = image.get("width"), image.get("height")
            results = [
                _coco_result(ann, categories, width, height, path)
                for ann in by_image.get(image.get("id"), [])
                if not ann.get("iscrowd")
            ]
            yield {
                "id": image.get("id") if isinstance(image.get("id"), int) else n + 1,
                "data": {COCO_DATA_KEY: str(image.get("file_name", ""))},
                "annotations": [
                    {"id": n + 1, "result": results, "was_cancelled": False}
                ],
            }

    return Source(
        tasks(), config, local_loader(images_dir), {"from": str(path), "format": "coco"}
    )


def _number(value: Any) -> bool:
    """A finite JSON number (not a boolean)."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _coco_result(ann, categories, width, height, path) -> dict[str, Any]:
    if not (_number(width) and _number(height) and min(width, height) > 0):
        raise FinetuneInputError(
            f"--from {path}: image {ann.get('image_id')} has no width/height"
        )
    bbox = ann.get("bbox")
    if not (
        isinstance(bbox, list) and len(bbox) == 4 and all(_number(v) for v in bbox)
    ):
        raise FinetuneInputError(
            f"--from {path}: annotation {ann.get('id')} has no bbox "
            "(four numbers: x, y, width, height)"
        )
    label = categories.get(ann.get("category_id"))
    if label is None:
        raise FinetuneInputError(
            f"--from {path}: annotation {ann.get('id')} has unknown category "
            f"{ann.get('category_id')!r}"
        )
    x, y, w, h = (float(v) for v in bbox)
    return {
        "from_name": COCO_FROM_NAME,
        "to_name": COCO_TO_NAME,
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "value": {
            "x": 100 * x / width, "y": 100 * y / height,
            "width": 100 * w / width, "height": 100 * h / height,
            "rotation": 0, "rectanglelabels": [label],
        },
    }  # fmt: skip


LOCAL_FILES_PATH = "/data/local-files"
LOCAL_FILES_PARAM = "d"
"""The query parameter of Label Studio's local-files storage URLs
(``/data/local-files/?d=folder/img.jpg``) that holds the file's path."""


def file_name(ref: str) -> str:
    """The file name a task's image reference ends in ("" when it names a
    directory or nothing): a URL's path, or a local-files URL's ``d``
    parameter, percent-decoded, last component only."""
    parsed = urlparse(ref)
    local_file = parse_qs(parsed.query).get(LOCAL_FILES_PARAM)
    if local_file and parsed.path.rstrip("/").endswith(LOCAL_FILES_PATH):
        path = local_file[0]
    else:
        path = unquote(parsed.path or ref)
    if path.endswith("/"):
        return ""
    return PurePosixPath(path).name


def local_loader(images_dir: Path) -> LoadImage:
    """Loads a task's image from ``images_dir`` by the reference's file name."""
    root = Path(images_dir)
    if not root.is_dir():
        raise FinetuneInputError(f"--images {root}: not a directory")

    def load(ref: str, task_id: int | None) -> Image.Image:
        name = file_name(ref)
        if not name or name in (".", ".."):
            raise ImageLoadError(f"image reference {ref[:120]!r} names no file")
        path = root / name
        try:
            with Image.open(path) as opened:
                return ImageOps.exif_transpose(opened).convert("RGB")
        except FileNotFoundError:
            raise ImageLoadError(f"{name} is not in --images {root}") from None
        except OSError as exc:
            raise ImageLoadError(f"cannot read {path}: {exc}") from exc

    return load
