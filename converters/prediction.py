"""The canonical prediction type: the only thing that crosses a boundary in rexlabel.

Every coordinate is in pixels of the original image (after EXIF orientation is
applied, as Label Studio shows it), x to the right, y down, as floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class RegionType(str, Enum):
    """The geometry of a prediction."""

    BOX = "box"
    POINT = "point"
    POLYGON = "polygon"
    KEYPOINT = "keypoint"


Point = tuple[float, float]
Box = tuple[float, float, float, float]


class PredictionError(ValueError):
    """A prediction was built or read from invalid data; the message names the field."""


def _finite(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PredictionError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise PredictionError(f"{what} must be finite, got {value!r}")
    return number


def _box(values: Any, what: str) -> Box:
    if not isinstance(values, (list, tuple)) or len(values) != 4:
        raise PredictionError(f"{what} must be [x0, y0, x1, y1], got {values!r}")
    x0, y0, x1, y1 = (_finite(v, what) for v in values)
    return (x0, y0, x1, y1)


def _point(values: Any, what: str) -> Point:
    if not isinstance(values, (list, tuple)) or len(values) != 2:
        raise PredictionError(f"{what} must be [x, y], got {values!r}")
    return (_finite(values[0], what), _finite(values[1], what))


@dataclass
class Prediction:
    """One region found in one image.

    Attributes:
        type: the geometry (box, point, polygon, keypoint instance).
        label: the category (for OCR: the requested granularity such as ``word``).
        coords: box ``(x0, y0, x1, y1)`` with x0<=x1, y0<=y1; point ``(x, y)``;
            polygon ``((x, y), ...)`` with at least 3 vertices; for a keypoint
            instance its bounding box ``(x0, y0, x1, y1)``. Pixels of the
            original image.
        score: confidence in 0..1, or None when unknown.
        text: recognised text (OCR tasks), else None.
        keypoints: keypoint instances only: joint name -> ``(x, y)`` pixels, or
            None for a joint that is not visible. Order is kept.
        instance_id: keypoint instances: the id the model gave (``person1``).
        mask: a COCO compressed RLE ``{"size": [h, w], "counts": str}`` at the
            original image size, when a mask was computed (SAM).
        span: ``(start, end)`` character offsets of the raw model text this
            prediction was parsed from, so token probabilities can score it.
            Not serialised.
    """

    type: RegionType
    label: str
    coords: Any
    score: float | None = None
    text: str | None = None
    keypoints: dict[str, Point | None] | None = None
    instance_id: str | None = None
    mask: dict[str, Any] | None = None
    span: tuple[int, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.type = RegionType(self.type)
        if not isinstance(self.label, str):
            raise PredictionError(f"label must be a string, got {self.label!r}")
        if self.type in (RegionType.BOX, RegionType.KEYPOINT):
            self.coords = _box(self.coords, f"{self.type.value} coords")
        elif self.type is RegionType.POINT:
            self.coords = _point(self.coords, "point coords")
        else:
            if not isinstance(self.coords, (list, tuple)) or len(self.coords) < 3:
                raise PredictionError(
                    "polygon coords must be at least 3 [x, y] vertices, "
                    f"got {self.coords!r}"
                )
            self.coords = tuple(
                _point(p, f"polygon vertex {i}") for i, p in enumerate(self.coords)
            )
        if self.score is not None:
            self.score = _finite(self.score, "score")
            if not 0.0 <= self.score <= 1.0:
                raise PredictionError(f"score must be in 0..1, got {self.score!r}")
        if self.text is not None and not isinstance(self.text, str):
            raise PredictionError(f"text must be a string, got {self.text!r}")
        if self.type is RegionType.KEYPOINT:
            joints = self.keypoints or {}
            if not isinstance(joints, Mapping):
                raise PredictionError(f"keypoints must be a mapping, got {joints!r}")
            self.keypoints = {
                str(name): None if xy is None else _point(xy, f"keypoint {name!r}")
                for name, xy in joints.items()
            }
        elif self.keypoints is not None:
            raise PredictionError("keypoints are only allowed on keypoint predictions")
        if self.mask is not None:
            if not (
                isinstance(self.mask, Mapping)
                and "size" in self.mask
                and "counts" in self.mask
            ):
                raise PredictionError(
                    "mask must be a COCO RLE {'size': [h, w], 'counts': ...}"
                )
            counts = self.mask["counts"]
            if isinstance(counts, bytes):
                counts = counts.decode("ascii")
            self.mask = {"size": [int(v) for v in self.mask["size"]], "counts": counts}

    # Geometry helpers -------------------------------------------------------
    @property
    def bbox(self) -> Box:
        """The axis-aligned bounding box ``(x0, y0, x1, y1)`` of the region, pixels."""
        if self.type in (RegionType.BOX, RegionType.KEYPOINT):
            return self.coords
        if self.type is RegionType.POINT:
            x, y = self.coords
            return (x, y, x, y)
        xs = [p[0] for p in self.coords]
        ys = [p[1] for p in self.coords]
        return (min(xs), min(ys), max(xs), max(ys))

    def with_(self, **changes: Any) -> Prediction:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # JSON -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON. Keypoint instances carry ``bbox``/``keypoints``/``instance_id``
        instead of ``coords``; ``mask`` appears only when set."""
        out: dict[str, Any] = {"type": self.type.value, "label": self.label}
        if self.type is RegionType.KEYPOINT:
            out["bbox"] = list(self.coords)
            out["keypoints"] = {
                name: None if xy is None else list(xy)
                for name, xy in (self.keypoints or {}).items()
            }
            out["instance_id"] = self.instance_id
        elif self.type is RegionType.POLYGON:
            out["coords"] = [list(p) for p in self.coords]
        else:
            out["coords"] = list(self.coords)
        out["score"] = self.score
        out["text"] = self.text
        if self.instance_id is not None and self.type is not RegionType.KEYPOINT:
            out["instance_id"] = self.instance_id
        if self.mask is not None:
            out["mask"] = dict(self.mask)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Prediction:
        """Inverse of :meth:`to_dict`; PredictionError names the bad field."""
        if not isinstance(data, Mapping):
            raise PredictionError(f"a prediction must be an object, got {data!r}")
        try:
            kind = RegionType(data.get("type"))
        except ValueError:
            choices = ", ".join(t.value for t in RegionType)
            raise PredictionError(
                f"prediction type {data.get('type')!r} is not one of: {choices}"
            ) from None
        coords = data.get("bbox") if kind is RegionType.KEYPOINT else data.get("coords")
        if coords is None:
            key = "bbox" if kind is RegionType.KEYPOINT else "coords"
            raise PredictionError(f"{kind.value} prediction is missing {key!r}")
        return cls(
            type=kind,
            label=data.get("label", ""),
            coords=coords,
            score=data.get("score"),
            text=data.get("text"),
            keypoints=data.get("keypoints") if kind is RegionType.KEYPOINT else None,
            instance_id=data.get("instance_id"),
            mask=data.get("mask"),
        )


def predictions_to_dicts(predictions: Iterable[Prediction]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in predictions]


def predictions_from_dicts(items: Iterable[Mapping[str, Any]]) -> list[Prediction]:
    return [Prediction.from_dict(item) for item in items]


@dataclass
class ParseResult:
    """What the parser made of one model output.

    Attributes:
        predictions: canonical predictions in output order.
        warnings: one message per dropped or repaired piece of the text.
        truncated: the last group was cut off (no closing token), e.g. by the
            token limit or the runaway guard.
    """

    predictions: list[Prediction] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "predictions": predictions_to_dicts(self.predictions),
            "warnings": list(self.warnings),
            "truncated": self.truncated,
        }
