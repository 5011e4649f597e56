"""The engine interface: a batch of (image, prompt) in, raw generations out.

Engines know nothing of tasks or grammar beyond the prompt text they are given;
``worker.pipeline`` builds prompts with ``converters`` and parses what comes back.
No torch here.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from common.jobspec import FinishReason
from common.settings import DEFAULT_MAX_INSTANCES, DEFAULT_MAX_NEW_TOKENS

_SAMPLING_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("max_new_tokens", lambda v: v >= 1, ">= 1"),
    ("temperature", lambda v: v >= 0, ">= 0"),
    ("top_p", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("top_k", lambda v: v >= 0, ">= 0"),
    ("repetition_penalty", lambda v: v > 0, "> 0"),
    ("max_instances", lambda v: v >= 1, ">= 1"),
    ("max_repeats", lambda v: v >= 2, ">= 2"),
)
"""``SamplingSettings``' fields in order, each with its test and the rule that
a ValueError names."""


@dataclass(frozen=True)
class SamplingSettings:
    """Generation settings; the defaults are upstream's wrapper's, and the
    runaway guard's caps are rexlabel's (``worker.engines.runaway_guard_torch``
    describes the guard)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Output tokens at most (the answer is cut there: ``length``)."""
    temperature: float = 0.0
    """Upstream decodes greedily (0); above 0 samples with ``top_p``, ``top_k``."""
    top_p: float = 0.8
    """Upstream's wrapper default (irrelevant while greedy, kept for sampling)."""
    top_k: int = 1
    """Upstream's wrapper default; 0: no top-k cut."""
    repetition_penalty: float = 1.05
    """Upstream's default; it changes greedy outputs, so keep it."""
    max_instances: int = DEFAULT_MAX_INSTANCES
    """Runaway guard: items written before it stops the generation."""
    max_repeats: int = 3
    """Runaway guard: the same item this many times in a row stops it."""

    def __post_init__(self) -> None:
        for name, valid, rule in _SAMPLING_RULES:
            value = getattr(self, name)
            if not valid(value):
                raise ValueError(f"{name} must be {rule}, got {value}")

    def with_overrides(self, overrides: dict[str, Any] | None) -> SamplingSettings:
        """A copy with per-request overrides; unknown names raise ValueError."""
        if not overrides:
            return self
        known = set(self.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown generation setting(s) {unknown}; known: {sorted(known)}"
            )
        values = {name: getattr(self, name) for name in known}
        values.update(overrides)
        return SamplingSettings(**values)


def vllm_sampling_fields(sampling: SamplingSettings) -> dict[str, Any]:
    """The settings under vLLM's names, which its ``SamplingParams`` and
    OpenAI-compatible servers take, as upstream sets them (``top_k`` -1: no
    cut), plus exact grammar text: special tokens kept, no spaces around them."""
    return {
        "max_tokens": sampling.max_new_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k if sampling.top_k > 0 else -1,
        "repetition_penalty": sampling.repetition_penalty,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
    }


@dataclass
class GenerationRequest:
    """One image and the full user prompt for it (already built by converters)."""

    image: Image.Image
    prompt: str
    sampling: SamplingSettings = field(default_factory=SamplingSettings)


@dataclass
class GenerationResult:
    """What an engine produced for one request.

    Attributes:
        text: decoded output with special tokens kept (grammar tokens intact),
            without the final ``<|im_end|>``.
        token_ids: generated token ids (ends with the stop token if one was made).
        token_texts: each generated token decoded alone; their concatenation
            is ``text`` plus any stop token, so character spans map to tokens.
        token_logprobs: log-probability of each generated token (same length
            as ``token_ids``), or None when the engine cannot report them.
        token_top_logprobs: per generated token, the alternatives the model
            weighed there (token text -> log-probability, the top k; an empty
            mapping where none were kept), or None when the engine reports
            none. ``worker.scoring`` reads them at coordinate tokens.
        finish_reason: :class:`FinishReason` ``stop`` (end token), ``length``
            (token cap) or ``runaway`` (stopped by the runaway guard).
        prompt_tokens / output_tokens: counts without padding.
        timings: seconds per stage: ``preprocess``, ``generate``, ``postprocess``.
    """

    text: str
    token_ids: list[int]
    token_texts: list[str]
    token_logprobs: list[float] | None
    finish_reason: FinishReason
    prompt_tokens: int
    output_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    token_top_logprobs: list[dict[str, float]] | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason in (FinishReason.LENGTH, FinishReason.RUNAWAY)


def timed_batch(
    results: list[GenerationResult],
    started: float,
    preprocessed: float,
    generated: float,
    extra: list[dict[str, float]] | None = None,
) -> list[GenerationResult]:
    """Give every result of a batch its ``timings``: seconds per stage from the
    ``time.perf_counter()`` readings that close them (postprocessing ends now),
    the batch's size, and the result's own ``extra`` ones; returns ``results``."""
    timings = {
        "preprocess": preprocessed - started,
        "generate": generated - preprocessed,
        "postprocess": time.perf_counter() - generated,
        "batch_size": float(len(results)),
    }
    for index, result in enumerate(results):
        result.timings = {**timings, **(extra[index] if extra else {})}
    return results


class Engine(ABC):
    """Runs Rex-Omni. Load once, then ``generate`` batches many times.

    Implementations must be safe to call from one thread at a time; the worker
    holds a lock around ``generate``.
    """

    name: str = "engine"

    @property
    @abstractmethod
    def model_id(self) -> str:
        """The model the engine serves (hub id or local directory)."""

    @abstractmethod
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """One result per request, in order."""

    def capacity(self) -> str:
        """What bounds a batch, in words, for the worker's start-up line."""
        return "batch size not reported"

    def close(self) -> None:  # pragma: no cover - optional
        """Release resources (GPU memory, HTTP sessions)."""
