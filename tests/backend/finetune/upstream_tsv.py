"""A reader of upstream Rex-Omni's SFT files, written from its finetuning
README ("Data Format") and nothing of ours: what upstream's trainer would see.

Three files: ``*.images.tsv`` (``offset<TAB>base64 image``),
``*.annotations.tsv`` (``image line offset<TAB>annotation JSON``) and
``*.annotations.tsv.lineidx`` (one byte offset per annotation line). The
loader opens the files in text mode with the default encoding, seeks to an
offset, reads a line, strips it and splits it at tabs; an image may come as
``b'...'`` (a bytes repr), which it unwraps. Its grounding task then writes
each box as four bins: the coordinate over the image's side, clipped to 0..1,
times 999, truncated; boxes of one phrase sorted by x0 and joined by ``,``.
"""

from __future__ import annotations

import json
from base64 import b64decode
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

from PIL import Image


def read_samples(prefix: Path) -> Iterator[tuple[Image.Image, dict]]:
    """``(RGB image, annotation)`` of every sample, in the line index's order."""
    with open(f"{prefix}.annotations.tsv.lineidx") as index:
        offsets = [int(line.strip()) for line in index]
    with (
        open(f"{prefix}.annotations.tsv") as annotations,
        open(f"{prefix}.images.tsv") as images,
    ):
        for offset in offsets:
            annotations.seek(offset)
            image_offset, annotation = annotations.readline().strip().split("\t")
            images.seek(int(image_offset))
            encoded = images.readline().strip().split("\t")[1]
            if encoded.startswith("b'"):
                encoded = encoded[1:-1]
            image = Image.open(BytesIO(b64decode(encoded))).convert("RGB")
            yield image, json.loads(annotation)


def _bin(value: float, side: float) -> int:
    return max(0, min(999, int(max(0.0, min(1.0, value / side)) * 999)))


def grounding_bins(annotation: dict, width: int, height: int) -> dict[str, list]:
    """Each phrase's boxes as upstream's grounding task bins them (sorted by x0)."""
    by_phrase: dict[str, list] = {}
    for box in annotation["boxes"]:
        x0, y0, x1, y1 = box["bbox"]
        bins = (_bin(x0, width), _bin(y0, height), _bin(x1, width), _bin(y1, height))
        by_phrase.setdefault(box["phrase"], []).append(bins)
    return {
        phrase: sorted(boxes, key=lambda b: b[0]) for phrase, boxes in by_phrase.items()
    }
