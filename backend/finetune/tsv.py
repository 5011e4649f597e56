"""Upstream Rex-Omni's SFT data files, written one image at a time.

Upstream's trainer (``finetuning/`` of IDEA-Research/Rex-Omni, its README's
"Data Format") reads three files per dataset:

- ``NAME.images.tsv``: one line per image, ``OFFSET<TAB>BASE64``: the line's
  own byte offset in this file, then the encoded image file in base64;
- ``NAME.annotations.tsv``: one line per sample, ``IMAGE_OFFSET<TAB>JSON``:
  the byte offset of its image's line in the images file, then
  ``{"boxes": [{"bbox": [x0, y0, x1, y1], "phrase": "..."}, ...]}`` with
  boxes in pixels of the stored image (xyxy);
- ``NAME.annotations.tsv.lineidx``: the byte offset of each annotation line,
  one decimal number a line: the dataset's index (sample ``i`` is the line at
  the ``i``-th offset).

The loader seeks to an offset, reads one line and splits it at the tab, so a
line must hold exactly one tab and no newline: base64 and ``json.dumps`` never
write either. Everything is written as ASCII (JSON escapes other characters),
so offsets are the same in bytes and characters whatever the reader's locale.
The files appear under their names only when :meth:`RexOmniTsvWriter.close`
succeeds; until then they are ``.partial`` files, removed by ``abort``.
"""

from __future__ import annotations

import base64
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

IMAGES_SUFFIX = ".images.tsv"
ANNOTATIONS_SUFFIX = ".annotations.tsv"
LINEIDX_SUFFIX = ".annotations.tsv.lineidx"
"""Upstream's file names: ``NAME.images.tsv`` and so on (its toy data and
``configs/sft.py`` use them)."""

JPEG_QUALITY = 95
"""Images are stored as JPEG (upstream's converter does the same) at this
quality, well above PIL's default 75, so boxes drawn on fine detail still sit
on the same pixels after the round trip."""

PARTIAL_SUFFIX = ".partial"
"""Files being written carry this suffix until the export completes."""


def encode_image(image: Image.Image) -> bytes:
    """``image`` as a JPEG file in base64 (ASCII bytes, no newline)."""
    buffer = io.BytesIO()
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    rgb.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buffer.getvalue())


def annotation_json(
    boxes: Sequence[tuple[Sequence[float], str]], extra: dict[str, Any] | None = None
) -> bytes:
    """The annotation of one sample: ``{"boxes": [{"bbox", "phrase"}], ...}``
    (``extra`` keys beside ``boxes``, which upstream's loader ignores)."""
    record: dict[str, Any] = {
        "boxes": [{"bbox": [float(v) for v in box], "phrase": p} for box, p in boxes]
    }
    record.update(extra or {})
    return json.dumps(record, ensure_ascii=True).encode("ascii")


class RexOmniTsvWriter:
    """Writes ``NAME.images.tsv``, ``NAME.annotations.tsv`` and its
    ``.lineidx`` under ``out_dir``: :meth:`add` one image at a time, then
    :meth:`close` (or :meth:`abort`). Holds no image after :meth:`add` returns.
    """

    def __init__(self, out_dir: str | Path, name: str) -> None:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"dataset name must be a plain file name, got {name!r}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {
            "images": self.out_dir / f"{name}{IMAGES_SUFFIX}",
            "annotations": self.out_dir / f"{name}{ANNOTATIONS_SUFFIX}",
            "lineidx": self.out_dir / f"{name}{LINEIDX_SUFFIX}",
        }
        self._files = {
            key: open(self._partial(path), "wb") for key, path in self.paths.items()
        }
        self._image_offset = 0
        self._annotation_offset = 0
        self.images = 0
        self.boxes = 0

    @staticmethod
    def _partial(path: Path) -> Path:
        return path.with_name(path.name + PARTIAL_SUFFIX)

    def add(
        self,
        image: Image.Image,
        boxes: Sequence[tuple[Sequence[float], str]],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """One image and its sample: ``boxes`` are ``(xyxy, phrase)`` in
        pixels of ``image`` as given (it is stored at that size)."""
        image_line = b"%d\t%s\n" % (self._image_offset, encode_image(image))
        annotation_line = b"%d\t%s\n" % (
            self._image_offset,
            annotation_json(boxes, extra),
        )
        self._files["images"].write(image_line)
        self._files["annotations"].write(annotation_line)
        self._files["lineidx"].write(b"%d\n" % self._annotation_offset)
        self._image_offset += len(image_line)
        self._annotation_offset += len(annotation_line)
        self.images += 1
        self.boxes += len(boxes)

    def close(self) -> dict[str, Path]:
        """Finish the files and give them their names; returns the paths."""
        for handle in self._files.values():
            handle.close()
        for path in self.paths.values():
            os.replace(self._partial(path), path)
        return dict(self.paths)

    def abort(self) -> None:
        """Close and remove the unfinished files."""
        for handle in self._files.values():
            handle.close()
        for path in self.paths.values():
            self._partial(path).unlink(missing_ok=True)
