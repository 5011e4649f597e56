"""``--tile``, ``--tile-size`` and ``--tile-overlap``: tiled inference on the
command line (``rexlabel predict`` and ``rexlabel prelabel``).

Unset flags leave the REXLABEL_TILE* settings in charge. For image files the
flags become the call's ``tile`` (``common.jobspec.ModelCall``); for a
project they become the ``rex_tile*`` extra params, which a control's own
``rex_tile*`` attributes still override.
"""

from __future__ import annotations

import argparse
from typing import Any

from common.settings import MAX_TILE_OVERLAP, MIN_TILE_SIZE, TILE_MODES
from common.tile_options import TileOptions

FLAGS = {"mode": "--tile", "size": "--tile-size", "overlap": "--tile-overlap"}
"""``ModelCall.tile`` field -> the flag that sets it."""
EXTRA_PARAMS = {
    "mode": "rex_tile",
    "size": "rex_tile_size",
    "overlap": "rex_tile_overlap",
}
"""``ModelCall.tile`` field -> the planner's attribute (and extra param) name."""


def add_tile_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tile",
        choices=TILE_MODES,
        default=None,
        help="tiled inference: on cuts every image into overlapping tiles, "
        "auto only images the model would shrink a lot, off none "
        "(default: REXLABEL_TILE)",
    )
    parser.add_argument(
        "--tile-size",
        type=int,
        default=None,
        metavar="PIXELS",
        help=f"tile side in image pixels, at least {MIN_TILE_SIZE} "
        "(default: REXLABEL_TILE_SIZE)",
    )
    parser.add_argument(
        "--tile-overlap",
        type=float,
        default=None,
        metavar="SHARE",
        help=f"share of a tile its neighbours overlap, 0 to {MAX_TILE_OVERLAP} "
        "(default: REXLABEL_TILE_OVERLAP)",
    )


def tile_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags given, as ``ModelCall.tile``; ValueError names a bad flag."""
    tile = {
        field: getattr(args, flag[2:].replace("-", "_"), None)
        for field, flag in FLAGS.items()
    }
    tile = {field: value for field, value in tile.items() if value is not None}
    for field, value in tile.items():
        try:
            TileOptions().with_overrides({field: value})
        except ValueError as exc:
            rule = str(exc).split(" must ", 1)[-1].rsplit(", got ", 1)[0]
            raise ValueError(f"{FLAGS[field]} {value}: must {rule}") from None
    return tile


def tile_extra_params(tile: dict[str, Any]) -> dict[str, Any]:
    """``tile`` as the planner's extra params (``rex_tile`` ...)."""
    return {EXTRA_PARAMS[field]: value for field, value in tile.items()}
