"""Engines that run Rex-Omni: one interface, several implementations.

Implementations are imported lazily by :func:`worker.engines.registry.create_engine`
so that importing this package never imports torch or vLLM.
"""

from worker.engines.base import (
    Engine,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingSettings,
)

__all__ = [
    "Engine",
    "FinishReason",
    "GenerationRequest",
    "GenerationResult",
    "SamplingSettings",
]
