"""A project's annotations -> upstream Rex-Omni's SFT files (``rexlabel export
--to rexomni-tsv``).

Upstream's SFT loader trains grounding only: one sample per image, the boxes
and their phrases, the prompt drawn from its own templates and absent
phrases (``None``) added from its ``extra_categories`` setting. So each image
gives one sample holding the regions of its ``detection`` examples
(:mod:`backend.finetune.examples`: rectangles, and polygons and brush masks by
their box), labelled with the phrases inference asks. Points, keypoints and
OCR have no place in that format and are counted, not written. An image
without boxes is not written either (upstream's loader skips such samples).

Images stream: each is loaded, encoded and written before the next is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from backend.finetune.source import (
    AnnotatedImage,
    ExampleStats,
    annotated_images,
    image_examples,
)
from backend.finetune.tsv import RexOmniTsvWriter
from backend.planner import Plan
from common.images.errors import ImageLoadError
from converters.tasks import Task

MANIFEST_NAME = "manifest.json"
"""What the export wrote, its counts and the phrases for upstream's
``extra_categories``, beside the TSV files."""

UPSTREAM_PHRASE_EDITS = {"/": "cut there", "_": "made a space", ",": "removed"}
"""Characters upstream's grounding task rewrites in a phrase before training
(``modify_cateogry_name``): text after ``/`` is dropped, ``_`` becomes a space,
``,`` goes. A phrase holding one is trained under another spelling than the
one inference asks, so the export warns about it."""

ImageLoader = Callable[[AnnotatedImage], Image.Image]
"""Loads an annotated image (RGB, EXIF orientation applied, full size);
raises ``ImageLoadError`` when it cannot."""


@dataclass
class TsvExport:
    """What :func:`export_rexomni_tsv` wrote and passed over."""

    stats: ExampleStats = field(default_factory=ExampleStats)
    files: dict[str, Path] = field(default_factory=dict)
    images_written: int = 0
    boxes: int = 0
    images_without_boxes: int = 0
    phrases: list[str] = field(default_factory=list)
    """Every phrase the project's detection calls ask: upstream's
    ``extra_categories``, for ``None`` answers."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "rexomni-sft-tsv",
            "files": {key: path.name for key, path in self.files.items()},
            "images_written": self.images_written,
            "boxes": self.boxes,
            "images_without_boxes": self.images_without_boxes,
            "phrases": list(self.phrases),
            **self.stats.to_dict(),
        }


def detection_phrases(plan: Plan) -> list[str]:
    """The phrases of the plan's detection calls, in config order."""
    phrases: dict[str, None] = {}
    for control in plan.controls:
        if control.call.task is Task.DETECTION:
            phrases.update(dict.fromkeys(control.call.categories or []))
    return list(phrases)


def _phrase_warnings(phrases: list[str]) -> list[str]:
    return [
        f"phrase {phrase!r}: upstream's trainer rewrites it ({how} at {char!r})"
        for phrase in phrases
        for char, how in UPSTREAM_PHRASE_EDITS.items()
        if char in phrase
    ]


def export_rexomni_tsv(
    tasks: Iterable[Any],
    plan: Plan,
    out_dir: str | Path,
    *,
    name: str,
    load_image: ImageLoader,
) -> TsvExport:
    """Write ``tasks``' detection boxes as upstream's SFT files under
    ``out_dir`` (``NAME.images.tsv``, ``NAME.annotations.tsv``,
    ``NAME.annotations.tsv.lineidx`` and ``manifest.json``).

    Nothing is left under the final names when it raises midway.
    """
    export = TsvExport(phrases=detection_phrases(plan))
    stats = export.stats
    for warning in _phrase_warnings(export.phrases):
        stats.warn(warning)
    writer = RexOmniTsvWriter(out_dir, name)
    try:
        for image in annotated_images(tasks, plan, stats):
            _export_image(image, plan, writer, export, load_image)
        export.files = writer.close()
    except BaseException:
        writer.abort()
        raise
    export.images_written, export.boxes = writer.images, writer.boxes
    manifest = Path(out_dir) / MANIFEST_NAME
    manifest.write_text(json.dumps(export.to_dict(), indent=2) + "\n")
    export.files["manifest"] = manifest
    return export


def _load(image: AnnotatedImage, load_image: ImageLoader, stats: ExampleStats):
    try:
        return load_image(image)
    except (ImageLoadError, OSError) as exc:
        stats.skipped_no_image += 1
        stats.warn(f"task {image.task_id}: {exc}; skipped")
        return None


def _export_image(
    image: AnnotatedImage,
    plan: Plan,
    writer: RexOmniTsvWriter,
    export: TsvExport,
    load_image: ImageLoader,
) -> None:
    stats = export.stats
    picture = None
    size = image.size
    if size is None:
        if not image.results:  # nothing annotated, nothing to box
            export.images_without_boxes += 1
            return
        picture = _load(image, load_image, stats)
        if picture is None:
            return
        size = picture.size
    built = image_examples(image, plan, stats, size, visual_prompts=False)
    if built is None:
        return
    regions = [
        region
        for example in built.examples
        if example.task is Task.DETECTION
        for region in example.regions
    ]
    if not regions:
        export.images_without_boxes += 1
        return
    picture = picture or _load(image, load_image, stats)
    if picture is None:
        return
    if picture.size != size:
        stats.warn(
            f"task {image.task_id}: annotated at {size[0]}x{size[1]}, the image is "
            f"{picture.width}x{picture.height}; boxes scaled to the image"
        )
    sx, sy = picture.width / size[0], picture.height / size[1]
    boxes = [
        (
            (r.coords[0] * sx, r.coords[1] * sy, r.coords[2] * sx, r.coords[3] * sy),
            r.label,
        )
        for r in regions
    ]
    writer.add(picture, boxes, {"task_id": image.task_id, "image": image.ref})
    picture.close()
