"""From (image, model call) pairs to canonical predictions.

    prompt (converters.build_prompt)
      -> engine.generate (ONE batch for every call of every image; if the
       batch fails, each request alone, so one bad request fails only its call)
      -> converters.parse_output -> scores (worker.scoring)
      -> duplicates, score_threshold, max_instances
      -> masks (``masker``, e.g. worker.sam's SAM masker) when the call asks

Phrases stay the labels the model wrote; mapping them to Label Studio labels
is the planner's job (``backend.labels``), which knows the label config.
Only ``engine.generate`` touches the device. No settings are read here: the
caller passes the base sampling (``worker.engines.registry.base_sampling``
reads the configured caps).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from common.images.decode import original_size
from common.jobspec import CallResult, ImageJob, ImageResult, MaskOutput, ModelCall
from converters.geometry import MAX_PIXELS
from converters.parser import parse_output
from converters.prediction import Prediction
from converters.prompts import build_prompt
from converters.tasks import Task
from worker.engines.base import (
    Engine,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingSettings,
)
from worker.scoring import score_predictions

log = logging.getLogger(__name__)

ENGINE_DOWN_AFTER = 2
"""After a failed batch its requests are retried one at a time; this many
failures in a row mean the engine itself is failing (server down, device
lost), so the remaining requests get the batch's error without a try each."""

Masker = Callable[[Image.Image, list[Prediction], ModelCall], list[Prediction]]
"""Adds masks to a call's predictions: ``masker(image, predictions, call)``
(``worker.sam`` provides one; it also has ``point_mask`` for clicks)."""


class PipelineError(ValueError):
    """A call cannot run as asked (bad prompt inputs, masks without SAM)."""


def describe_call(call: ModelCall) -> str:
    """How errors name a call: ``call 'boxes' (detection: cat, dog)``."""
    asked = call.task.value
    if call.categories:
        asked += ": " + ", ".join(call.categories)
    return f"call {call.key!r} ({asked})" if call.key else f"call ({asked})"


def call_sampling(call: ModelCall, base: SamplingSettings) -> SamplingSettings:
    """The call's own generation overrides on top of ``base``.

    ``call.max_instances`` does not stop generation: the call keeps its best
    scored predictions after parsing. The guard's ``max_instances`` (the base
    sampling's, from REXLABEL_MAX_INSTANCES, or a ``generation`` override) is
    the runaway cap.
    """
    if call.max_instances is not None and call.max_instances < 1:
        raise PipelineError(f"max_instances must be >= 1, got {call.max_instances}")
    return base.with_overrides(call.generation)


def call_prompt(call: ModelCall, image: Image.Image) -> str:
    """The question for ``call`` about ``image``; PipelineError names the problem."""
    try:
        return build_prompt(
            call.task,
            call.categories,
            keypoint_type=call.keypoint_type,
            visual_prompt_boxes=call.visual_prompt_boxes,
            image_size=original_size(image),
        )
    except ValueError as exc:
        raise PipelineError(f"{describe_call(call)}: {exc}") from None


def _parse_category(call: ModelCall) -> str | None:
    """OCR: the granularity asked (label of every region); keypoint: the fallback
    label of instances whose id has no letters."""
    if (call.task.is_ocr or call.task is Task.KEYPOINT) and call.categories:
        return call.categories[0]
    return None


def drop_duplicates(predictions: list[Prediction]) -> tuple[list[Prediction], int]:
    """Keep the first of predictions with identical type, label, text and coords
    (a looping model writes the same item again)."""
    seen: set[Any] = set()
    kept = []
    for p in predictions:
        key = (p.type, p.label, p.text, p.coords, p.instance_id)
        if key in seen:
            continue
        seen.add(key)
        kept.append(p)
    return kept, len(predictions) - len(kept)


def limit_predictions(
    predictions: list[Prediction],
    *,
    score_threshold: float | None,
    max_instances: int | None,
) -> tuple[list[Prediction], list[str]]:
    """Drop predictions below ``score_threshold``; keep the ``max_instances``
    best-scoring (output order kept; unscored ones rank last)."""
    notes = []
    if score_threshold is not None:
        kept = [p for p in predictions if p.score is None or p.score >= score_threshold]
        if len(kept) < len(predictions):
            notes.append(
                f"{len(predictions) - len(kept)} prediction(s) scored below "
                f"score_threshold {score_threshold}"
            )
        predictions = kept
    if max_instances is not None and len(predictions) > max_instances:
        ranked = sorted(
            range(len(predictions)),
            key=lambda i: (
                -(predictions[i].score if predictions[i].score is not None else -1)
            ),
        )
        chosen = sorted(ranked[:max_instances])
        notes.append(
            f"kept the {max_instances} best of {len(predictions)} predictions "
            "(max_instances)"
        )
        predictions = [predictions[i] for i in chosen]
    return predictions, notes


@dataclass
class _Pending:
    index: int
    image: Image.Image
    call: ModelCall


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
) -> list[CallResult | Exception]:
    """One CallResult, or the exception that stopped it, per pair. Model calls
    go to the engine in one batch (each alone if the batch fails).
    ``generation`` overrides ``sampling`` (default: upstream's) for every call."""
    base = (sampling or SamplingSettings()).with_overrides(dict(generation or {}))
    results: list[CallResult | Exception | None] = [None] * len(pairs)
    pending: list[_Pending] = []
    requests: list[GenerationRequest] = []
    for index, (image, call) in enumerate(pairs):
        try:
            _check_masker(call, masker)
            if call.sam_points:
                results[index] = _point_mask_result(image, call, masker)
                continue
            request = GenerationRequest(
                image, call_prompt(call, image), call_sampling(call, base)
            )
        except Exception as exc:  # reported for this call only
            results[index] = exc
            continue
        requests.append(request)
        pending.append(_Pending(index, image, call))
    generated = _generate_each(engine, requests)
    for item, output in zip(pending, generated, strict=True):
        if isinstance(output, Exception):
            results[item.index] = output
            continue
        try:
            results[item.index] = _call_result(item.image, item.call, output, masker)
        except Exception as exc:  # e.g. SAM failed on this image
            results[item.index] = exc
    return results  # type: ignore[return-value]


def run_batch(
    engine: Engine,
    pairs: Sequence[tuple[Image.Image, ModelCall]],
    *,
    sampling: SamplingSettings | None = None,
    generation: Mapping[str, Any] | None = None,
    masker: Masker | None = None,
) -> list[CallResult]:
    """Run every ``(image, call)`` pair; the model calls go in one engine batch.

    ``sampling`` is the base (default: upstream's), ``generation`` overrides
    it for every call, and each call's own ``generation`` goes on top.
    Returns one CallResult per pair, in order. A call that cannot run raises
    its error (PipelineError names the call) after the batch.
    """
    results = _run_pairs(engine, pairs, sampling, generation, masker)
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


def _call_result(image, call: ModelCall, generation, masker) -> CallResult:
    started = time.perf_counter()
    width, height = original_size(image)
    parsed = parse_output(
        generation.text, call.task, width, height, category=_parse_category(call)
    )
    warnings = list(parsed.warnings)
    predictions = score_predictions(
        parsed.predictions,
        generation.token_texts,
        generation.token_logprobs,
        generation.token_top_logprobs,
    )
    predictions, duplicates = drop_duplicates(predictions)
    if duplicates:
        warnings.append(f"dropped {duplicates} repeated prediction(s)")
    predictions, notes = limit_predictions(
        predictions,
        score_threshold=call.score_threshold,
        max_instances=call.max_instances,
    )
    warnings.extend(notes)
    if generation.finish_reason == FinishReason.RUNAWAY:
        warnings.append(
            "generation stopped by the runaway guard (repeated items or too many)"
        )
    elif generation.finish_reason == FinishReason.LENGTH:
        warnings.append("generation hit max_new_tokens; the answer is cut off")
    if masker is not None and call.masks is not MaskOutput.NONE and predictions:
        predictions = masker(image, predictions, call)
    timings = dict(generation.timings)
    timings["parse"] = time.perf_counter() - started
    return CallResult(
        key=call.key,
        task=call.task,
        predictions=predictions,
        raw_text=generation.text,
        truncated=parsed.truncated or generation.truncated,
        warnings=warnings,
        finish_reason=generation.finish_reason,
        prompt_tokens=generation.prompt_tokens,
        output_tokens=generation.output_tokens,
        timings=timings,
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
) -> list[ImageResult]:
    """Load each image and run all calls of all images in one engine batch.

    ``sampling`` and ``generation`` are as for :func:`run_batch`.

    Images are decoded one at a time, each straight down to the engine's
    ``max_pixels`` when larger (``common.images.decode.decode_image``), so a chunk
    holds model-sized images only; regions stay in original pixels
    (``original_size``). An image that cannot be loaded gets ``error`` set.
    A call that fails (engine, parsing, SAM) is left out of its image's
    ``calls`` and named in its ``error``; the image's other calls are kept,
    other images unaffected.
    ``load`` defaults to ``common.images.loader.load_image`` (Label Studio URLs,
    local paths).
    """
    load = load or functools.partial(_load_image, fit_pixels=model_max_pixels(engine))
    results = [ImageResult(id=job.id, task_id=job.task_id) for job in images]
    loaded: list[tuple[int, Image.Image]] = []
    for index, job in enumerate(images):
        started = time.perf_counter()
        try:
            image = load(job)
        except Exception as exc:  # one bad image must not fail the chunk
            results[index].error = f"cannot load image {job.image!r}: {exc}"
            continue
        finally:
            results[index].load_s = time.perf_counter() - started
        results[index].width, results[index].height = original_size(image)
        loaded.append((index, image))
    pairs = [(image, call) for index, image in loaded for call in images[index].calls]
    try:
        outcomes = _run_pairs(engine, pairs, sampling, generation, masker)
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


def _load_image(job: ImageJob, fit_pixels: int | None = None) -> Image.Image:
    from common.images.loader import load_image

    return load_image(
        job.image,
        task_id=job.task_id,
        local_paths=job.local_paths,
        fit_pixels=fit_pixels,
    )
