"""How an image is cut into tiles for the model: :class:`TileOptions`.

The worker's base options come from the settings (:meth:`TileOptions.from_settings`,
read at the edges like the base sampling); a call's ``ModelCall.tile`` overrides
the per-call fields (``mode``, ``size``, ``overlap``, ``whole_image``) on top.
The auto factor and the tile cap stay the worker's: a label config cannot
make a worker cut an image into thousands of tiles. Tiles are cut and merged
by ``worker.tiling_step``; docs/tiling.md describes the whole path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from common import settings
from common.settings import (
    DEFAULT_TILE_AUTO_SHRINK,
    DEFAULT_TILE_MAX_TILES,
    DEFAULT_TILE_MODE,
    DEFAULT_TILE_OVERLAP,
    DEFAULT_TILE_SIZE,
    DEFAULT_TILE_WHOLE_IMAGE,
    MAX_TILE_OVERLAP,
    MIN_TILE_SIZE,
    TILE_MODES,
)

CALL_FIELDS = ("mode", "size", "overlap", "whole_image")
"""The fields a call may set (``ModelCall.tile``); the others are the worker's."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


_RULES = {
    "mode": (lambda v: v in TILE_MODES, f"one of {', '.join(TILE_MODES)}"),
    "size": (
        lambda v: _is_int(v) and v >= MIN_TILE_SIZE,
        f"a whole number of pixels, at least {MIN_TILE_SIZE}",
    ),
    "overlap": (
        lambda v: _is_number(v) and 0 <= v <= MAX_TILE_OVERLAP,
        f"a share of the tile from 0 to {MAX_TILE_OVERLAP}",
    ),
    "whole_image": (lambda v: isinstance(v, bool), "true or false"),
    "min_shrink": (lambda v: _is_number(v) and v >= 1, "a number of at least 1"),
    "max_tiles": (lambda v: _is_int(v) and v >= 1, "a whole number of at least 1"),
}
"""Each field's test and the rule a ValueError names."""


@dataclass(frozen=True)
class TileOptions:
    """How to tile an image; every default is a setting's (``common.settings``).

    Attributes:
        mode: ``auto`` (tile when the model's resize would shrink the image
            more than ``min_shrink`` times a side), ``on`` or ``off``.
        size: tile side, pixels of the original image.
        overlap: share of ``size`` that neighbouring tiles share.
        whole_image: add a call on the whole image to the tiles' batch.
        min_shrink: ``auto``'s factor (REXLABEL_TILE_AUTO_SHRINK).
        max_tiles: most tiles per image; a call needing more fails.
    """

    mode: str = DEFAULT_TILE_MODE
    size: int = DEFAULT_TILE_SIZE
    overlap: float = DEFAULT_TILE_OVERLAP
    whole_image: bool = DEFAULT_TILE_WHOLE_IMAGE
    min_shrink: float = DEFAULT_TILE_AUTO_SHRINK
    max_tiles: int = DEFAULT_TILE_MAX_TILES

    def __post_init__(self) -> None:
        for item in fields(self):
            valid, rule = _RULES[item.name]
            value = getattr(self, item.name)
            if not valid(value):
                raise ValueError(f"tile.{item.name} must be {rule}, got {value!r}")

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> TileOptions:
        """A copy with a call's fields (:data:`CALL_FIELDS`) changed; ValueError
        names an unknown field or a bad value."""
        if not overrides:
            return self
        if not isinstance(overrides, Mapping):
            raise ValueError(f"tile must be an object, got {overrides!r}")
        unknown = sorted(set(overrides) - set(CALL_FIELDS))
        if unknown:
            raise ValueError(
                f"unknown tile field(s) {unknown}; a call sets {list(CALL_FIELDS)}"
            )
        return replace(self, **dict(overrides))

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> TileOptions:
        """The worker's base options: REXLABEL_TILE, _SIZE, _OVERLAP,
        _WHOLE_IMAGE, _AUTO_SHRINK and _MAX_TILES."""
        return cls(
            mode=settings.get("REXLABEL_TILE", environ),
            size=settings.get("REXLABEL_TILE_SIZE", environ),
            overlap=settings.get("REXLABEL_TILE_OVERLAP", environ),
            whole_image=settings.get("REXLABEL_TILE_WHOLE_IMAGE", environ),
            min_shrink=settings.get("REXLABEL_TILE_AUTO_SHRINK", environ),
            max_tiles=settings.get("REXLABEL_TILE_MAX_TILES", environ),
        )
