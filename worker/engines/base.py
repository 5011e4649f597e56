"""The engine interface: a batch of (image, prompt) in, raw generations out.

Engines know nothing of tasks or grammar beyond the prompt text they are given;
``worker.pipeline`` builds prompts with ``converters`` and parses what comes back.
No torch here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

DEFAULT_MAX_NEW_TOKENS = 4096
"""Upstream's wrapper default; dense scenes need thousands of tokens."""
DEFAULT_TEMPERATURE = 0.0
"""Upstream decodes greedily."""
DEFAULT_TOP_P = 0.8
"""Upstream's wrapper default (irrelevant while greedy, kept for sampling)."""
DEFAULT_TOP_K = 1
"""Upstream's wrapper default."""
DEFAULT_REPETITION_PENALTY = 1.05
"""Upstream's default; it changes greedy outputs, so keep it."""
DEFAULT_MAX_INSTANCES = 300
"""Runaway guard: stop after this many items (upstream issues #150, #178)."""
DEFAULT_MAX_REPEATS = 3
"""Runaway guard: stop when the same item is written this many times in a row."""


@dataclass(frozen=True)
class SamplingSettings:
    """Generation settings; defaults are upstream's (interface spec, section 7)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = DEFAULT_TOP_K
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_repeats: int = DEFAULT_MAX_REPEATS

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(
                f"repetition_penalty must be > 0, got {self.repetition_penalty}"
            )
        if self.max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {self.max_instances}")
        if self.max_repeats < 2:
            raise ValueError(f"max_repeats must be >= 2, got {self.max_repeats}")

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
        finish_reason: ``stop`` (end token), ``length`` (token cap) or
            ``runaway`` (stopped by the runaway guard).
        prompt_tokens / output_tokens: counts without padding.
        timings: seconds per stage: ``preprocess``, ``generate``, ``postprocess``.
    """

    text: str
    token_ids: list[int]
    token_texts: list[str]
    token_logprobs: list[float] | None
    finish_reason: str
    prompt_tokens: int
    output_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    token_top_logprobs: list[dict[str, float]] | None = None

    @property
    def truncated(self) -> bool:
        return self.finish_reason in ("length", "runaway")


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

    def close(self) -> None:  # pragma: no cover - optional
        """Release resources (GPU memory, HTTP sessions)."""
