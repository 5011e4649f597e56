"""The JSON contract between whoever plans work (backend, CLI) and the worker.

A *chunk* is a list of images, each with the model calls to make on it. Queue
payloads are plain JSON (RQ's JSONSerializer); these dataclasses only validate
and convert. No torch here.

Chunk payload::

    {"images": [{"id": "42", "image": "/data/upload/1/a.jpg", "task_id": 42,
                 "calls": [ModelCall.to_dict(), ...]}],
     "generation": {"max_new_tokens": 2048}}          # optional overrides

Chunk result::

    {"images": [{"id": "42", "width": 640, "height": 480, "error": None,
                 "calls": [CallResult.to_dict(), ...]}],
     "timings": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from common.tile_options import TileOptions
from converters.prediction import (
    Prediction,
    predictions_from_dicts,
    predictions_to_dicts,
)
from converters.tasks import Task


class JobSpecError(ValueError):
    """A job payload is malformed; the message names the bad field."""


class MaskOutput(str, Enum):
    """What SAM output a call wants on its boxes. A ``str`` Enum: it serialises
    as its value."""

    NONE = "none"
    RLE = "rle"
    """COCO compressed RLE on ``Prediction.mask``."""
    BRUSH = "brush"
    """RLE, written as Label Studio brush regions."""
    POLYGON = "polygon"
    """The mask's outline as the region's polygon."""

    def __str__(self) -> str:
        return self.value


MASK_OUTPUTS = tuple(m.value for m in MaskOutput)
"""The values of :class:`MaskOutput`, as error messages list them."""


class FinishReason(str, Enum):
    """Why a call's output ended. A ``str`` Enum: it serialises as its value."""

    STOP = "stop"
    """The model wrote its end token."""
    LENGTH = "length"
    """The token cap (``max_new_tokens``) cut the answer."""
    RUNAWAY = "runaway"
    """The runaway guard stopped it (repeated items or too many)."""
    SAM = "sam"
    """No generation: the pipeline answered a point prompt with a SAM mask."""

    def __str__(self) -> str:
        return self.value


@dataclass
class ModelCall:
    """One question to the model about one image.

    ``categories`` are the phrases asked for; ``labels`` maps each phrase the
    model may answer with to the label the caller wants (identity if empty).
    ``visual_prompt_boxes`` are xyxy pixel boxes of the original image.
    ``sam_points`` are ``[x, y, positive]`` pixel clicks for a point-prompted
    mask (no model generation then). ``masks`` asks SAM for masks of the boxes.
    ``score_threshold`` drops predictions scoring below it. ``tile`` overrides
    the worker's tiling for this call (``common.tile_options.CALL_FIELDS``:
    ``mode``, ``size``, ``overlap``, ``whole_image``); empty: the worker's.
    """

    task: Task
    categories: list[str] = field(default_factory=list)
    keypoint_type: str | None = None
    visual_prompt_boxes: list[list[float]] | None = None
    sam_points: list[list[float]] | None = None
    masks: MaskOutput = MaskOutput.NONE
    score_threshold: float | None = None
    max_instances: int | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    key: str = ""
    """Caller's tag to find this call's result (e.g. the control tag name)."""
    tile: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.task = Task.from_value(self.task)
        except ValueError as exc:
            raise JobSpecError(f"call.task: {exc}") from None
        if isinstance(self.categories, str):
            self.categories = [self.categories]
        try:
            self.masks = MaskOutput(self.masks)
        except (ValueError, TypeError):
            raise JobSpecError(
                f"call.masks must be one of {', '.join(MASK_OUTPUTS)}, "
                f"got {self.masks!r}"
            ) from None
        try:
            TileOptions().with_overrides(self.tile)
        except ValueError as exc:
            raise JobSpecError(f"call: {exc}") from None
        self.tile = dict(self.tile or {})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; ``tile`` only when set, so untiled calls read the same
        to a worker of the version before tiling."""
        return {
            "task": self.task.value,
            "categories": list(self.categories),
            "keypoint_type": self.keypoint_type,
            "visual_prompt_boxes": self.visual_prompt_boxes,
            "sam_points": self.sam_points,
            "masks": self.masks.value,
            "score_threshold": self.score_threshold,
            "max_instances": self.max_instances,
            "generation": dict(self.generation),
            "key": self.key,
            **({"tile": dict(self.tile)} if self.tile else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCall:
        if not isinstance(data, dict) or "task" not in data:
            raise JobSpecError(f"a call must be an object with 'task', got {data!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise JobSpecError(f"call has unknown field(s) {unknown}")
        return cls(**data)


@dataclass
class ImageJob:
    """One image and its calls. ``image`` is a path, file:// or http(s) URL, or
    a Label Studio URL (``/data/upload/...``, ``s3://`` with ``task_id``).

    ``local_paths``: a plain path or file:// may be read. Only the command
    line sets it (its user names their own files); anything planned from a
    request over HTTP leaves it False and the worker refuses such paths.
    """

    id: str
    image: str
    calls: list[ModelCall]
    task_id: int | None = None
    local_paths: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "image": self.image,
            "task_id": self.task_id,
            "calls": [c.to_dict() for c in self.calls],
            "local_paths": self.local_paths,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageJob:
        if not isinstance(data, dict):
            raise JobSpecError(f"an image entry must be an object, got {data!r}")
        for key in ("id", "image", "calls"):
            if key not in data:
                raise JobSpecError(f"image entry is missing {key!r}: {data!r}")
        if not isinstance(data["calls"], list) or not data["calls"]:
            raise JobSpecError(
                f"image {data['id']!r}: 'calls' must be a non-empty list"
            )
        local_paths = data.get("local_paths", False)
        if not isinstance(local_paths, bool):
            raise JobSpecError(
                f"image {data['id']!r}: 'local_paths' must be true or false, "
                f"got {local_paths!r}"
            )
        return cls(
            id=str(data["id"]),
            image=str(data["image"]),
            calls=[ModelCall.from_dict(c) for c in data["calls"]],
            task_id=data.get("task_id"),
            local_paths=local_paths,
        )


@dataclass
class CallResult:
    """What one call produced: predictions plus the evidence behind them."""

    key: str
    task: Task
    predictions: list[Prediction]
    raw_text: str = ""
    truncated: bool = False
    warnings: list[str] = field(default_factory=list)
    finish_reason: str = ""
    """A :class:`FinishReason` value; empty when no generation ran."""
    prompt_tokens: int = 0
    output_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    tiles: list[list[int]] = field(default_factory=list)
    """A tiled call: each tile's ``[x0, y0, x1, y1]`` (pixels of the original
    image, x1/y1 exclusive), the whole-image pass not listed; else empty."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "task": Task.from_value(self.task).value,
            "predictions": predictions_to_dicts(self.predictions),
            "raw_text": self.raw_text,
            "truncated": self.truncated,
            "warnings": list(self.warnings),
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens,
            "timings": dict(self.timings),
            "tiles": [list(t) for t in self.tiles],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallResult:
        return cls(
            key=data.get("key", ""),
            task=Task.from_value(data["task"]),
            predictions=predictions_from_dicts(data.get("predictions", [])),
            raw_text=data.get("raw_text", ""),
            truncated=bool(data.get("truncated", False)),
            warnings=list(data.get("warnings", [])),
            finish_reason=data.get("finish_reason", ""),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            timings=dict(data.get("timings", {})),
            tiles=[[int(v) for v in t] for t in data.get("tiles", [])],
        )


@dataclass
class ImageResult:
    """The results of one image's calls that succeeded; ``error`` says why
    the image, or one or more of its calls, failed (a failed call is left out
    of ``calls``)."""

    id: str
    width: int = 0
    height: int = 0
    calls: list[CallResult] = field(default_factory=list)
    error: str | None = None
    task_id: int | None = None
    load_s: float = 0.0
    """Seconds spent fetching and decoding the image (the job line's download)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task_id": self.task_id,
            "width": self.width,
            "height": self.height,
            "calls": [c.to_dict() for c in self.calls],
            "error": self.error,
            "load_s": self.load_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageResult:
        return cls(
            id=str(data["id"]),
            task_id=data.get("task_id"),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            calls=[CallResult.from_dict(c) for c in data.get("calls", [])],
            error=data.get("error"),
            load_s=float(data.get("load_s", 0.0)),
        )


def parse_chunk(payload: dict[str, Any]) -> list[ImageJob]:
    """Validate a chunk payload; JobSpecError names the first bad field."""
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise JobSpecError("a chunk must be an object with an 'images' list")
    return [ImageJob.from_dict(item) for item in payload["images"]]
