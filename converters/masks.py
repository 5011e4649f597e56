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

POLYGON_TOLERANCE_PX = 1.0
"""approxPolyDP tolerance: vertices may move up to one pixel, which keeps the shape
within a pixel of the mask while dropping the vertices of straight runs."""

MIN_POLYGON_VERTICES = 3
"""Fewer vertices than this is not an area; such contours are dropped."""

BRUSH_ON_VALUE = 255
"""Label Studio brush masks are 0/255 (the alpha channel); anything else is off."""

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


def brush_rle_to_mask(rle: Sequence[int], width: int, height: int) -> np.ndarray:
    """Label Studio brush RLE -> ``(H, W)`` uint8 mask of 0/1.

    ``width``/``height`` are the result's ``original_width``/``original_height``.
    """
    flat = _brush_module().decode_rle(list(rle))
    expected = int(width) * int(height) * 4
    if flat.size != expected:
        raise MaskError(
            f"brush RLE holds {flat.size} values, expected {expected} for a "
            f"{width}x{height} RGBA image (check original_width/original_height)"
        )
    return (flat.reshape(int(height), int(width), 4)[:, :, 3] > 0).astype(np.uint8)


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
