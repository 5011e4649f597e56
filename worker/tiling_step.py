"""Tiled inference: one call on a large image made on its overlapping tiles.

    plan_tiles (converters.tiling.should_tile, tile_count, tile_grid)
      -> ChunkCrops.views: a crop per tile (+ the whole image when asked),
         all in the pipeline's one engine batch
      -> tiled_result: parse each tile in its own pixels, to_original,
         keep what each tile found in its core (converters.tile_cores: an
         object cut by a tile edge is answered by the tile that holds it
         whole; the whole-image pass only regions larger than the overlap),
         merge_tiled with each region's source tile (duplicates in the
         overlaps, the whole image)
      -> worker.call_result.finish_result (score_threshold, max_instances,
         masks on the whole image)

Tiled tasks: :data:`TILED_TASKS`. Keypoint instances are never tiled (a
person cut by a tile edge loses joints that no merge restores), nor visual
prompting (its reference boxes are in one place of the image) or GUI tasks
(one target per screenshot): they run on the whole image, with a note when
tiling was asked.

Memory: :func:`decode_pixels` tells the loader how far a tiled image may be
reduced while decoding (until a tile holds the model's ``max_pixels``); crops
are cut from that decode once per chunk (:class:`ChunkCrops`, shared by the
calls tiling an image alike, at most :data:`MAX_CHUNK_CROP_PIXELS`) and the
whole-image pass gets a model-sized copy.
No settings are read here: the caller passes the base :class:`TileOptions`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from common.images.decode import ORIGINAL_SIZE_KEY, original_size, resize_for_model
from common.jobspec import CallResult, ModelCall
from common.tile_options import TileOptions
from converters.tasks import Task
from converters.tile_cores import owned_positions
from converters.tile_merge import merge_tiled
from converters.tiling import Tile, should_tile, tile_count, tile_grid, to_original
from worker.call_result import (
    Masker,
    PipelineError,
    describe_call,
    finish_result,
    parse_generation,
)
from worker.engines.base import GenerationResult

TILED_TASKS = frozenset({Task.DETECTION, Task.POINTING, Task.OCR_BOX, Task.OCR_POLYGON})
"""Tasks whose items stand alone, so tiles' answers merge into one answer."""

TILE_STEP = 28
"""Tile sides grow in steps of 28 px (a 14 px patch, merged 2 x 2): the
model's resize rounds a side to it, so a tile on it loses nothing there."""

MAX_CHUNK_CROP_PIXELS = 256 * 1400 * 1400
"""Most pixels of tile crops (decoded pixels) one chunk (one engine batch)
holds, shared by its calls: 4 images (REXLABEL_PREDICT_CHUNK_SIZE) at 64
tiles (REXLABEL_TILE_MAX_TILES) of 1400 px. A 1400 px RGB crop is 5.9 MB, so
that is 1.5 GB next to the decodes. Counted in pixels, not crops, so many small
tiles cost what they weigh (six 448 px scenes in 49 tiles of 112 px each are
17 MB). A call whose new crops would pass it fails naming the figures (the
chunk's others run)."""


@dataclass(frozen=True)
class TilePlan:
    """How one call is cut: ``tiles`` (pixels of the original image) and
    whether a pass over the whole image joins them (last in the batch)."""

    tiles: tuple[Tile, ...]
    whole_image: bool
    note: str | None = None
    """Why the tiles are larger than asked (the tile cap), for the warnings."""

    @property
    def passes(self) -> int:
        """Generations the call needs."""
        return len(self.tiles) + int(self.whole_image)


def _tiled(options: TileOptions, size: tuple[int, int], max_pixels: int) -> bool:
    """Whether ``options`` tile an image of ``size`` (width, height)."""
    width, height = size
    return should_tile(options.mode, width, height, max_pixels, options.min_shrink)


def model_tile_side(max_pixels: int) -> int:
    """The largest multiple of :data:`TILE_STEP` whose square fits
    ``max_pixels``: the most pixels a tile's side is seen at in full (1400
    at upstream's 2 MP)."""
    return max(TILE_STEP, math.isqrt(max_pixels) // TILE_STEP * TILE_STEP)


def _decode_scale(image: Image.Image) -> float:
    """Original pixels per decoded pixel (1.0 for a full decode)."""
    width, height = original_size(image)
    return max(1.0, min(width / image.width, height / image.height))


def _tile_side(
    image: Image.Image, call: ModelCall, options: TileOptions, max_pixels: int
) -> tuple[int, str | None]:
    """The tile side in original pixels and a note when it grew.

    A decode reduced below the tile's detail (a JPEG past
    REXLABEL_MAX_IMAGE_PIXELS drafted at 1/2 or 1/4) has its tiles scaled up
    so each still holds ``min(size, model_tile_side)`` decoded pixels a side:
    the model then sees every decoded pixel, in a quarter of the calls. Then,
    when the grid has more than ``max_tiles`` tiles, ``auto`` grows the side
    (decoded pixels, steps of :data:`TILE_STEP`) until it fits, and ``on``
    fails naming the count (PipelineError)."""
    width, height = original_size(image)
    scale = _decode_scale(image)
    wanted = min(options.size, model_tile_side(max_pixels))
    side = max(options.size, round(wanted * scale))
    count = tile_count(width, height, side, options.overlap)
    if count <= options.max_tiles:
        return side, None
    if options.mode != "auto":
        raise PipelineError(
            f"{describe_call(call)}: {width}x{height} in {side} px tiles "
            f"with overlap {options.overlap:g} is {count} tiles, more than "
            f"{options.max_tiles} (REXLABEL_TILE_MAX_TILES); use larger tiles"
        )
    asked, decoded, grown = side, math.ceil(side / scale / TILE_STEP) * TILE_STEP, count
    while grown > options.max_tiles:
        decoded += TILE_STEP
        side = round(decoded * scale)
        grown = tile_count(width, height, side, options.overlap)
    return side, (
        f"tiles grown from {asked} to {side} px: {count} tiles were more than "
        f"{options.max_tiles} (REXLABEL_TILE_MAX_TILES), now {grown}"
    )


def plan_tiles(
    image: Image.Image, call: ModelCall, base: TileOptions, max_pixels: int
) -> TilePlan | None:
    """The tiles of ``call`` on ``image`` (``base`` with the call's own
    ``tile`` on top), or None to run it once on the whole image: a task not
    in :data:`TILED_TASKS`, a point-prompted mask, ``auto`` on an image the
    model takes without shrinking it past ``min_shrink``, or one tile only.
    The tile side is :func:`_tile_side`'s (larger on a reduced decode, grown
    by ``auto`` to fit ``max_tiles``); PipelineError when ``on`` has more
    than ``max_tiles`` tiles."""
    if call.task not in TILED_TASKS or call.sam_points:
        return None
    options = base.with_overrides(call.tile)
    size = original_size(image)
    if not _tiled(options, size, max_pixels):
        return None
    side, note = _tile_side(image, call, options, max_pixels)
    tiles = tile_grid(size[0], size[1], side, options.overlap)
    if len(tiles) == 1 and (tiles[0].width, tiles[0].height) == size:
        return None
    return TilePlan(tuple(tiles), options.whole_image, note)


def untiled_note(
    image: Image.Image, call: ModelCall, base: TileOptions, max_pixels: int
) -> str | None:
    """Why a call that tiling would cut runs on the whole image, else None."""
    if call.task in TILED_TASKS or call.sam_points:
        return None
    options = base.with_overrides(call.tile)
    if not _tiled(options, original_size(image), max_pixels):
        return None
    return (
        f"not tiled: {call.task.value} runs on the whole image (keypoint "
        "instances, visual prompts and GUI targets are not cut into tiles)"
    )


def decode_pixels(
    width: int,
    height: int,
    *,
    calls: Sequence[ModelCall],
    base: TileOptions,
    max_pixels: int,
) -> int:
    """Pixels to decode a ``width`` x ``height`` image at for ``calls``: the
    model's ``max_pixels`` when none is tiled, else enough that each tile
    keeps ``max_pixels`` of detail (all of the image when a tile is smaller).
    The decoder caps it at REXLABEL_MAX_IMAGE_PIXELS."""
    needed = max_pixels
    for call in calls:
        if call.task not in TILED_TASKS or call.sam_points:
            continue
        options = base.with_overrides(call.tile)
        if _tiled(options, (width, height), max_pixels):
            share = min(1.0, max_pixels / options.size**2)
            needed = max(needed, math.ceil(width * height * share))
    return needed


def crop_tile(image: Image.Image, tile: Tile) -> Image.Image:
    """``tile`` (original pixels) cut from ``image``, which may be a reduced
    decode; the crop's :func:`original_size` is the tile's size, so prompts
    and parsing work in tile pixels (``to_original`` shifts them back)."""
    width, height = original_size(image)
    sx, sy = image.width / width, image.height / height
    box = (
        round(tile.x0 * sx),
        round(tile.y0 * sy),
        max(round(tile.x1 * sx), round(tile.x0 * sx) + 1),
        max(round(tile.y1 * sy), round(tile.y0 * sy) + 1),
    )
    crop = image.crop(box)
    if crop.size != (tile.width, tile.height):
        crop.info[ORIGINAL_SIZE_KEY] = (tile.width, tile.height)
    return crop


def whole_view(image: Image.Image, max_pixels: int) -> Image.Image:
    """``image`` as the whole-image pass sends it: a decode larger than the
    model takes is reduced to ``max_pixels`` here (the engine would resize it
    anyway), keeping its original size for coordinates."""
    if image.width * image.height <= max_pixels:
        return image
    view = resize_for_model(image, max_pixels=max_pixels)
    view.info[ORIGINAL_SIZE_KEY] = original_size(image)
    return view


class ChunkCrops:
    """The views of one chunk's tiled calls, each crop cut once per (image,
    tile) and shared by every call tiling that image alike (the same PIL
    objects), at most ``max_crop_pixels`` pixels of crops
    (:data:`MAX_CHUNK_CROP_PIXELS`)."""

    def __init__(
        self, max_pixels: int, max_crop_pixels: int = MAX_CHUNK_CROP_PIXELS
    ) -> None:
        self.max_pixels = max_pixels
        self.max_crop_pixels = max_crop_pixels
        self.crop_pixels = 0
        """Pixels of the crops cut so far."""
        self._crops: dict[tuple[int, tuple[int, int, int, int]], Image.Image] = {}
        self._wholes: dict[int, Image.Image] = {}
        self._images: list[Image.Image] = []  # alive, so their ids stay theirs

    @property
    def cut(self) -> int:
        """Crops cut so far."""
        return len(self._crops)

    def views(
        self, image: Image.Image, plan: TilePlan, call: ModelCall
    ) -> list[Image.Image]:
        """One image per pass of ``plan``: its tiles in order, then the whole
        image when asked, sharing crops already cut;
        PipelineError when the new ones would pass ``max_crop_pixels``."""
        key = id(image)
        new = {t.box: t for t in plan.tiles if (key, t.box) not in self._crops}
        width, height = original_size(image)
        scale = image.width * image.height / (width * height)
        pixels = round(sum(t.width * t.height for t in new.values()) * scale)
        if self.crop_pixels + pixels > self.max_crop_pixels:
            raise PipelineError(
                f"{describe_call(call)}: its {len(new)} new tile crops "
                f"({pixels:,} pixels) would make this chunk's crops "
                f"{self.crop_pixels + pixels:,} pixels, more than "
                f"{self.max_crop_pixels:,} (MAX_CHUNK_CROP_PIXELS); send fewer "
                "tiled calls per chunk or use larger tiles"
            )
        self.crop_pixels += pixels
        if new:
            self._images.append(image)
        for tile in plan.tiles:
            if (key, tile.box) not in self._crops:
                self._crops[(key, tile.box)] = crop_tile(image, tile)
        views = [self._crops[(key, tile.box)] for tile in plan.tiles]
        if plan.whole_image:
            if key not in self._wholes:
                self._images.append(image)
                self._wholes[key] = whole_view(image, self.max_pixels)
            views.append(self._wholes[key])
        return views


def tiled_result(
    image: Image.Image,
    call: ModelCall,
    plan: TilePlan,
    generations: Sequence[GenerationResult],
    masker: Masker | None,
    *,
    cut_s: float = 0.0,
) -> CallResult:
    """One result from the passes of ``plan`` (``generations`` in its order):
    each parsed in its own pixels, moved to the original image, merged."""
    started = time.perf_counter()
    width, height = original_size(image)
    passes = [(tile, f"tile {_name(tile)}", tile) for tile in plan.tiles]
    if plan.whole_image:  # its source is None: the merge knows it for the pass
        passes.append((Tile(0, 0, width, height), "whole image", None))
    predictions, sources, warnings, texts = [], [], [], []
    truncated = False
    for (tile, name, source), generation in zip(passes, generations, strict=True):
        found, notes, cut = parse_generation(
            call, generation, (tile.width, tile.height)
        )
        truncated = truncated or cut
        predictions.extend(to_original(p, tile) for p in found)
        sources.extend([source] * len(found))
        warnings.extend(f"{name}: {note}" for note in notes)
        texts.append(f"[{name}] {generation.text}")
    merging = time.perf_counter()
    owned = owned_positions(predictions, sources, plan.tiles, (width, height))
    merged = merge_tiled(
        [predictions[i] for i in owned],
        list(plan.tiles),
        sources=[sources[i] for i in owned],
    )
    merged_at = time.perf_counter()
    if len(merged) < len(predictions):
        warnings.append(
            f"merged {len(predictions)} predictions of {plan.passes} passes "
            f"into {len(merged)}"
        )
    timings = {
        key: max(g.timings.get(key, 0.0) for g in generations)
        for key in ("preprocess", "generate", "postprocess", "batch_size")
    }
    timings["tile_cut"] = cut_s
    timings["tile_merge"] = merged_at - merging
    result = finish_result(
        image,
        call,
        merged,
        warnings,
        generations,
        masker=masker,
        raw_text="\n".join(texts),
        truncated=truncated,
        timings=timings,
        tiles=[[t.x0, t.y0, t.x1, t.y1] for t in plan.tiles],
    )
    result.timings["parse"] = time.perf_counter() - started
    return result


def _name(tile: Tile) -> str:
    return f"{tile.x0},{tile.y0},{tile.x1},{tile.y1}"
