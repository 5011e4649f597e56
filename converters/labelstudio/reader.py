"""Label Studio results -> canonical predictions: :func:`from_labelstudio`.

Reads annotation or prediction results back into pixels of the original
image and reports what it skipped. The conventions (percent coordinates,
rotation, shared ids) are in :mod:`converters.labelstudio`; which result types
hold regions comes from :mod:`converters.tags`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from converters import masks
from converters.keypoint_sets import guess_keypoint_set
from converters.labelstudio.base import PERCENT, LabelStudioError
from converters.prediction import ParseResult, Prediction, PredictionError, RegionType
from converters.tags import (
    LABELS_TYPE,
    REGION_TAGS_BY_TYPE,
    TEXT_TYPE,
    Geometry,
    geometry_types,
)

_KEYPOINT_TYPES = geometry_types(Geometry.KEYPOINT)
_BRUSH_TYPES = geometry_types(Geometry.BRUSH)
_KNOWN_TYPES = frozenset(REGION_TAGS_BY_TYPE) | {LABELS_TYPE, TEXT_TYPE}
"""Result types that describe a region: its geometry, labels or text."""


class _Region:
    """The results sharing one id, gathered before they become a prediction."""

    __slots__ = (
        "geometry",
        "label",
        "labels_geometry",
        "parent",
        "rid",
        "score",
        "text",
    )

    def __init__(self, rid: str) -> None:
        self.rid = rid
        self.geometry: dict | None = None
        self.labels_geometry: dict | None = None
        self.label: str | None = None
        self.text: str | None = None
        self.score: float | None = None
        self.parent: str | None = None


def _labels_of(value: Mapping[str, Any], kind: str) -> list[str] | None:
    """The labels a result gives its region, or None if it gives none: a
    labelled region tag's result keeps them under its type (``rectanglelabels``),
    as the ``labels`` result does."""
    tag = REGION_TAGS_BY_TYPE.get(kind)
    labelled = kind == LABELS_TYPE or (tag is not None and tag.labelled)
    if not labelled or kind not in value:
        return None
    labels = value[kind]
    return [labels] if isinstance(labels, str) else [str(v) for v in labels]


class _Reader:
    def __init__(self, width: int | None, height: int | None) -> None:
        self.width = width
        self.height = height
        self.warnings: list[str] = []

    def size(self, r: Mapping[str, Any], where: str) -> tuple[float, float]:
        width = r.get("original_width", self.width)
        height = r.get("original_height", self.height)
        if not width or not height:
            raise LabelStudioError(
                f"{where} has no original_width/original_height and none was given"
            )
        return float(width), float(height)

    def prediction(self, region: _Region, joints: list[_Region]) -> Prediction | None:
        where = f"region {region.rid!r}"
        r = region.geometry or region.labels_geometry
        label = region.label if region.label is not None else ""
        if r is None:
            self.warnings.append(f"skipped {where}: it has no geometry")
            return None
        kind, value = r["type"], r.get("value") or {}
        width, height = self.size(r, where)
        sx, sy = width / PERCENT, height / PERCENT
        common = {"label": label, "score": region.score, "text": region.text}
        if kind in _BRUSH_TYPES:
            if value.get("format", "rle") != "rle" or "rle" not in value:
                self.warnings.append(f"skipped {where}: brush is not in rle format")
                return None
            rle = masks.brush_rle_to_rle(value["rle"], int(width), int(height))
            return Prediction(
                type=RegionType.BOX, coords=masks.rle_bbox(rle), mask=rle, **common
            )
        if "points" in value:
            points = [(x * sx, y * sy) for x, y in value["points"]]
            return Prediction(type=RegionType.POLYGON, coords=points, **common)
        if "height" not in value:  # a keypoint
            point = (value["x"] * sx, value["y"] * sy)
            if joints:
                self.warnings.append(f"{where}: keypoints cannot be parents; ignored")
            return Prediction(type=RegionType.POINT, coords=point, **common)
        x, y = value["x"] * sx, value["y"] * sy
        w, h = value["width"] * sx, value["height"] * sy
        rotation = float(value.get("rotation") or 0.0)
        if rotation:
            if joints:
                self.warnings.append(f"{where}: joints of a rotated box are ignored")
            return Prediction(
                type=RegionType.POLYGON,
                coords=_rotated_corners(x, y, w, h, rotation),
                **common,
            )
        box = (x, y, x + w, y + h)
        if not joints:
            return Prediction(type=RegionType.BOX, coords=box, **common)
        keypoints = {}
        for joint in joints:
            jw, jh = self.size(joint.geometry, f"joint {joint.rid!r}")
            jv = joint.geometry["value"]
            keypoints[joint.label or ""] = (
                jv["x"] * jw / PERCENT,
                jv["y"] * jh / PERCENT,
            )
        return Prediction(
            type=RegionType.KEYPOINT,
            coords=box,
            keypoints=_ordered(keypoints),
            **common,
        )


def _rotated_corners(
    x: float, y: float, w: float, h: float, degrees: float
) -> list[tuple[float, float]]:
    """Corners of a ``w x h`` box (pixels) rotated ``degrees`` clockwise about its
    top-left corner ``(x, y)``; y points down, so the usual matrix turns clockwise."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return [
        (x + dx * c - dy * s, y + dx * s + dy * c)
        for dx, dy in ((0.0, 0.0), (w, 0.0), (w, h), (0.0, h))
    ]


def _ordered(keypoints: dict[str, tuple[float, float]]) -> dict:
    """Joints in the order of their keypoint set, named as the set names them
    (matched by ``joint_key``: case, ``_``, ``-``; missing joints None); names
    that are no joint of the set follow as found."""
    kp_set = guess_keypoint_set(keypoints)
    if kp_set is None:
        return keypoints
    found: dict = {}
    others: dict = {}
    for name, xy in keypoints.items():
        joint = kp_set.joint_for(name)
        if joint is None:
            others[name] = xy
        else:
            found[joint] = xy
    return {**{j: found.get(j) for j in kp_set.joints}, **others}


def from_labelstudio(
    results: Iterable[Mapping[str, Any]],
    *,
    width: int | None = None,
    height: int | None = None,
) -> ParseResult:
    """Canonical predictions (pixels) from Label Studio annotation/prediction results.

    * Results are grouped by ``id``: a ``textarea`` gives its region ``text``, a
      ``labels`` result its label; the geometry comes from the region's
      rectangle/polygon/keypoint/brush result (or from the ``labels`` result).
    * ``keypointlabels`` with a ``parentID`` become the joints of that parent
      rectangle: one keypoint instance (``instance_id`` = label + running number,
      joints in keypoint-set order with missing ones None). Keypoints without a
      parent become points.
    * Brush RLE becomes a box (the mask's bounding box) carrying the COCO RLE.
    * A rotated rectangle becomes a 4-corner polygon (rotation is degrees
      clockwise about the top-left corner).
    * Pixels use each result's ``original_width``/``original_height``: Label
      Studio reports the size after EXIF transpose, i.e. as it shows the image.
      ``width``/``height`` are the fallback for results without them.

    Nothing is raised for results of other kinds (``choices``, ``number``,
    whole-image ``textarea``, ...) or regions that fail validation: they are
    skipped and each gets one line in ``ParseResult.warnings``.
    """
    reader = _Reader(width, height)
    regions: dict[str, _Region] = {}
    for i, r in enumerate(results):
        kind = str(r.get("type", "")).lower() if isinstance(r, Mapping) else ""
        if kind not in _KNOWN_TYPES:
            what = r.get("type") if isinstance(r, Mapping) else type(r).__name__
            reader.warnings.append(
                f"skipped result {i} (type {what!r}): not a region type rexlabel reads"
            )
            continue
        rid = str(r["id"]) if r.get("id") is not None else f"#{i}"
        region = regions.get(rid)
        if region is None:
            region = regions[rid] = _Region(rid)
        value = r.get("value") or {}
        if region.score is None and isinstance(r.get("score"), (int, float)):
            region.score = float(r["score"])
        if r.get("parentID") is not None:
            region.parent = str(r["parentID"])
        labels = _labels_of(value, kind)
        if labels is not None and region.label is None:
            region.label = labels[0] if labels else ""
            if len(labels) > 1:
                reader.warnings.append(
                    f"region {rid!r} has several labels {labels}; kept the first"
                )
        if kind == TEXT_TYPE:
            text = value.get("text")
            region.text = "\n".join(text) if isinstance(text, list) else text
            if "x" in value or "points" in value:
                region.labels_geometry = region.labels_geometry or r
        elif kind == LABELS_TYPE:
            region.labels_geometry = r
        elif region.geometry is None:
            region.geometry = r
    joints: dict[str, list[_Region]] = {}
    standalone: list[_Region] = []
    for region in regions.values():
        geometry = region.geometry
        is_joint = geometry is not None and geometry["type"] in _KEYPOINT_TYPES
        if is_joint and region.parent is not None:
            if region.parent in regions:
                joints.setdefault(region.parent, []).append(region)
                continue
            reader.warnings.append(
                f"keypoint {region.rid!r} names parent {region.parent!r}, which is "
                "not among the results; read as a point"
            )
        standalone.append(region)
    predictions: list[Prediction] = []
    counters: dict[str, int] = {}
    for region in standalone:
        if region.geometry is None and region.labels_geometry is None:
            reader.warnings.append(
                f"skipped region {region.rid!r}: text or labels without geometry "
                "(whole-image result)"
            )
            continue
        try:
            prediction = reader.prediction(region, joints.get(region.rid, []))
        except (
            PredictionError,
            LabelStudioError,
            masks.MaskError,
            KeyError,
            TypeError,
            ValueError,
        ) as error:
            reader.warnings.append(f"skipped region {region.rid!r}: {error}")
            continue
        if prediction is None:
            continue
        if prediction.type is RegionType.KEYPOINT:
            n = counters[prediction.label] = counters.get(prediction.label, 0) + 1
            prediction.instance_id = f"{prediction.label}{n}"
        predictions.append(prediction)
    return ParseResult(predictions=predictions, warnings=reader.warnings)
