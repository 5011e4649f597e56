"""REXLABEL_MIN_PIXELS / _MAX_PIXELS / _SYSTEM_PROMPT / _QUANTIZATION: parsed,
checked, and passed by ``create_engine`` to the engines (issue 11 point 15)."""

from __future__ import annotations

import pytest
from PIL import Image

from common import settings
from converters.geometry import MAX_PIXELS, MIN_PIXELS, smart_resize
from converters.prompts import SYSTEM_PROMPT
from worker.engines.base import GenerationRequest, SamplingSettings
from worker.engines.registry import EngineSettingsError, create_engine, engine_options

SMALL_MAX_PIXELS = 64 * 28 * 28
"""A max_pixels far below upstream's, so the resize visibly follows it."""
PHOTO = (1120, 840)
"""An image larger than SMALL_MAX_PIXELS (940,800 px)."""


def test_defaults_are_upstreams_and_bad_values_are_named() -> None:
    assert engine_options("transformers", {}) == {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "system_prompt": SYSTEM_PROMPT,
        "quantization": None,
        "static_cache": False,
    }
    assert "quantization" not in engine_options("openai", {})
    assert "static_cache" not in engine_options("vllm", {})
    with pytest.raises(settings.SettingsError, match="REXLABEL_QUANTIZATION"):
        engine_options("vllm", {"REXLABEL_QUANTIZATION": "gptq"})
    with pytest.raises(settings.SettingsError, match="REXLABEL_MAX_PIXELS"):
        engine_options("vllm", {"REXLABEL_MAX_PIXELS": "100"})
    with pytest.raises(EngineSettingsError, match="REXLABEL_MIN_PIXELS=9000"):
        engine_options(
            "vllm", {"REXLABEL_MIN_PIXELS": "9000", "REXLABEL_MAX_PIXELS": "8000"}
        )
    with pytest.raises(EngineSettingsError, match="openai engine"):
        engine_options("openai", {"REXLABEL_QUANTIZATION": "awq"})
    awq = engine_options("vllm", {"REXLABEL_QUANTIZATION": "awq"})
    assert awq["quantization"] == "awq"  # vLLM's LLM(quantization="awq")


def _chat_text(engine, prompt: str = "Point to cat.") -> str:
    request = GenerationRequest(
        Image.new("RGB", PHOTO, "red"), prompt, SamplingSettings(max_new_tokens=4)
    )
    ids = engine.preprocess([request])["input_ids"][0]
    return engine.processor.tokenizer.decode(ids)


def test_settings_reach_the_transformers_engine(tiny_model_dir, monkeypatch) -> None:
    monkeypatch.setenv("REXLABEL_SYSTEM_PROMPT", "You label warehouse shelves")
    monkeypatch.setenv("REXLABEL_MAX_PIXELS", str(SMALL_MAX_PIXELS))
    engine = create_engine("transformers", str(tiny_model_dir), "cpu")
    try:
        assert engine.max_pixels == SMALL_MAX_PIXELS
        text = _chat_text(engine)
        assert "<|im_start|>system\nYou label warehouse shelves<|im_end|>" in text
        assert SYSTEM_PROMPT not in text
        # the image is resized within the configured area: its visual tokens
        request = GenerationRequest(
            Image.new("RGB", PHOTO, "red"), "x", SamplingSettings(max_new_tokens=4)
        )
        grid = engine.preprocess([request])["image_grid_thw"][0].tolist()
        height, width = smart_resize(PHOTO[1], PHOTO[0], max_pixels=SMALL_MAX_PIXELS)
        assert grid == [1, height // 14, width // 14]
        assert height * width <= SMALL_MAX_PIXELS
    finally:
        engine.close()


def test_default_system_prompt_is_upstreams(tiny_engine) -> None:
    assert f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>" in _chat_text(tiny_engine)


def test_awq_is_checked_before_loading(tiny_model_dir, monkeypatch) -> None:
    from worker.engines.transformers_loading import (
        QuantizationError,
        check_quantization,
    )

    monkeypatch.setenv("REXLABEL_QUANTIZATION", "awq")
    with pytest.raises(QuantizationError, match=r"needs a CUDA device.*'cpu'"):
        create_engine("transformers", str(tiny_model_dir), "cpu")
    # on a GPU the checkpoint must be an AWQ one (the tiny model is not)
    with pytest.raises(QuantizationError, match="not a quantized checkpoint"):
        check_quantization(str(tiny_model_dir), "cuda", "awq")
    check_quantization(str(tiny_model_dir), "cpu", None)  # none: nothing to check
