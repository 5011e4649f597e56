"""Canonical predictions -> Label Studio result dicts.

* :func:`to_labelstudio` writes the results of one control tag for one image.
  It is on the hot path (every region of every task), so it builds plain dicts
  with precomputed factors: no pydantic, no SDK objects per region.
* :func:`to_labelstudio_prediction` wraps the results of one task as a
  prediction ``{"result", "score", "model_version"}``.

The conventions (percent coordinates, rotation, shared ids) are in
:mod:`converters.labelstudio`; result types come from :mod:`converters.tags`.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import Any

from converters import masks
from converters.labelstudio.base import PERCENT, LabelStudioError
from converters.prediction import Prediction, RegionType
from converters.tags import LABELS_TYPE, REGION_TAGS, TEXT_TYPE

KEYPOINT_SIZE_PERCENT = 0.5
"""``width`` of a keypoint result (point size, percent of the image width): the
size Label Studio's own examples use, visible without hiding the joint."""

IMAGE_ROTATION = 0
"""Regions refer to the image as Label Studio shows it; we never rotate it."""

LabelLookup = Mapping[str, str | None] | Callable[[str], str | None] | None
"""Model phrase -> config label. A dict keeps phrases it lacks unchanged; a
callable decides for every phrase. A value of None drops the region (or joint)."""

_RECTANGLE_LABELS = REGION_TAGS["RectangleLabels"].result_type
_POLYGON_LABELS = REGION_TAGS["PolygonLabels"].result_type
_BRUSH_LABELS = REGION_TAGS["BrushLabels"].result_type
_KEYPOINT_LABELS = REGION_TAGS["KeyPointLabels"].result_type
_RECTANGLE = REGION_TAGS["Rectangle"].result_type
_POLYGON = REGION_TAGS["Polygon"].result_type
_KEYPOINT = REGION_TAGS["KeyPoint"].result_type


class Output(str, Enum):
    """The kind of Label Studio result :func:`to_labelstudio` writes."""

    RECTANGLE_LABELS = _RECTANGLE_LABELS
    POLYGON_LABELS = _POLYGON_LABELS
    BRUSH_LABELS = _BRUSH_LABELS
    KEYPOINT_LABELS = _KEYPOINT_LABELS
    LABELS = LABELS_TYPE
    """The stock OCR template: a ``rectangle``/``polygon``/``keypoint`` geometry
    result (from ``geometry_from_name``) plus a ``labels`` result, one id."""


_INFERRED_OUTPUT = {
    RegionType.BOX: Output.RECTANGLE_LABELS,
    RegionType.POLYGON: Output.POLYGON_LABELS,
    RegionType.POINT: Output.KEYPOINT_LABELS,
    RegionType.KEYPOINT: Output.KEYPOINT_LABELS,
}


def _mapper(label_map: LabelLookup) -> Callable[[str], str | None]:
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
    return 0.0 if value < 0.0 else PERCENT if value > PERCENT else value


class _Writer:
    """Per-call state: factors, names, id seed. One instance per to_labelstudio."""

    def __init__(
        self,
        *,
        from_name: str,
        to_name: str,
        width: int,
        height: int,
        label_map: LabelLookup,
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
        self.fx = PERCENT / width
        self.fy = PERCENT / height
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
        x0, x1 = _clamp(box[0] * self.fx), _clamp(box[2] * self.fx)
        y0, y1 = _clamp(box[1] * self.fy), _clamp(box[3] * self.fy)
        return {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "rotation": 0}

    def poly_value(self, points: Iterable[Sequence[float]]) -> dict[str, Any]:
        return {
            "points": [[_clamp(x * self.fx), _clamp(y * self.fy)] for x, y in points],
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
    def labelled(self, index: int, p: Prediction, kind: str, value: dict, out: list):
        """Append the ``kind`` result of ``value`` (its label already set)."""
        rid = self.prefix + str(index)
        out.append(self.result(rid, self.from_name, kind, value, p.score))
        return rid, value, kind

    def rectangle(self, index: int, p: Prediction, label: str, out: list):
        kind = p.type
        if kind is RegionType.POINT:
            raise _unsupported(index, p, Output.RECTANGLE_LABELS)
        value = self.rect_value(p.coords if kind is not RegionType.POLYGON else p.bbox)
        value[_RECTANGLE_LABELS] = [label]
        return self.labelled(index, p, _RECTANGLE_LABELS, value, out)

    def polygon(self, index: int, p: Prediction, label: str, out: list):
        if p.type is RegionType.POINT:
            raise _unsupported(index, p, Output.POLYGON_LABELS)
        value = self.poly_value(self.polygon_of(p))
        value[_POLYGON_LABELS] = [label]
        return self.labelled(index, p, _POLYGON_LABELS, value, out)

    def brush(self, index: int, p: Prediction, label: str, out: list):
        if p.type is RegionType.POINT:
            raise _unsupported(index, p, Output.BRUSH_LABELS)
        value = {
            "format": "rle",
            "rle": masks.rle_to_brush_rle(self.rle_of(p)),
            _BRUSH_LABELS: [label],
        }
        rid, _, _ = self.labelled(index, p, _BRUSH_LABELS, value, out)
        return rid, None, None

    def keypoint(self, index: int, p: Prediction, label: str, out: list):
        if p.type is RegionType.KEYPOINT:
            return self.instance(index, p, label, out)
        if p.type is not RegionType.POINT:
            raise _unsupported(index, p, Output.KEYPOINT_LABELS)
        value = self.point_value(p.coords)
        value[_KEYPOINT_LABELS] = [label]
        return self.labelled(index, p, _KEYPOINT_LABELS, value, out)

    def labels(self, index: int, p: Prediction, label: str, out: list):
        """The stock OCR template: geometry result + labels result, one id."""
        kind = p.type
        if kind is RegionType.POLYGON:
            geometry, geometry_kind = self.poly_value(p.coords), _POLYGON
        elif kind is RegionType.POINT:
            geometry, geometry_kind = self.point_value(p.coords), _KEYPOINT
        else:
            geometry, geometry_kind = self.rect_value(p.coords), _RECTANGLE
        rid = self.prefix + str(index)
        score = p.score
        if self.geometry_from_name is not None:
            out.append(
                self.result(
                    rid, self.geometry_from_name, geometry_kind, geometry, score
                )
            )
        value = {**geometry, LABELS_TYPE: [label]}
        out.append(self.result(rid, self.from_name, LABELS_TYPE, value, score))
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
            value = {**geometry, _RECTANGLE_LABELS: [label]}  # geometry: for text
            out.append(
                self.result(
                    rid, self.keypoint_box_from_name, _RECTANGLE_LABELS, value, score
                )
            )
            parent = rid
        for j, (joint, xy) in enumerate((p.keypoints or {}).items()):
            if xy is None:
                continue
            joint_label = self.label(joint)
            if joint_label is None:
                continue
            value = {**self.point_value(xy), _KEYPOINT_LABELS: [joint_label]}
            result = self.result(
                f"{rid}k{j}", self.from_name, _KEYPOINT_LABELS, value, score
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
    label_map: LabelLookup = None,
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
        label_map: see :data:`LabelLookup`; applied to region labels and joint names.
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
            out.append(writer.result(rid, text_from_name, TEXT_TYPE, value, p.score))
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
