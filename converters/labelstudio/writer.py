"""Canonical predictions <-> Label Studio result dicts (protocol section 2).

Label Studio coordinates are percent (0..100) of the original image after EXIF
transpose; ``x``/``y`` are the top-left corner and ``rotation`` is degrees
clockwise about ``(x, y)``. All results that describe one region share an ``id``.

* :func:`to_labelstudio` writes the results of one control tag for one image.
  It is on the hot path (every region of every task), so it builds plain dicts
  with precomputed factors: no pydantic, no SDK objects per region.
* :func:`to_labelstudio_prediction` wraps the results of one task as a
  prediction ``{"result", "score", "model_version"}``.
* :func:`from_labelstudio` reads annotation or prediction results back into
  canonical predictions (pixels) and reports what it skipped.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

from converters import masks
from converters.keypoint_sets import guess_keypoint_set
from converters.prediction import ParseResult, Prediction, PredictionError, RegionType

KEYPOINT_SIZE_PERCENT = 0.5
"""``width`` of a keypoint result (point size, percent of the image width): the
size Label Studio's own examples use, visible without hiding the joint."""

IMAGE_ROTATION = 0
"""Regions refer to the image as Label Studio shows it; we never rotate it."""

LabelMap = Mapping[str, str | None] | Callable[[str], str | None] | None
"""Model phrase -> config label. A dict keeps phrases it lacks unchanged; a
callable decides for every phrase. A value of None drops the region (or joint)."""


class Output(str, Enum):
    """The kind of Label Studio result :func:`to_labelstudio` writes."""

    RECTANGLE_LABELS = "rectanglelabels"
    POLYGON_LABELS = "polygonlabels"
    BRUSH_LABELS = "brushlabels"
    KEYPOINT_LABELS = "keypointlabels"
    LABELS = "labels"
    """The stock OCR template: a ``rectangle``/``polygon``/``keypoint`` geometry
    result (from ``geometry_from_name``) plus a ``labels`` result, one id."""


_INFERRED_OUTPUT = {
    RegionType.BOX: Output.RECTANGLE_LABELS,
    RegionType.POLYGON: Output.POLYGON_LABELS,
    RegionType.POINT: Output.KEYPOINT_LABELS,
    RegionType.KEYPOINT: Output.KEYPOINT_LABELS,
}


class LabelStudioError(ValueError):
    """A prediction cannot be written as the requested result, or a result is
    unreadable; the message names the region and the reason."""


# to_labelstudio -------------------------------------------------------------------
def _mapper(label_map: LabelMap) -> Callable[[str], str | None]:
    """A cached phrase -> label function for one call."""
    cache: dict[str, str | None] = {}
    if label_map is None:
        return lambda phrase: phrase
    if callable(label_map):
        lookup = label_map
    elif isinstance(label_map, Mapping):

        def lookup(phrase: str) -> str | None:
            return label_map.get(phrase, phrase)
    else:
        raise TypeError(
            f"label_map must be a dict, a callable or None, got {type(label_map)}"
        )

    def mapped(phrase: str) -> str | None:
        try:
            return cache[phrase]
        except KeyError:
            cache[phrase] = result = lookup(phrase)
            return result

    return mapped


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 100.0 if value > 100.0 else value


class _Writer:
    """Per-call state: factors, names, id seed. One instance per to_labelstudio."""

    def __init__(
        self,
        *,
        from_name: str,
        to_name: str,
        width: int,
        height: int,
        label_map: LabelMap,
        text_from_name: str | None,
        geometry_from_name: str | None,
        keypoint_box_from_name: str | None,
        point_size: float,
        polygon_tolerance: float,
        id_seed: str = "",
    ) -> None:
        if not (width > 0 and height > 0):
            raise LabelStudioError(
                f"image width and height must be positive, got {width}x{height}"
            )
        self.from_name = from_name
        self.to_name = to_name
        self.width = int(width)
        self.height = int(height)
        self.fx = 100.0 / width
        self.fy = 100.0 / height
        self.label = _mapper(label_map)
        self.text_from_name = text_from_name
        self.geometry_from_name = geometry_from_name
        self.keypoint_box_from_name = keypoint_box_from_name
        self.point_size = float(point_size)
        self.polygon_tolerance = polygon_tolerance
        seed = f"{id_seed}\x00{from_name}" if id_seed else from_name
        self.seed = zlib.crc32(seed.encode("utf-8"))
        self.prefix = ""

    # ids: a digest of the whole call (from_name, labels, geometry) followed by
    # the index: stable for the same input, unique within the call, alphanumeric.
    def digest(self, predictions: Sequence[Prediction]) -> str:
        crc = self.seed
        for p in predictions:
            c = p.coords
            kind = p.type
            if kind is RegionType.POLYGON:
                data = _pack4(*c[0], *c[-1])
            elif kind is RegionType.POINT:
                data = _pack4(*c, *c)
            else:
                data = _pack4(*c)
            crc = zlib.crc32(p.label.encode(), zlib.crc32(data, crc))
        return f"{crc:08x}"

    def result(
        self, rid: str, from_name: str, kind: str, value: dict, score: float | None
    ) -> dict[str, Any]:
        out = {
            "id": rid,
            "from_name": from_name,
            "to_name": self.to_name,
            "type": kind,
            "original_width": self.width,
            "original_height": self.height,
            "image_rotation": IMAGE_ROTATION,
            "value": value,
        }
        if score is not None:
            out["score"] = score
        return out

    # geometry values (percent, clamped to 0..100) --------------------------------
    def rect_value(self, box: Sequence[float]) -> dict[str, Any]:
        x0 = box[0] * self.fx
        y0 = box[1] * self.fy
        x1 = box[2] * self.fx
        y1 = box[3] * self.fy
        x0 = 0.0 if x0 < 0.0 else 100.0 if x0 > 100.0 else x0
        y0 = 0.0 if y0 < 0.0 else 100.0 if y0 > 100.0 else y0
        x1 = 0.0 if x1 < 0.0 else 100.0 if x1 > 100.0 else x1
        y1 = 0.0 if y1 < 0.0 else 100.0 if y1 > 100.0 else y1
        return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "rotation": 0}

    def poly_value(self, points: Iterable[Sequence[float]]) -> dict[str, Any]:
        fx, fy = self.fx, self.fy
        return {
            "points": [
                [
                    0.0 if (u := x * fx) < 0.0 else 100.0 if u > 100.0 else u,
                    0.0 if (v := y * fy) < 0.0 else 100.0 if v > 100.0 else v,
                ]
                for x, y in points
            ],
            "closed": True,
        }

    def point_value(self, xy: Sequence[float]) -> dict[str, Any]:
        return {
            "x": _clamp(xy[0] * self.fx),
            "y": _clamp(xy[1] * self.fy),
            "width": self.point_size,
        }

    def polygon_of(self, p: Prediction) -> Sequence[Sequence[float]]:
        """Vertices for a polygon result: the polygon, the mask's largest
        contour, or the box corners (also when the mask is empty)."""
        if p.type is RegionType.POLYGON:
            return p.coords
        if p.mask is not None:
            self.check_mask(p)
            contour = masks.mask_to_polygon(
                masks.rle_to_mask(p.mask), tolerance=self.polygon_tolerance
            )
            if contour is not None:
                return contour
        x0, y0, x1, y1 = p.coords
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))

    def rle_of(self, p: Prediction) -> dict[str, Any]:
        """The region's mask: its own, else its rasterised polygon or box."""
        if p.mask is not None:
            self.check_mask(p)
            return p.mask
        if p.type is RegionType.POLYGON:
            return masks.polygon_to_rle(p.coords, self.width, self.height)
        return masks.box_to_rle(p.coords, self.width, self.height)

    def check_mask(self, p: Prediction) -> None:
        if list(p.mask["size"]) != [self.height, self.width]:
            raise LabelStudioError(
                f"mask of {p.label!r} is {p.mask['size']} (h, w) but the image is "
                f"[{self.height}, {self.width}]: masks must be at the original size"
            )

    # one prediction per method; each returns (id, value, its label key) so the
    # textarea can repeat the geometry.
    def rectangle(self, index: int, p: Prediction, label: str, out: list):
        kind = p.type
        if kind is RegionType.POINT:
            raise _unsupported(index, p, Output.RECTANGLE_LABELS)
        value = self.rect_value(p.coords if kind is not RegionType.POLYGON else p.bbox)
        value["rectanglelabels"] = [label]
        rid = self.prefix + str(index)
        out.append(self.result(rid, self.from_name, "rectanglelabels", value, p.score))
        return rid, value, "rectanglelabels"

    def polygon(self, index: int, p: Prediction, label: str, out: list):
        if p.type is RegionType.POINT:
            raise _unsupported(index, p, Output.POLYGON_LABELS)
        value = self.poly_value(self.polygon_of(p))
        value["polygonlabels"] = [label]
        rid = self.prefix + str(index)
        out.append(self.result(rid, self.from_name, "polygonlabels", value, p.score))
        return rid, value, "polygonlabels"

    def brush(self, index: int, p: Prediction, label: str, out: list):
        if p.type is RegionType.POINT:
            raise _unsupported(index, p, Output.BRUSH_LABELS)
        rle = self.rle_of(p)
        rid = self.prefix + str(index)
        value = {
            "format": "rle",
            "rle": masks.rle_to_brush_rle(rle),
            "brushlabels": [label],
        }
        out.append(self.result(rid, self.from_name, "brushlabels", value, p.score))
        return rid, None, None

    def keypoint(self, index: int, p: Prediction, label: str, out: list):
        if p.type is RegionType.KEYPOINT:
            return self.instance(index, p, label, out)
        if p.type is not RegionType.POINT:
            raise _unsupported(index, p, Output.KEYPOINT_LABELS)
        geometry = self.point_value(p.coords)
        rid = self.prefix + str(index)
        geometry["keypointlabels"] = [label]
        out.append(
            self.result(rid, self.from_name, "keypointlabels", geometry, p.score)
        )
        return rid, geometry, "keypointlabels"

    def labels(self, index: int, p: Prediction, label: str, out: list):
        """The stock OCR template: geometry result + labels result, one id."""
        kind = p.type
        if kind is RegionType.POLYGON:
            geometry, geometry_kind = self.poly_value(p.coords), "polygon"
        elif kind is RegionType.POINT:
            geometry, geometry_kind = self.point_value(p.coords), "keypoint"
        else:
            geometry, geometry_kind = self.rect_value(p.coords), "rectangle"
        rid = self.prefix + str(index)
        score = p.score
        if self.geometry_from_name is not None:
            out.append(
                self.result(
                    rid, self.geometry_from_name, geometry_kind, geometry, score
                )
            )
        value = {**geometry, "labels": [label]}
        out.append(self.result(rid, self.from_name, "labels", value, score))
        return rid, geometry, None

    def instance(self, index: int, p: Prediction, label: str, out: list):
        """A keypoint instance: one keypointlabels result per visible joint, with
        the instance rectangle as their parent when a box control is named.
        Without that rectangle there is no region for its text, which is dropped."""
        score = p.score
        rid = self.prefix + str(index)
        parent = geometry = None
        if self.keypoint_box_from_name is not None:
            geometry = self.rect_value(p.coords)
            value = {**geometry, "rectanglelabels": [label]}  # geometry: for text
            out.append(
                self.result(
                    rid, self.keypoint_box_from_name, "rectanglelabels", value, score
                )
            )
            parent = rid
        for j, (joint, xy) in enumerate((p.keypoints or {}).items()):
            if xy is None:
                continue
            joint_label = self.label(joint)
            if joint_label is None:
                continue
            value = {**self.point_value(xy), "keypointlabels": [joint_label]}
            result = self.result(
                f"{rid}k{j}", self.from_name, "keypointlabels", value, score
            )
            if parent is not None:
                result["parentID"] = parent
            out.append(result)
        return (rid, geometry, None) if parent is not None else (None, None, None)


def _output(value: Output | str) -> Output:
    try:
        return Output(value)
    except ValueError:
        choices = ", ".join(o.value for o in Output)
        raise LabelStudioError(f"output {value!r} is not one of: {choices}") from None


def _unsupported(index: int, p: Prediction, output: Output) -> LabelStudioError:
    return LabelStudioError(
        f"prediction {index} ({p.type.value} {p.label!r}) cannot be written as "
        f"{output.value}"
    )


_pack4 = struct.Struct("<4d").pack

_METHODS = {
    Output.RECTANGLE_LABELS: _Writer.rectangle,
    Output.POLYGON_LABELS: _Writer.polygon,
    Output.BRUSH_LABELS: _Writer.brush,
    Output.KEYPOINT_LABELS: _Writer.keypoint,
    Output.LABELS: _Writer.labels,
}


def to_labelstudio(
    predictions: Iterable[Prediction],
    *,
    from_name: str,
    to_name: str,
    width: int,
    height: int,
    output: Output | str | None = None,
    label_map: LabelMap = None,
    text_from_name: str | None = None,
    geometry_from_name: str | None = None,
    keypoint_box_from_name: str | None = None,
    point_size: float = KEYPOINT_SIZE_PERCENT,
    polygon_tolerance: float = masks.POLYGON_TOLERANCE_PX,
    id_seed: str = "",
) -> list[dict[str, Any]]:
    """Label Studio results for the predictions of one image and one control tag.

    Args:
        predictions: canonical predictions, pixels of the original image.
        from_name: the control tag (``RectangleLabels``, ``PolygonLabels``,
            ``BrushLabels``, ``KeyPointLabels``, or ``Labels`` for ``output="labels"``).
        to_name: the ``Image`` tag.
        width, height: original image size in pixels (after EXIF transpose).
        output: the result kind for every prediction; None infers it per
            prediction (box -> rectanglelabels, polygon -> polygonlabels,
            point and keypoint instance -> keypointlabels).

            * ``rectanglelabels``: boxes; polygons and keypoint instances as
              their bounding box. ``rotation`` is always 0.
            * ``polygonlabels``: polygons; boxes with a mask as the mask's largest
              simplified contour, boxes without one (or with an empty one) as
              their 4 corners.
            * ``brushlabels``: the mask as brush RLE; without a mask, the
              rasterised polygon or box.
            * ``keypointlabels``: points; keypoint instances as one result per
              visible joint labelled with the joint name.
            * ``labels``: the stock OCR form: a ``rectangle`` (``polygon`` for
              polygons, ``keypoint`` for points) result from
              ``geometry_from_name`` when given, plus a ``labels`` result.
            Points cannot be rectangles, polygons or brushes (LabelStudioError).
        label_map: see :data:`LabelMap`; applied to region labels and joint names.
        text_from_name: a per-region ``TextArea``: regions with ``text`` also get
            a ``textarea`` result with the same ``id`` (and the same geometry).
        geometry_from_name: the ``Rectangle``/``Polygon``/``KeyPoint`` tag of the
            ``labels`` form.
        keypoint_box_from_name: a ``RectangleLabels`` tag for keypoint instances:
            each instance becomes a rectangle and its joints carry that
            rectangle's id as ``parentID``. Without it joints stand alone (and
            read back as points).
        point_size: keypoint ``width``, percent.
        polygon_tolerance: approxPolyDP tolerance (pixels) for mask contours.
        id_seed: mixed into every region id, so two predictions of the same
            regions (a pre-annotation and an interactive answer) get different
            ids: Label Studio merges regions by id, and an accepted suggestion
            with an annotation region's id replaces that region.

    Returns:
        Plain result dicts with percent coordinates clamped to 0..100,
        ``original_width``/``original_height``/``image_rotation`` and ``score``
        when known. Region ids are stable for the same input: a crc32 of
        ``id_seed``, ``from_name`` and all labels and geometry, followed by the
        prediction's index (joints add ``k`` and the joint's index).
    """
    writer = _Writer(
        from_name=from_name,
        to_name=to_name,
        width=width,
        height=height,
        label_map=label_map,
        text_from_name=text_from_name,
        geometry_from_name=geometry_from_name,
        keypoint_box_from_name=keypoint_box_from_name,
        point_size=point_size,
        polygon_tolerance=polygon_tolerance,
        id_seed=id_seed,
    )
    predictions = list(predictions)
    writer.prefix = writer.digest(predictions)
    fixed = None if output is None else _METHODS[_output(output)]
    inferred = {kind: _METHODS[out] for kind, out in _INFERRED_OUTPUT.items()}
    text_from_name = writer.text_from_name
    label_of = None if label_map is None else writer.label
    out: list[dict[str, Any]] = []
    for index, p in enumerate(predictions):
        label = p.label if label_of is None else label_of(p.label)
        if label is None:
            continue
        rid, geometry, label_key = (fixed or inferred[p.type])(
            writer, index, p, label, out
        )
        if p.text is not None and text_from_name is not None and rid is not None:
            value = {} if geometry is None else dict(geometry)
            value.pop(label_key, None)
            value["text"] = [p.text]
            out.append(writer.result(rid, text_from_name, "textarea", value, p.score))
    return out


def to_labelstudio_prediction(
    results: list[dict[str, Any]], *, model_version: str, score: float | None = None
) -> dict[str, Any]:
    """One task's prediction: ``{"result", "score", "model_version"}``.

    ``score`` defaults to the mean score of the regions (results sharing an id
    count once; joints, which repeat their instance's score, are left out), or
    0.0 when no region has one (Label Studio sorts tasks by it).
    """
    if not model_version:
        raise LabelStudioError(
            "model_version is required: Label Studio refuses predictions without it"
        )
    if score is None:
        seen: dict[str, float] = {}
        for r in results:
            if "score" in r and "parentID" not in r and r.get("id") not in seen:
                seen[r.get("id")] = r["score"]
        score = sum(seen.values()) / len(seen) if seen else 0.0
    return {
        "result": results,
        "score": float(score),
        "model_version": str(model_version),
    }


# from_labelstudio -----------------------------------------------------------------
_RECTANGLE_TYPES = {"rectanglelabels", "rectangle"}
_POLYGON_TYPES = {"polygonlabels", "polygon"}
_KEYPOINT_TYPES = {"keypointlabels", "keypoint"}
_BRUSH_TYPES = {"brushlabels", "brush"}
_LABEL_TYPES = {"labels"}
_TEXT_TYPES = {"textarea"}
_GEOMETRY_TYPES = _RECTANGLE_TYPES | _POLYGON_TYPES | _KEYPOINT_TYPES | _BRUSH_TYPES
_KNOWN_TYPES = _GEOMETRY_TYPES | _LABEL_TYPES | _TEXT_TYPES


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
    """The labels a result gives its region, or None if it gives none."""
    key = (
        "labels" if kind in _LABEL_TYPES else kind if kind.endswith("labels") else None
    )
    if key is None or key not in value:
        return None
    labels = value[key]
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
        sx, sy = width / 100.0, height / 100.0
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
            keypoints[joint.label or ""] = (jv["x"] * jw / 100.0, jv["y"] * jh / 100.0)
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
        if kind in _TEXT_TYPES:
            text = value.get("text")
            region.text = "\n".join(text) if isinstance(text, list) else text
            if "x" in value or "points" in value:
                region.labels_geometry = region.labels_geometry or r
        elif kind in _LABEL_TYPES:
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
