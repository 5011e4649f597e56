"""One call's generations to its :class:`~common.jobspec.CallResult`.

    parse (converters.parse_output) -> scores (worker.scoring) -> duplicates
      -> score_threshold, max_instances -> masks (when the call asks)

``worker.pipeline`` runs the batch and uses :func:`call_result` for a call
made on the whole image; ``worker.tiling_step`` parses each tile with
:func:`parse_generation`, merges, and ends with :func:`finish_result` too.
No settings are read here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from common.images.decode import original_size
from common.jobspec import CallResult, FinishReason, MaskOutput, ModelCall
from converters.parser import parse_output
from converters.prediction import Prediction
from converters.prompts import build_prompt
from converters.tasks import Task
from worker.engines.base import GenerationResult, SamplingSettings
from worker.scoring import score_predictions

Masker = Callable[[Image.Image, list[Prediction], ModelCall], list[Prediction]]
"""Adds masks to a call's predictions: ``masker(image, predictions, call)``
(``worker.sam`` provides one; it also has ``point_mask`` for clicks)."""

FINISH_SEVERITY = (FinishReason.STOP, FinishReason.LENGTH, FinishReason.RUNAWAY)
"""Finish reasons from least to most telling: a tiled call reports its
passes' last one in this order (a runaway tile makes the call runaway)."""


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


def parse_generation(
    call: ModelCall, generation: GenerationResult, size: tuple[int, int]
) -> tuple[list[Prediction], list[str], bool]:
    """``(predictions, warnings, truncated)`` of one generation about an image
    of ``size`` (width, height: pixels its coordinates are in): parsed, scored,
    repeated items dropped."""
    width, height = size
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
    return predictions, warnings, parsed.truncated


def worst_finish(generations: Sequence[GenerationResult]) -> FinishReason:
    """The most telling finish reason of ``generations`` (:data:`FINISH_SEVERITY`)."""
    reasons = [FinishReason(g.finish_reason) for g in generations]
    return max(reasons, key=FINISH_SEVERITY.index, default=FinishReason.STOP)


def finish_result(
    image: Image.Image,
    call: ModelCall,
    predictions: list[Prediction],
    warnings: list[str],
    generations: Sequence[GenerationResult],
    *,
    masker: Masker | None,
    raw_text: str,
    truncated: bool,
    timings: dict[str, float],
    tiles: list[list[int]] | None = None,
) -> CallResult:
    """The call's result from its merged ``predictions``: the limits, the
    finish warnings, masks; tokens summed over ``generations``."""
    predictions, notes = limit_predictions(
        predictions,
        score_threshold=call.score_threshold,
        max_instances=call.max_instances,
    )
    warnings = [*warnings, *notes]
    finish = worst_finish(generations)
    if finish is FinishReason.RUNAWAY:
        warnings.append(
            "generation stopped by the runaway guard (repeated items or too many)"
        )
    elif finish is FinishReason.LENGTH:
        warnings.append("generation hit max_new_tokens; the answer is cut off")
    if masker is not None and call.masks is not MaskOutput.NONE and predictions:
        predictions = masker(image, predictions, call)
    return CallResult(
        key=call.key,
        task=call.task,
        predictions=predictions,
        raw_text=raw_text,
        truncated=truncated or any(g.truncated for g in generations),
        warnings=warnings,
        finish_reason=finish,
        prompt_tokens=sum(g.prompt_tokens for g in generations),
        output_tokens=sum(g.output_tokens for g in generations),
        timings=timings,
        tiles=tiles or [],
    )


def call_result(
    image: Image.Image,
    call: ModelCall,
    generation: GenerationResult,
    masker: Masker | None,
) -> CallResult:
    """The result of a call made once on the whole ``image``."""
    started = time.perf_counter()
    predictions, warnings, truncated = parse_generation(
        call, generation, original_size(image)
    )
    result = finish_result(
        image,
        call,
        predictions,
        warnings,
        [generation],
        masker=masker,
        raw_text=generation.text,
        truncated=truncated,
        timings=dict(generation.timings),
    )
    result.timings["parse"] = time.perf_counter() - started
    return result
