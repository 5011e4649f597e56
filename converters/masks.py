"""Pure functions between the forms a mask takes, always at the original image size.

Forms:
    * binary mask: numpy ``(H, W)`` array, nonzero = inside.
    * COCO RLE: ``{"size": [H, W], "counts": str}`` (pycocotools compressed RLE),
      the form :class:`converters.prediction.Prediction` carries.
    * Label Studio brush RLE: a list of ints, LS's bit-packed RLE of the flattened
      ``(H, W, 4)`` RGBA array (LS reads the alpha channel). Not COCO RLE.
    * polygons: lists of ``(x, y)`` vertices, pixels of the original image, where
      pixel ``i`` spans ``i .. i + 1``.

This is the one module that touches the SDK's brush helpers (an odd import path
inside ``label_studio_sdk.converter``) and OpenCV; both are imported lazily so
``import converters`` stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

import numpy as np

from converters.geometry import MAX_IMAGE_PIXELS

POLYGON_TOLERANCE_PX = 1.0
"""approxPolyDP tolerance: vertices may move up to one pixel, which keeps the shape
within a pixel of the mask while dropping the vertices of straight runs."""

MIN_POLYGON_VERTICES = 3
"""Fewer vertices than this is not an area; such contours are dropped."""

BRUSH_ON_VALUE = 255
"""Label Studio brush masks are 0/255 (the alpha channel); anything else is off."""

MAX_MASK_PIXELS = MAX_IMAGE_PIXELS
"""Largest brush mask decoded (width x height): the image pixel limit, so a mask
never costs more than the image it belongs to (4 bytes a pixel while decoding)."""

BRUSH_MAX_WORD_BITS = 8
"""Brush RLE values are RGBA bytes (Label Studio writes 8-bit words)."""

PIXEL_CENTRE = 0.5
"""OpenCV contours run through boundary pixel indices; adding half a pixel puts the
vertices on the pixel centres in the ``pixel i spans i..i+1`` convention."""

Polygon = list[tuple[float, float]]


@cache
def _coco_mask() -> Any:
    """``pycocotools.mask``, imported on first use: the engines import
    ``converters`` in environments (``.venv-vllm``, a slim GPU image) that never
    touch masks and need not carry pycocotools."""
    try:
        from pycocotools import mask
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "mask conversion needs pycocotools: pip install pycocotools"
        ) from exc
    return mask


class MaskError(ValueError):
    """A mask, RLE or polygon was malformed; the message names the bad part."""


# Binary mask <-> COCO RLE -----------------------------------------------------
def _binary(mask: Any) -> np.ndarray:
    array = np.asarray(mask)
    if array.ndim != 2:
        raise MaskError(f"a mask must be a 2-D (H, W) array, got shape {array.shape}")
    return np.asfortranarray(array != 0, dtype=np.uint8)


def _coco_rle(rle: Mapping[str, Any]) -> dict[str, Any]:
    """The RLE in the form pycocotools reads (counts as bytes), checked."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise MaskError(
            f"a COCO RLE must be {{'size': [h, w], 'counts': ...}}, got {rle!r}"
        )
    size = [int(v) for v in rle["size"]]
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE: compress it
        return _coco_mask().frPyObjects({"size": size, "counts": counts}, *size)
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": size, "counts": counts}


def _plain(rle: Mapping[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(v) for v in rle["size"]], "counts": counts}


def mask_to_rle(mask: Any) -> dict[str, Any]:
    """Binary ``(H, W)`` mask -> COCO compressed RLE with ``counts`` as str."""
    return _plain(_coco_mask().encode(_binary(mask)))


def rle_to_mask(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO RLE (compressed or uncompressed) -> ``(H, W)`` uint8 mask of 0/1."""
    return _coco_mask().decode(_coco_rle(rle))


def rle_area(rle: Mapping[str, Any]) -> int:
    """Pixel count of a COCO RLE."""
    return int(_coco_mask().area(_coco_rle(rle)))


def rle_bbox(rle: Mapping[str, Any]) -> tuple[float, float, float, float]:
    """Bounding box ``(x0, y0, x1, y1)`` of a COCO RLE, pixels (pixel i spans i..i+1).

    An empty mask gives ``(0, 0, 0, 0)``.
    """
    x, y, w, h = (float(v) for v in _coco_mask().toBbox(_coco_rle(rle)))
    return (x, y, x + w, y + h)


def box_to_rle(box: Sequence[float], width: int, height: int) -> dict[str, Any]:
    """COCO RLE of the pixels inside box ``(x0, y0, x1, y1)`` (pixels)."""
    x0, y0, x1, y1 = box
    return polygon_to_rle([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], width, height)


# Label Studio brush RLE -------------------------------------------------------
def _brush_module():
    from label_studio_sdk.converter import brush  # lazy: pulls in pandas et al.

    return brush


def mask_to_brush_rle(mask: Any) -> list[int]:
    """Binary ``(H, W)`` mask -> Label Studio brush RLE (list of ints)."""
    on = _binary(mask)
    return _brush_module().mask2rle(np.ascontiguousarray(on) * np.uint8(BRUSH_ON_VALUE))


def brush_rle_to_mask(
    rle: Sequence[int], width: int, height: int, *, max_pixels: int = MAX_MASK_PIXELS
) -> np.ndarray:
    """Label Studio brush RLE -> ``(H, W)`` uint8 mask of 0/1.

    ``width``/``height`` are the result's ``original_width``/``original_height``.
    The RLE's header (its value count) is checked against ``width x height x 4``
    and the size against ``max_pixels`` before anything is allocated, and no run
    may reach past the declared count, so a short RLE cannot claim gigabytes.
    """
    width, height = _brush_size(width, height, max_pixels)
    bits = _BrushBits(rle)
    count = bits.read(32)
    expected = width * height * 4
    if count != expected:
        raise MaskError(
            f"brush RLE holds {count} values, expected {expected} for a "
            f"{width}x{height} RGBA image (check original_width/original_height)"
        )
    return _brush_alpha(bits, count).reshape(height, width)


def _brush_size(width: Any, height: Any, max_pixels: int) -> tuple[int, int]:
    """``(width, height)`` as positive ints within ``max_pixels``, else MaskError."""
    try:
        w, h = int(width), int(height)
    except (TypeError, ValueError):
        raise MaskError(
            f"brush size must be integers, got {width!r}x{height!r}"
        ) from None
    if w <= 0 or h <= 0:
        raise MaskError(f"brush size must be positive, got {w}x{h}")
    if w * h > max_pixels:
        raise MaskError(
            f"brush mask of {_number(w)}x{_number(h)} pixels is more than the "
            f"limit of {max_pixels} (MAX_MASK_PIXELS)"
        )
    return w, h


def _number(value: int) -> str:
    """An int for a message: exact up to 12 digits, else like ``1.000e+300``."""
    return str(value) if abs(value) < 10**12 else f"{value:.3e}"


class _BrushBits:
    """The bit stream of a brush RLE (a list of bytes), read most significant
    bit first, as ``label_studio_sdk.converter.brush.decode_rle`` reads it."""

    def __init__(self, rle: Sequence[int]) -> None:
        try:
            data = np.asarray(rle, dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise MaskError("brush RLE must be a list of integers 0..255") from None
        if data.ndim != 1 or (data.size and (data.min() < 0 or data.max() > 255)):
            raise MaskError("brush RLE must be a list of integers 0..255")
        bits = np.unpackbits(data.astype(np.uint8)) + np.uint8(ord("0"))
        self._text = bits.tobytes().decode("ascii")
        self._position = 0

    def read(self, size: int) -> int:
        """The next ``size`` bits as an unsigned int; MaskError past the end."""
        end = self._position + size
        if end > len(self._text):
            raise MaskError(
                f"brush RLE ends early: {len(self._text) // 8} bytes are too few "
                "for the values it declares"
            )
        value = int(self._text[self._position : end], 2)
        self._position = end
        return value


def _brush_alpha(bits: _BrushBits, count: int) -> np.ndarray:
    """Decode the ``count`` RGBA values after the count field, keeping only the
    alpha channel (one byte a pixel) as 0/1. A run that overruns ``count`` is
    a MaskError."""
    word_size = bits.read(5) + 1
    if word_size > BRUSH_MAX_WORD_BITS:
        raise MaskError(
            f"brush RLE words are {word_size} bits; values are bytes "
            f"(at most {BRUSH_MAX_WORD_BITS} bits)"
        )
    run_sizes = [bits.read(4) + 1 for _ in range(4)]
    alpha = np.zeros(count // 4, dtype=np.uint8)
    i = 0
    while i < count:
        repeated = bits.read(1)
        end = i + 1 + bits.read(run_sizes[bits.read(2)])
        if end > count:
            raise MaskError(
                f"brush RLE run reaches value {end}, past the {count} it declares"
            )
        first, last = _alpha_pixels(i, end)
        if repeated:
            alpha[first:last] = bits.read(word_size) > 0
        else:
            values = [bits.read(word_size) for _ in range(end - i)]
            alpha[first:last] = [v > 0 for v in values[(3 - i) % 4 :: 4]]
        i = end
    return alpha


def _alpha_pixels(start: int, end: int) -> tuple[int, int]:
    """The pixels whose alpha value (value ``4 p + 3``) lies in ``start..end-1``."""
    return -((3 - start) // 4), -((3 - end) // 4)


def rle_to_brush_rle(rle: Mapping[str, Any]) -> list[int]:
    """COCO RLE -> Label Studio brush RLE."""
    return mask_to_brush_rle(rle_to_mask(rle))


def brush_rle_to_rle(rle: Sequence[int], width: int, height: int) -> dict[str, Any]:
    """Label Studio brush RLE -> COCO RLE."""
    return mask_to_rle(brush_rle_to_mask(rle, width, height))


# Polygons ---------------------------------------------------------------------
def mask_to_polygons(
    mask: Any,
    *,
    tolerance: float = POLYGON_TOLERANCE_PX,
    largest_only: bool = True,
) -> list[Polygon]:
    """Simplified outer contours of a binary mask, largest first.

    Vertices sit on boundary pixel centres (``index + 0.5``), so the polygon lies
    about half a pixel inside the mask edge. ``tolerance`` is the approxPolyDP
    epsilon in pixels. With ``largest_only`` only the contour of largest area is
    returned (an empty list for an empty mask).
    """
    import cv2  # lazy: heavy, and only mask paths need it

    on = np.ascontiguousarray(_binary(mask))
    contours, _ = cv2.findContours(on, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    polygons: list[Polygon] = []
    for contour in contours:
        simple = cv2.approxPolyDP(contour, float(tolerance), True).reshape(-1, 2)
        if len(simple) < MIN_POLYGON_VERTICES:
            continue
        polygons.append(
            [(float(x) + PIXEL_CENTRE, float(y) + PIXEL_CENTRE) for x, y in simple]
        )
        if largest_only:
            break
    return polygons


def mask_to_polygon(
    mask: Any, *, tolerance: float = POLYGON_TOLERANCE_PX
) -> Polygon | None:
    """The largest simplified contour of a mask, or None for an empty/too small mask."""
    polygons = mask_to_polygons(mask, tolerance=tolerance, largest_only=True)
    return polygons[0] if polygons else None


def _flat(polygon: Sequence[Sequence[float]]) -> list[float]:
    if len(polygon) < MIN_POLYGON_VERTICES:
        raise MaskError(
            f"a polygon needs at least {MIN_POLYGON_VERTICES} vertices, "
            f"got {len(polygon)}"
        )
    return [float(v) for point in polygon for v in point]


def polygon_to_rle(
    polygon: Sequence[Sequence[float]], width: int, height: int
) -> dict[str, Any]:
    """COCO RLE of a polygon ``[(x, y), ...]`` (pixels), rasterised as COCO does."""
    rles = _coco_mask().frPyObjects([_flat(polygon)], int(height), int(width))
    return _plain(_coco_mask().merge(rles))


def polygon_to_mask(
    polygon: Sequence[Sequence[float]], width: int, height: int
) -> np.ndarray:
    """``(H, W)`` uint8 0/1 mask of a polygon, rasterised as COCO does."""
    return rle_to_mask(polygon_to_rle(polygon, width, height))


# Tiles ------------------------------------------------------------------------
def rle_paste(
    rle: Mapping[str, Any], left: int, top: int, width: int, height: int
) -> dict[str, Any]:
    """The COCO RLE of a crop's mask placed at ``(left, top)`` in a ``width`` x
    ``height`` image (pixels), all else off.

    Built from the crop's runs, column by column, without allocating the large
    image: a tile's mask costs its own size even in a 60-megapixel photo.
    Raises MaskError when the crop does not fit inside the image there.
    """
    crop = rle_to_mask(rle)
    crop_height, crop_width = crop.shape
    if left < 0 or top < 0 or left + crop_width > width or top + crop_height > height:
        raise MaskError(
            f"a {crop_width}x{crop_height} mask at ({left}, {top}) does not fit "
            f"in a {width}x{height} image"
        )
    # Column-major, as COCO counts: each crop column, then one stand-in value
    # for the off pixels below it and above the next column (their count as
    # its weight); the last stands for everything after the crop.
    values = np.zeros((crop_height + 1, crop_width), np.uint8)
    values[:crop_height] = crop
    values = values.ravel(order="F")
    weights = np.ones(values.size, np.int64)
    weights[crop_height :: crop_height + 1] = height - crop_height
    weights[-1] = (height - top - crop_height) + (width - left - crop_width) * height
    kept = weights > 0
    values, weights = values[kept], weights[kept]
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    runs = np.add.reduceat(weights, starts)
    before = left * height + top
    if values[0]:
        runs = np.r_[before, runs]
    else:
        runs[0] += before
    return _plain(
        _coco_mask().frPyObjects(
            {"size": [height, width], "counts": [int(v) for v in runs]}, height, width
        )
    )


def rle_union(rles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The COCO RLE of the pixels on in any of ``rles`` (all the same size)."""
    if not rles:
        raise MaskError("a union needs at least one mask")
    sizes = {tuple(int(v) for v in rle["size"]) for rle in rles}
    if len(sizes) > 1:
        raise MaskError(f"masks to unite differ in size: {sorted(sizes)}")
    return _plain(_coco_mask().merge([_coco_rle(rle) for rle in rles], intersect=0))
