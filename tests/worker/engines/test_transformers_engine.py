"""The transformers engine on the tiny model: batching, tokens, log-probs, guard."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from PIL import Image

from worker.engines.base import GenerationRequest, SamplingSettings

DETECT = (
    "Detect red square. Output the bounding box coordinates in [x0, y0, x1, y1] format."
)


def _image(width: int, height: int, colour=(90, 120, 200)) -> Image.Image:
    return Image.new("RGB", (width, height), colour)


def test_mixed_tasks_in_one_batch(constrained):
    templates = [
        "<|object_ref_start|>red square<|object_ref_end|><|box_start|>"
        "{B}{B}{B}{B},{B}{B}{B}{B}<|box_end|>",
        "<|object_ref_start|>cat<|object_ref_end|><|box_start|>{B}{B}<|box_end|>",
        "<|object_ref_start|>héllo 猫<|object_ref_end|><|box_start|>"
        "{B}{B}{B}{B}{B}{B}{B}{B}<|box_end|>",
        '```json\n{"person1": {"bbox": " {B} {B} {B} {B} ", "keypoints": '
        '{"nose": " {B} {B} ", "left eye": "unvisible"}}}\n```',
    ]
    engine = constrained(templates)
    sizes = [(112, 112), (300, 200), (640, 480), (224, 448)]
    requests = [
        GenerationRequest(
            _image(w, h), f"prompt {i}", SamplingSettings(max_new_tokens=80)
        )
        for i, (w, h) in enumerate(sizes)
    ]
    results = engine.generate(requests)
    assert len(results) == 4
    assert results[0].timings["batch_size"] == 4  # one generate call
    prompt_counts = [r.prompt_tokens for r in results]
    assert len(set(prompt_counts)) == 4  # per image, without padding
    tokenizer = engine.processor.tokenizer
    for result, template in zip(results, templates, strict=True):
        assert result.finish_reason == "stop"
        assert not result.truncated
        assert result.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert "".join(result.token_texts) == result.text + "<|im_end|>"
        assert result.text == tokenizer.decode(result.token_ids[:-1])
        assert (
            len(result.token_logprobs) == len(result.token_ids) == result.output_tokens
        )
        assert all(lp <= 0 and math.isfinite(lp) for lp in result.token_logprobs)
        fixed = template.split("{B}")
        assert result.text.startswith(fixed[0]) and result.text.endswith(fixed[-1])
        assert set(result.timings) >= {"preprocess", "generate", "postprocess"}
    assert "héllo 猫" in results[2].text


def test_prompt_token_count_excludes_padding(tiny_engine):
    small, large = _image(56, 56), _image(448, 448)
    together = tiny_engine.generate(
        [
            GenerationRequest(small, DETECT, SamplingSettings(max_new_tokens=1)),
            GenerationRequest(large, DETECT, SamplingSettings(max_new_tokens=1)),
        ]
    )
    alone = tiny_engine.generate(
        [GenerationRequest(small, DETECT, SamplingSettings(max_new_tokens=1))]
    )
    assert together[0].prompt_tokens == alone[0].prompt_tokens
    assert together[1].prompt_tokens - together[0].prompt_tokens == (16 * 16 - 4 * 4)


def test_left_padded_batch_matches_single_requests(tiny_engine):
    sampling = SamplingSettings(max_new_tokens=8)
    images = [_image(112, 112), _image(336, 224, (200, 30, 30))]
    batched = tiny_engine.generate(
        [GenerationRequest(im, DETECT, sampling) for im in images]
    )
    for image, result in zip(images, batched, strict=True):
        (single,) = tiny_engine.generate([GenerationRequest(image, DETECT, sampling)])
        assert single.token_ids == result.token_ids
        for a, b in zip(single.token_logprobs, result.token_logprobs, strict=True):
            assert a == pytest.approx(b, abs=1e-3)


def test_requests_with_different_settings_are_grouped(tiny_engine):
    image = _image(112, 112)
    short, long_ = (
        SamplingSettings(max_new_tokens=3),
        SamplingSettings(max_new_tokens=6),
    )
    results = tiny_engine.generate(
        [
            GenerationRequest(image, DETECT, short),
            GenerationRequest(image, DETECT, long_),
            GenerationRequest(image, DETECT, short),
        ]
    )
    assert [r.timings["batch_size"] for r in results] == [2, 1, 2]
    for result, cap in zip(results, (3, 6, 3), strict=True):
        assert result.output_tokens <= cap
        if result.finish_reason == "length":
            assert result.output_tokens == cap
            assert result.truncated


def test_sampling_runs_and_is_seeded(tiny_engine):
    import torch

    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, top_p=0.9, top_k=50)
    request = GenerationRequest(_image(112, 112), DETECT, settings)
    torch.manual_seed(3)
    first = tiny_engine.generate([request])[0]
    torch.manual_seed(3)
    second = tiny_engine.generate([request])[0]
    assert first.token_ids == second.token_ids
    assert len(first.token_logprobs) == len(first.token_ids)


def test_runaway_guard_stops_a_repeating_item(constrained):
    repeated = "<1><2><3><4>,"
    engine = constrained(
        [
            "<|object_ref_start|>red square<|object_ref_end|><|box_start|>"
            + repeated * 40
        ]
    )
    (result,) = engine.generate(
        [
            GenerationRequest(
                _image(112, 112), DETECT, SamplingSettings(max_new_tokens=400)
            )
        ]
    )
    assert result.finish_reason == "runaway"
    assert result.truncated
    # Stopped at the token that closed the third identical item.
    assert result.text.endswith(repeated * 3)
    assert result.text.count("<1><2><3><4>") == 3


def test_runaway_guard_caps_the_number_of_items(constrained):
    boxes = ",".join(f"<{i}><{i + 1}><{i + 2}><{i + 3}>" for i in range(0, 400, 8))
    engine = constrained(
        [
            "<|object_ref_start|>red square<|object_ref_end|><|box_start|>"
            + boxes
            + "<|box_end|>"
        ]
    )
    settings = SamplingSettings(max_new_tokens=400, max_instances=5)
    (result,) = engine.generate([GenerationRequest(_image(112, 112), DETECT, settings)])
    assert result.finish_reason == "runaway"
    assert result.text.count(",") == 5
    assert result.text.endswith("<32><33><34><35>,")


def test_guard_leaves_other_rows_running(constrained):
    repeated = "<1><2><3><4>," * 30
    fine = "<|object_ref_start|>a<|object_ref_end|><|box_start|><5><6><7><8><|box_end|>"
    engine = constrained(
        ["<|object_ref_start|>a<|object_ref_end|><|box_start|>" + repeated, fine]
    )
    settings = SamplingSettings(max_new_tokens=200)
    results = engine.generate(
        [GenerationRequest(_image(112, 112), DETECT, settings) for _ in range(2)]
    )
    assert [r.finish_reason for r in results] == ["runaway", "stop"]
    assert results[1].text == fine


def test_token_texts_keep_split_characters_whole(tiny_engine):
    from worker.engines.transformers_engine import TokenTexts

    tokenizer = tiny_engine.processor.tokenizer
    text = (
        "<|object_ref_start|>猫 ok 🐈<|object_ref_end|><|box_start|><1><2><|box_end|>"
    )
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > 8  # the CJK and emoji bytes are split over byte tokens
    texts = TokenTexts(tokenizer)(ids)
    assert "".join(texts) == text
    assert len(texts) == len(ids)


def test_registry_import_is_light_and_creates_engines(tiny_model_dir):
    code = (
        "import json, sys, worker.engines.registry as r; "
        "missing = {e: r.missing_packages(e) for e in r.ENGINES}; "
        "heavy = {'torch', 'transformers', 'vllm'} & set(sys.modules); "
        "print(json.dumps({'engines': sorted(r.ENGINES), 'missing': missing, "
        "'imported': sorted(heavy)}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    answer = json.loads(out.stdout)
    assert answer["engines"] == ["openai", "transformers", "vllm"]
    # found without importing: .venv has the worker extra, not vLLM (.venv-vllm)
    assert answer["missing"] == {"transformers": [], "vllm": ["vllm"], "openai": []}
    assert answer["imported"] == []

    from worker.engines.registry import UnknownEngineError, create_engine

    engine = create_engine("transformers", str(tiny_model_dir), "cpu")
    assert engine.name == "transformers"
    assert engine.model_id == str(tiny_model_dir)
    with pytest.raises(UnknownEngineError, match="expected one of"):
        create_engine("tensorrt", str(tiny_model_dir), "cpu")


def _planned_engine(tiny_engine, **kwargs):
    from worker.engines.transformers_engine import TransformersEngine

    return TransformersEngine(
        tiny_engine.model_id,
        device="cpu",
        loaded=(tiny_engine.model, tiny_engine.processor),
        **kwargs,
    )


def test_similar_prompt_lengths_are_batched_together(tiny_engine):
    engine = _planned_engine(tiny_engine, max_padding=0.2)
    assert engine.capacity() == "batches of up to 16 requests"
    sampling = SamplingSettings(max_new_tokens=4)
    sizes = [(112, 112), (448, 448), (112, 112), (448, 448)]
    requests = [GenerationRequest(_image(w, h), DETECT, sampling) for w, h in sizes]
    results = engine.generate(requests)
    # 16 and 256 visual tokens: two calls of two, answers in request order
    assert [r.timings["batch_size"] for r in results] == [2, 2, 2, 2]
    assert [r.prompt_tokens for r in results] == [
        tiny_engine.generate([request])[0].prompt_tokens for request in requests
    ]
    alone = [engine.generate([request])[0].token_ids for request in requests]
    assert [r.token_ids for r in results] == alone


def test_a_memory_budget_splits_batches(tiny_engine):
    from worker.engines.batch_plan import ModelFootprint

    engine = _planned_engine(tiny_engine)
    engine.footprint = ModelFootprint.from_config(
        engine.model.config.to_dict(), dtype_bytes=4
    )
    sampling = SamplingSettings(max_new_tokens=4)
    requests = [GenerationRequest(_image(448, 448), DETECT, sampling)] * 5
    prompt = tiny_engine.generate(requests[:1])[0].prompt_tokens
    one = engine.footprint.request_bytes(prompt, 256, 4)
    engine.memory_budget = 2 * 2**30 + 2 * one + 1  # the reserve, then two
    results = engine.generate(requests)
    assert [r.timings["batch_size"] for r in results] == [2, 2, 2, 2, 1]
    assert "GiB free now" in engine.capacity()


def test_a_static_cache_gives_the_same_tokens(tiny_engine):
    from worker.engines.transformers_engine import static_cache_length

    assert [static_cache_length(n) for n in (1, 1024, 1025)] == [1024, 1024, 2048]
    engine = _planned_engine(tiny_engine, static_cache=True)
    sampling = SamplingSettings(max_new_tokens=6)
    requests = [GenerationRequest(_image(112, 112), DETECT, sampling)] * 2
    static = engine.generate(requests)
    dynamic = tiny_engine.generate(requests)
    assert [r.token_ids for r in static] == [r.token_ids for r in dynamic]
    for ours, theirs in zip(static, dynamic, strict=True):
        assert ours.token_logprobs == pytest.approx(theirs.token_logprobs, abs=1e-4)


def test_free_memory_on_a_gpu_counts_pytorchs_unused_cache(tiny_engine, monkeypatch):
    import torch

    from worker.engines.batch_plan import ModelFootprint

    engine = _planned_engine(tiny_engine)
    assert engine.free_memory() is None  # CPU: no limit
    engine.footprint = ModelFootprint.from_config(
        engine.model.config.to_dict(), dtype_bytes=2
    )
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (5 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * gib)
    assert engine.free_memory() == 7 * gib
    assert "7.0 GiB free now" in engine.capacity()
    engine.memory_budget = gib  # a fixed budget wins
    assert engine.free_memory() == gib
