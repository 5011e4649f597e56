"""From (image, model call) pairs to canonical predictions.

    prompt (converters.build_prompt); a tiled call: a prompt per tile
      (worker.tiling_step)
      -> engine.generate (ONE batch for every call and tile of every image;
       if the batch fails, each request alone, so one bad request fails only
       its call)
      -> converters.parse_output -> scores (worker.scoring) -> duplicates
      -> a tiled call: back to original pixels, merged (worker.tiling_step)
      -> score_threshold, max_instances (worker.call_result)
      -> masks (``masker``, e.g. worker.sam's SAM masker) when the call asks

Phrases stay the labels the model wrote; mapping them to Label Studio labels
is the planner's job (``backend.labels``), which knows the label config.
Only ``engine.generate`` touches the device. No settings are read here: the
caller passes the base sampling (``worker.engines.registry.base_sampling``
reads the configured caps) and tiling (``TileOptions.from_settings``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from PIL import Image

from common.images.decode import FitPixels, original_size
from common.jobspec import (
    CallResult,
    FinishReason,
    ImageJob,
    ImageResult,
    MaskOutput,
    ModelCall,
)
from common.tile_options import TileOptions
from converters.geometry import MAX_PIXELS
from worker.call_result import (
    Masker,
    PipelineError,
    call_prompt,
    call_result,
    call_sampling,
    describe_call,
    drop_duplicates,
    limit_predictions,
)
from worker.engines.base import (
    Engine,
    GenerationRequest,
    GenerationResult,
    SamplingSettings,
)
from worker.tiling_step import (
    ChunkCrops,
    TilePlan,
    decode_pixels,
    plan_tiles,
    tiled_result,
    untiled_note,
)

__all__ = [
    "ENGINE_DOWN_AFTER",
    "Masker",
    "PipelineError",
    "call_prompt",
    "call_sampling",
    "describe_call",
    "drop_duplicates",
    "limit_predictions",
    "model_max_pixels",
    "run_batch",
    "run_image_jobs",
]

log = logging.getLogger(__name__)

LOAD_THREADS = 4
"""Images of a chunk loaded at once: downloads wait on the network, and JPEG
decoding and resizing release the GIL, so a GPU worker's engine is not kept
waiting on one image after another. Bounds the decoding memory too: at most
this many images are being decoded (a tiled one up to REXLABEL_MAX_IMAGE_PIXELS)."""
ENGINE_DOWN_AFTER = 2
"""After a failed batch its requests are retried one at a time; this many
failures in a row mean the engine itself is failing (server down, device
lost), so the remaining requests get the batch's error without a try each."""


@dataclass
class _Pending:
    """A call waiting for its generations: ``count`` requests from ``first``
    (one, or a pass per tile of ``plan``)."""

    index: int
    image: Image.Image
    call: ModelCall
    first: int
    count: int = 1
    plan: TilePlan | None = None
    cut_s: float = 0.0
    note: str | None = None


def _generate_each(
    engine: Engine, requests: list[GenerationRequest]
) -> list[GenerationResult | Exception]:
    """One generation, or the engine's exception, per request.

    The requests go in one batch; when it fails, each goes alone so that a
    bad request fails only its own call (see :data:`ENGINE_DOWN_AFTER`).
    """
    if not requests:
        return []
    try:
        return list(engine.generate(requests))
    except Exception as exc:
        if len(requests) == 1:
            return [exc]
        log.warning(
            "batch of %d requests failed (%s); retrying them one at a time",
            len(requests),
            exc,
        )
        batch_error = exc
    out: list[GenerationResult | Exception] = []
    failed_in_a_row = 0
    for request in requests:
        if failed_in_a_row >= ENGINE_DOWN_AFTER:
            out.append(batch_error)
            continue
        try:
            (result,) = engine.generate([request])
        except Exception as exc:
            out.append(exc)
            failed_in_a_row += 1
        else:
            out.append(result)
            failed_in_a_row = 0
    return out


def _run_pairs(
    engine: Engine,
    pairs: Sequence[tuple[Image.Image, ModelCall]],
    sampling: SamplingSettings | None,
    generation: Mapping[str, Any] | None,
    masker: Masker | None,
    tiling: TileOptions | None = None,
) -> list[CallResult | Exception]:
    """One CallResult, or the exception that stopped it, per pair. Model calls
    and the tiles of tiled calls go to the engine in one batch (each alone if
    the batch fails). ``generation`` overrides ``sampling`` (default:
    upstream's) for every call; ``tiling`` is the base tiling (default:
    ``TileOptions()``), each call's ``tile`` on top."""
    base = (sampling or SamplingSettings()).with_overrides(dict(generation or {}))
    tiling = tiling or TileOptions()
    max_pixels = model_max_pixels(engine)
    results: list[CallResult | Exception | None] = [None] * len(pairs)
    pending: list[_Pending] = []
    requests: list[GenerationRequest] = []
    crops = ChunkCrops(max_pixels)
    for index, (image, call) in enumerate(pairs):
        try:
            _check_masker(call, masker)
            if call.sam_points:
                results[index] = _point_mask_result(image, call, masker)
                continue
            item = _Pending(index, image, call, first=len(requests))
            item.plan = plan_tiles(image, call, tiling, max_pixels)
            cut = time.perf_counter()
            views = crops.views(image, item.plan, call) if item.plan else [image]
            item.cut_s, item.count = time.perf_counter() - cut, len(views)
            item.note = (
                item.plan.note
                if item.plan
                else untiled_note(image, call, tiling, max_pixels)
            )
            call_requests = [
                GenerationRequest(
                    view, call_prompt(call, view), call_sampling(call, base)
                )
                for view in views
            ]
        except Exception as exc:  # reported for this call only
            results[index] = exc
            continue
        requests.extend(call_requests)
        pending.append(item)
    generated = _generate_each(engine, requests)
    for item in pending:
        outputs = generated[item.first : item.first + item.count]
        failed = [o for o in outputs if isinstance(o, Exception)]
        try:
            if failed:
                raise failed[0]
            results[item.index] = _result(item, outputs, masker)
        except Exception as exc:  # e.g. SAM failed on this image
            results[item.index] = exc
    return results  # type: ignore[return-value]


def _result(
    item: _Pending, outputs: list[GenerationResult], masker: Masker | None
) -> CallResult:
    if item.plan is not None:
        result = tiled_result(
            item.image, item.call, item.plan, outputs, masker, cut_s=item.cut_s
        )
    else:
        result = call_result(item.image, item.call, outputs[0], masker)
    if item.note:
        result.warnings.append(item.note)
    return result


def run_batch(
    engine: Engine,
    pairs: Sequence[tuple[Image.Image, ModelCall]],
    *,
    sampling: SamplingSettings | None = None,
    generation: Mapping[str, Any] | None = None,
    masker: Masker | None = None,
    tiling: TileOptions | None = None,
) -> list[CallResult]:
    """Run every ``(image, call)`` pair; the model calls go in one engine batch.

    ``sampling`` is the base (default: upstream's), ``generation`` overrides
    it for every call, and each call's own ``generation`` goes on top.
    ``tiling`` is the base tiling (default: ``TileOptions()``), each call's
    ``tile`` on top; a tiled call's tiles join the batch.
    Returns one CallResult per pair, in order. A call that cannot run raises
    its error (PipelineError names the call) after the batch.
    """
    results = _run_pairs(engine, pairs, sampling, generation, masker, tiling)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results  # type: ignore[return-value]


def _check_masker(call: ModelCall, masker: Masker | None) -> None:
    if masker is None and (call.masks is not MaskOutput.NONE or call.sam_points):
        raise PipelineError(
            f"{describe_call(call)} asks for masks but no SAM "
            "model is loaded (set SAM_CHECKPOINT)"
        )


def _point_mask_result(image, call: ModelCall, masker) -> CallResult:
    started = time.perf_counter()
    label = call.categories[0] if call.categories else ""
    output = call.masks if call.masks is not MaskOutput.NONE else MaskOutput.RLE
    prediction = masker.point_mask(image, call.sam_points, label=label, output=output)
    return CallResult(
        key=call.key,
        task=call.task,
        predictions=[prediction],
        finish_reason=FinishReason.SAM,
        timings={"sam": time.perf_counter() - started},
    )


def run_image_jobs(
    engine: Engine,
    images: Sequence[ImageJob],
    *,
    sampling: SamplingSettings | None = None,
    generation: Mapping[str, Any] | None = None,
    masker: Masker | None = None,
    load: Callable[[ImageJob], Image.Image] | None = None,
    tiling: TileOptions | None = None,
) -> list[ImageResult]:
    """Load each image and run all calls of all images in one engine batch.

    ``sampling``, ``generation`` and ``tiling`` are as for :func:`run_batch`.

    Images are loaded :data:`LOAD_THREADS` at a time, each decoded straight
    down to the engine's ``max_pixels`` when larger
    (``common.images.decode.decode_image``), so a chunk holds model-sized
    images only; an image a call tiles is decoded only as
    far down as its tiles allow (``worker.tiling_step.decode_pixels``, within
    REXLABEL_MAX_IMAGE_PIXELS). Regions stay in original pixels
    (``original_size``). An image that cannot be loaded gets ``error`` set.
    A call that fails (engine, parsing, SAM) is left out of its image's
    ``calls`` and named in its ``error``; the image's other calls are kept,
    other images unaffected.
    ``load`` defaults to ``common.images.loader.load_image`` (Label Studio URLs,
    local paths).
    """
    tiling = tiling or TileOptions()
    if load is None:
        max_pixels = model_max_pixels(engine)

        def load(job: ImageJob) -> Image.Image:
            return _load_image(job, fit_rule(job.calls, tiling, max_pixels))

    results = [ImageResult(id=job.id, task_id=job.task_id) for job in images]
    loaded: list[tuple[int, Image.Image]] = []

    def timed_load(job: ImageJob) -> tuple[Image.Image | Exception, float]:
        started = time.perf_counter()
        try:
            return load(job), time.perf_counter() - started
        except Exception as exc:  # one bad image must not fail the chunk
            return exc, time.perf_counter() - started

    with ThreadPoolExecutor(min(LOAD_THREADS, max(1, len(images)))) as pool:
        outcomes = list(pool.map(timed_load, images))
    for index, (job, (image, seconds)) in enumerate(zip(images, outcomes, strict=True)):
        results[index].load_s = seconds
        if isinstance(image, Exception):
            results[index].error = f"cannot load image {job.image!r}: {image}"
            continue
        results[index].width, results[index].height = original_size(image)
        loaded.append((index, image))
    pairs = [(image, call) for index, image in loaded for call in images[index].calls]
    try:
        outcomes = _run_pairs(engine, pairs, sampling, generation, masker, tiling)
    except Exception as exc:  # e.g. an engine answering the wrong count
        log.exception("batch of %d calls failed", len(pairs))
        for index, _ in loaded:
            results[index].error = f"model call failed: {exc}"
        return results
    position = 0
    for index, _ in loaded:
        count = len(images[index].calls)
        mine = outcomes[position : position + count]
        position += count
        errors = []
        for call, outcome in zip(images[index].calls, mine, strict=True):
            if isinstance(outcome, Exception):
                errors.append(_call_error(call, images[index].image, outcome))
            else:
                results[index].calls.append(outcome)
        if errors:
            results[index].error = "; ".join(errors)
            log.warning("image %s: %s", images[index].id, results[index].error)
    return results


def _call_error(call: ModelCall, image: str, exc: Exception) -> str:
    """One failed call in its image's ``error``: the call, the image, why."""
    if isinstance(exc, PipelineError):  # its message names the call already
        return f"{exc} (image {image!r})"
    return f"{describe_call(call)} failed on image {image!r}: {exc}"


def model_max_pixels(engine: Engine) -> int:
    """The most pixels ``engine`` feeds the model (its ``max_pixels``, else
    upstream's): larger images are decoded down to that."""
    return int(getattr(engine, "max_pixels", MAX_PIXELS))


def fit_rule(
    calls: Sequence[ModelCall], tiling: TileOptions, max_pixels: int
) -> Callable[[int, int], int]:
    """The loader's ``fit_pixels`` for an image of ``calls``: from its size,
    the pixels they need decoded (``worker.tiling_step.decode_pixels``).
    ``rexlabel predict`` decodes with it too, so its tiles are the worker's."""

    def fit(width: int, height: int) -> int:
        return decode_pixels(
            width, height, calls=calls, base=tiling, max_pixels=max_pixels
        )

    return fit


def _load_image(job: ImageJob, fit_pixels: FitPixels = None) -> Image.Image:
    from common.images.loader import load_image

    return load_image(
        job.image,
        task_id=job.task_id,
        local_paths=job.local_paths,
        fit_pixels=fit_pixels,
    )
