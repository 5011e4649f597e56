"""Fixtures of the worker's tests; the tiny model's are in tests/conftest.py."""

from __future__ import annotations

import pytest

from tests.worker.grammar import TemplateLogitsProcessor


@pytest.fixture
def constrained(tiny_engine):
    """The session's model and processor, with a template processor to fill:
    ``constrained(templates)`` is an engine that writes those answers."""
    from worker.engines.transformers_engine import TransformersEngine

    def make(templates: list[str]) -> TransformersEngine:
        processor = TemplateLogitsProcessor(tiny_engine.processor.tokenizer, templates)
        return TransformersEngine(
            tiny_engine.model_id,
            device="cpu",
            loaded=(tiny_engine.model, tiny_engine.processor),
            logits_processors=[processor],
            max_padding=1.0,  # one batch in request order: templates go by row
        )

    return make
