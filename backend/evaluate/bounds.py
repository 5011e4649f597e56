"""Untrusted geometry, checked before anything of it is rasterised.

Every source ``rexlabel evaluate`` reads (files and ``--project``) gives image
sizes and regions that come from outside, and the metrics rasterise them at
the image size with pycocotools: its ``frPyObjects`` walks every polygon edge
pixel by pixel in C ints (a vertex at 1e9 px overflows them and crashes the
process), a mask is decoded at the size it declares, and its decode trusts the
RLE's counts (short counts leave memory unset). So each image is checked once,
when its two sides are paired (``inputs.pair_images``, the one place every
source goes through):

- its size is at most ``max_pixels``, rexlabel's limit on the pixels of an
  image decoded at once (``REXLABEL_MAX_IMAGE_PIXELS``);
- every coordinate of every region lies within :data:`MAX_OVERHANG` of the
  image; a box is not inverted;
- a mask is a compressed COCO RLE of the image's size whose runs add up to
  exactly its pixels.

Each raises :class:`GeometryError` naming the region; the caller adds the
file and the task, line or image.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from backend.planner import shown
from converters.geometry import MAX_IMAGE_PIXELS
from converters.prediction import Prediction, PredictionError, RegionType

MAX_OVERHANG = 1.0
"""How far a region may reach outside its image, in image sizes: x within
-W .. 2W, y within -H .. 2H. Annotators' boxes overhang the edge by a few
pixels and imported regions by more, so overhang passes, scored as given (not
clipped: pycocotools run directly on the same files scores it so). A region a
whole image size beyond the edge is no drawing of this image but a wrong size
or unit. The bound also caps the cost of rasterising: each polygon edge is at
most 3x the image's side, and coordinates stay far inside pycocotools' ints."""

RLE_VALUE_CHARS = 7
"""Most characters one value of a compressed COCO RLE takes: 5 bits each, so 7
hold 35 bits, more than any run of an image within the pixel limit needs;
pycocotools computes them in a C int, so longer is garbage, not a mask."""

RLE_FIRST_CHAR = ord("0")
"""A compressed RLE's characters are ``'0'`` + 6 bits (pycocotools' rleToString)."""


class GeometryError(ValueError):
    """An image size or region that cannot be scored; names the region."""


def dimension(value: Any, name: str) -> int:
    """A declared image ``width``/``height`` as an int: a JSON integer (or a
    whole float such as ``200.0``); None or missing is 0, unknown. Anything
    else (``"200"``, ``200.7``, ``true``) is a :class:`GeometryError`."""
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise GeometryError(f"{name} must be an integer, got {shown(value)}")
    return value


def check_size(width: int, height: int, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """A declared size: not negative (0 is unknown), at most ``max_pixels``."""
    if width < 0 or height < 0:
        raise GeometryError(f"image size {width}x{height} is negative")
    if width * height > max_pixels:
        raise GeometryError(
            f"image size {width}x{height} is more than the {max_pixels} pixels "
            "rexlabel decodes at once (REXLABEL_MAX_IMAGE_PIXELS)"
        )


def _points(p: Prediction) -> Iterator[tuple[str, tuple[float, float]]]:
    """Every ``(name, (x, y))`` the region places, pixels."""
    if p.type in (RegionType.BOX, RegionType.KEYPOINT):
        x0, y0, x1, y1 = p.coords
        yield "top-left corner", (x0, y0)
        yield "bottom-right corner", (x1, y1)
        for joint, xy in (p.keypoints or {}).items():
            if xy is not None:
                yield f"joint {shown(joint)}", xy
    elif p.type is RegionType.POINT:
        yield "point", p.coords
    else:
        for n, xy in enumerate(p.coords):
            yield f"vertex {n}", xy


def _describe(n: int, p: Prediction) -> str:
    return f"region {n} ({shown(p.label)} {p.type.value})"


def check_region(n: int, p: Prediction, width: int, height: int) -> None:
    """Region ``n`` (its index on its side) of a ``width`` x ``height`` image:
    within :data:`MAX_OVERHANG`, a box not inverted, a mask that fits."""
    x_low, x_high = -MAX_OVERHANG * width, (1 + MAX_OVERHANG) * width
    y_low, y_high = -MAX_OVERHANG * height, (1 + MAX_OVERHANG) * height
    for name, (x, y) in _points(p):
        if not (x_low <= x <= x_high and y_low <= y <= y_high):
            raise GeometryError(
                f"{_describe(n, p)}: {name} ({x:g}, {y:g}) lies further outside "
                f"the {width}x{height} image than its size (x from {x_low:g} to "
                f"{x_high:g}, y from {y_low:g} to {y_high:g} pixels)"
            )
    if p.type in (RegionType.BOX, RegionType.KEYPOINT):
        x0, y0, x1, y1 = p.coords
        if x1 < x0 or y1 < y0:
            raise GeometryError(
                f"{_describe(n, p)}: box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has a "
                "negative width or height (expected x0 <= x1 and y0 <= y1)"
            )
    if p.mask is not None:
        problem = rle_problem(p.mask, width, height)
        if problem:
            raise GeometryError(f"{_describe(n, p)}: mask {problem}")


def check_regions(regions: Sequence[Prediction], width: int, height: int) -> None:
    """:func:`check_region` for each of one side's regions, in order."""
    for n, p in enumerate(regions):
        check_region(n, p, width, height)


def rle_problem(
    rle: Mapping[str, Any], width: int, height: int, *, uncompressed: bool = False
) -> str | None:
    """What is wrong with a COCO RLE as the mask of a ``width`` x ``height``
    image, or None: its ``size`` must be ``[height, width]`` and its counts a
    compressed string (or, with ``uncompressed``, a list of run lengths, as
    COCO writes crowds) whose runs add up to ``width * height``."""
    size = rle.get("size")
    if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
        return f"size {shown(size)} (h, w) is not the image's [{height}, {width}]"
    counts = rle.get("counts")
    if uncompressed and isinstance(counts, list):
        runs_ok = all(isinstance(n, int) and n >= 0 for n in counts)
        total = sum(counts) if runs_ok else None
    elif isinstance(counts, str):
        total = rle_total(counts)
    else:
        return f"counts must be a compressed RLE string, got {shown(counts)}"
    if total != width * height:
        got = "not a compressed RLE" if total is None else f"{total} pixels"
        return f"counts {shown(counts)} are {got}, expected {width * height} pixels"
    return None


def rle_total(counts: str) -> int | None:
    """The pixels a compressed COCO RLE string covers (the sum of its runs, as
    pycocotools' ``rleFrString`` reads them), or None when it is not one: a
    character outside ``'0'`` .. ``'o'``, a value left open or longer than
    :data:`RLE_VALUE_CHARS`, a negative run. Vectorised: no Python loop per
    character, so a mask costs about as much as reading its string."""
    try:
        raw = np.frombuffer(counts.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        return None
    if raw.size == 0:
        return 0
    c = raw.astype(np.int64) - RLE_FIRST_CHAR
    if c.min() < 0 or c.max() > 0x3F:
        return None
    more = (c & 0x20) != 0  # the value goes on in the next character
    if more[-1]:
        return None
    ends = np.flatnonzero(~more)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts + 1
    if lengths.max() > RLE_VALUE_CHARS:
        return None
    value_of = np.repeat(np.arange(ends.size), lengths)
    shift = 5 * (np.arange(c.size) - starts[value_of])
    values = np.zeros(ends.size, dtype=np.int64)
    np.add.at(values, value_of, (c & 0x1F) << shift)
    negative = (c[ends] & 0x10) != 0  # sign bit of the last 5 bits
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    # from the fourth value on, each is a difference to the one two before
    values[1::2] = np.cumsum(values[1::2])
    values[2::2] = np.cumsum(values[2::2])
    if values.size and values.min() < 0:
        return None
    return int(values.sum())


def check_coco(dataset: Mapping[str, Any], max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """What ``converters.coco.from_coco`` rasterises while it reads, checked
    first: each image's size (integers, within ``max_pixels``) and each
    segmentation (an RLE of its image's size with sound counts, polygons
    within :data:`MAX_OVERHANG`). Structure this cannot follow is left to
    ``from_coco``, which names it."""
    sizes: dict[Any, tuple[int, int]] = {}
    images = dataset.get("images")
    for n, image in enumerate(images if isinstance(images, list) else []):
        if not isinstance(image, Mapping) or not {"width", "height"} <= image.keys():
            continue
        where = f"image {image.get('id', n)!r} ({image.get('file_name')})"
        try:
            width = dimension(image["width"], "width")
            height = dimension(image["height"], "height")
            if width <= 0 or height <= 0:
                raise GeometryError(f"image size {width}x{height} is not positive")
            check_size(width, height, max_pixels)
        except GeometryError as exc:
            raise GeometryError(f"{where}: {exc}") from None
        if isinstance(image.get("id"), (int, str)):
            sizes[image["id"]] = (width, height)
    annotations = dataset.get("annotations")
    for n, ann in enumerate(annotations if isinstance(annotations, list) else []):
        if not isinstance(ann, Mapping) or not ann.get("segmentation"):
            continue
        image_id = ann.get("image_id")
        size = sizes.get(image_id) if isinstance(image_id, (int, str)) else None
        if size is not None:  # else from_coco names an annotation of no image
            where = f"annotation {ann.get('id', n)!r} (image {image_id!r})"
            try:
                _check_segmentation(ann["segmentation"], *size)
            except GeometryError as exc:
                raise GeometryError(f"{where}: {exc}") from None


def _check_segmentation(segmentation: Any, width: int, height: int) -> None:
    """A COCO segmentation of a ``width`` x ``height`` image: an RLE (counts
    compressed or, as COCO writes crowds, a list) or polygons as flat lists."""
    if isinstance(segmentation, Mapping):
        problem = rle_problem(segmentation, width, height, uncompressed=True)
        if problem:
            raise GeometryError(f"segmentation {problem}")
        return
    for n, flat in enumerate(segmentation if isinstance(segmentation, list) else []):
        what = f"segmentation polygon {n}"
        if not isinstance(flat, list) or len(flat) % 2:
            raise GeometryError(f"{what} must be a flat list [x, y, ...]")
        try:
            vertices = list(zip(flat[0::2], flat[1::2], strict=True))
            check_region(n, Prediction(RegionType.POLYGON, "", vertices), width, height)
        except (GeometryError, PredictionError) as exc:
            raise GeometryError(f"{what}: {str(exc).split(': ', 1)[-1]}") from None
