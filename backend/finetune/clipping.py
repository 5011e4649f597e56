"""Annotated geometry kept inside its image: clipped, or dropped with a warning.

Label Studio lets a region hang over the image's edge (a box dragged past it,
a keypoint clicked on the margin). The model's bins clamp to 0..999 anyway, so
a training answer never points outside the image; clipping here makes that
explicit and says so, and a region with nothing left inside is dropped rather
than squashed onto the edge. Pixels of the original image throughout.
"""

from __future__ import annotations

from converters.prediction import Prediction, RegionType

EDGE_TOLERANCE_PX = 0.5
"""How far past the edge a coordinate may lie and still count as on the edge:
Label Studio stores percentages, and their float noise (``100.0000001%``)
is not an annotator's mistake worth a warning. It is clamped silently."""


def _clamp(value: float, size: float) -> float:
    return min(max(value, 0.0), size)


def _outside(value: float, size: float) -> bool:
    return value < -EDGE_TOLERANCE_PX or value > size + EDGE_TOLERANCE_PX


def _point_inside(point: tuple[float, float], width: float, height: float) -> bool:
    return not (_outside(point[0], width) or _outside(point[1], height))


def _clip_box(box, width: float, height: float):
    x0, y0, x1, y1 = box
    return (
        _clamp(x0, width),
        _clamp(y0, height),
        _clamp(x1, width),
        _clamp(y1, height),
    )


def _box_left(box) -> bool:
    """What is left of a clipped box is more than a sliver along the edge."""
    return box[2] - box[0] > EDGE_TOLERANCE_PX and box[3] - box[1] > EDGE_TOLERANCE_PX


def clip_region(
    region: Prediction, width: float, height: float, where: str
) -> tuple[Prediction | None, list[str]]:
    """``region`` inside a ``width`` x ``height`` image, and what was done.

    - box (or keypoint instance's box): clamped to the image; dropped when
      what is left inside is no wider or higher than the tolerance;
    - polygon: each vertex clamped; dropped when the clamped outline's bounds
      are no wider or higher than the tolerance;
    - point: dropped when outside (a point has no part inside to keep);
    - keypoint joint outside: not visible (``None``), the instance kept.

    Returns ``(region or None, warnings)``; each warning starts with
    ``where`` (``task 3 region 'b1'``). Nothing within
    :data:`EDGE_TOLERANCE_PX` of the edge is reported.
    """
    warnings: list[str] = []
    kind = region.type
    if kind is RegionType.POINT:
        if not _point_inside(region.coords, width, height):
            return None, [f"{where}: dropped, the point lies outside the image"]
        x, y = region.coords
        return region.with_(coords=(_clamp(x, width), _clamp(y, height))), []
    if kind is RegionType.POLYGON:
        vertices = tuple(
            (_clamp(x, width), _clamp(y, height)) for x, y in region.coords
        )
        clipped = region.with_(coords=vertices)
        if all(_point_inside(p, width, height) for p in region.coords):
            return clipped, []
        if not _box_left(clipped.bbox):
            return None, [f"{where}: dropped, the polygon lies outside the image"]
        return clipped, [f"{where}: polygon clipped to the image"]
    box = _clip_box(region.coords, width, height)
    x0, y0, x1, y1 = region.coords
    corners = ((x0, y0), (x1, y1))
    if not all(_point_inside(p, width, height) for p in corners):
        if not _box_left(box):
            return None, [f"{where}: dropped, the box lies outside the image"]
        warnings.append(f"{where}: box clipped to the image")
    changes: dict = {"coords": box}
    if kind is RegionType.KEYPOINT:
        joints = {}
        for name, point in (region.keypoints or {}).items():
            if point is not None and not _point_inside(point, width, height):
                warnings.append(
                    f"{where}: joint {name!r} lies outside the image; "
                    "written as not visible"
                )
                point = None
            elif point is not None:
                point = (_clamp(point[0], width), _clamp(point[1], height))
            joints[name] = point
        changes["keypoints"] = joints
    return region.with_(**changes), warnings
