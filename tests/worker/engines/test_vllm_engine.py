"""The vLLM engine: plumbing in the main venv (no vLLM there), then the real
engine in .venv-vllm on the trained tiny model (slow). The OpenAI engine
against a real vLLM server is in test_openai_engine.py."""

import json
import math
import subprocess
import sys
import time
from dataclasses import asdict
from types import SimpleNamespace

import pytest
from PIL import Image

from common.settings import (
    DEFAULT_VLLM_GPU_MEMORY_UTILIZATION,
    DEFAULT_VLLM_MAX_MODEL_LEN,
    setting,
)
from converters.prompts import build_prompt
from converters.tasks import Task
from tests.worker.vllm_env import (
    MAX_NEW_TOKENS,
    REPO_ROOT,
    TINY_MAX_MODEL_LEN,
    VLLM_PYTHON,
    check_detection,
    held_out,
    needs_vllm_venv,
    vllm_env,
)
from worker.engines.base import GenerationRequest, SamplingSettings
from worker.engines.vllm_engine import (
    GUARD_LOGITS_PROCESSOR,
    VLLMEngine,
    choose_tokenizer_mode,
    result_from_output,
)
from worker.scoring import SCORE_TOP_LOGPROBS

GUARD_CHECK = REPO_ROOT / "tests" / "worker" / "vllm_guard_check.py"
SUBPROCESS_TIMEOUT_S = 600
"""Loading vLLM takes 5-60 s (more on a busy machine); the run is bounded."""
# Plumbing (no vLLM needed) -------------------------------------------------------


def test_tokenizer_mode_is_slow_where_vllm_has_it_else_auto():
    assert choose_tokenizer_mode({"auto", "slow", "mistral"}) == "slow"
    assert choose_tokenizer_mode({"auto", "hf", "mistral"}) == "auto"


def test_importing_the_engine_does_not_import_vllm():
    code = (
        "import sys, worker.engines.vllm_engine, worker.engines.registry;"
        "print('vllm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert out.stdout.strip() == "False", out.stderr


def test_named_defaults_match_the_settings():
    assert setting("REXLABEL_VLLM_MAX_MODEL_LEN").default == DEFAULT_VLLM_MAX_MODEL_LEN
    assert (
        setting("REXLABEL_VLLM_GPU_MEMORY_UTILIZATION").default
        == DEFAULT_VLLM_GPU_MEMORY_UTILIZATION
    )
    # A dense scene: the largest image's tokens plus the full output budget.
    assert DEFAULT_VLLM_MAX_MODEL_LEN >= 2560 + 200 + 4096


class _RecordingLLM:
    """Stands in for ``vllm.LLM`` to check what the engine hands it and how it
    reads vLLM's output objects (the real LLM runs in the slow tests)."""

    def __init__(self, tokenizer, outputs):
        self.tokenizer, self.outputs, self.calls = tokenizer, outputs, []

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        return self.outputs


def _kwargs_instead_of_params(sampling, overrides=None, in_engine_guard=True):
    """``sampling_params`` without vLLM: the keyword arguments it would pass."""
    from worker.engines.vllm_engine import sampling_kwargs

    return {**sampling_kwargs(sampling, in_engine_guard), **(overrides or {})}


def _logprob(value, text):
    return SimpleNamespace(logprob=value, rank=1, decoded_token=text)


def test_prompts_and_outputs_are_mapped(tiny_model_dir, monkeypatch):
    from transformers import AutoTokenizer

    from worker.engines import vllm_engine

    monkeypatch.setattr(vllm_engine, "sampling_params", _kwargs_instead_of_params)

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    pieces = ["<|object_ref_start|>", "<|box_start|>", "<1>", "<|im_end|>"]
    ids = tokenizer.convert_tokens_to_ids(pieces)
    entries = [
        {ids[0]: _logprob(-0.5, pieces[0])},
        {ids[1]: _logprob(-0.25, None)},  # no decoded text: the tokenizer's
        {ids[2]: _logprob(-1.5, "<1>"), ids[2] + 1: _logprob(-0.5, "<2>")},
        {ids[3]: _logprob(float("-inf"), pieces[3])},
    ]
    completion = SimpleNamespace(
        text="<|object_ref_start|><|box_start|><1>",
        token_ids=ids,
        logprobs=entries,
        finish_reason="stop",
    )
    llm = _RecordingLLM(
        tokenizer,
        [SimpleNamespace(outputs=[completion], prompt_token_ids=list(range(30)))],
    )
    engine = VLLMEngine(str(tiny_model_dir), llm=llm)
    image = Image.new("RGB", (300, 90), (1, 2, 3))
    (result,) = engine.generate(
        [GenerationRequest(image, "Detect cat.", SamplingSettings(max_new_tokens=9))]
    )

    ((prompt,), (params,)) = llm.calls[0]
    assert params == {
        "max_tokens": 9,
        "temperature": 0.0,
        "top_p": 0.8,
        "top_k": 1,
        "repetition_penalty": 1.05,
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "stop": ["<|im_end|>"],
        "logprobs": vllm_engine.LOGPROBS_PER_TOKEN,
        "extra_args": {"rexlabel_guard": {"max_repeats": 3, "max_instances": 300}},
    }
    assert prompt["prompt"].endswith(
        "<|vision_start|><|image_pad|><|vision_end|>Detect cat.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert prompt["prompt"].startswith(
        "<|im_start|>system\nYou are a helpful assistant"
    )
    assert prompt["multi_modal_data"]["image"].size == (308, 84)  # smart_resize
    assert result.text == "<|object_ref_start|><|box_start|><1>"
    assert result.token_texts == pieces
    assert result.token_logprobs[:3] == [-0.5, -0.25, -1.5]
    assert math.isinf(result.token_logprobs[3])
    # a coordinate token's alternatives reach the scorer; others are not kept
    assert result.token_top_logprobs == [{}, {}, {"<1>": -1.5, "<2>": -0.5}, {}]
    assert result.prompt_tokens == 30 and result.output_tokens == 4
    assert result.finish_reason == "stop"

    # A position without its token's log-prob: no log-probs rather than a guess.
    entries[2] = None
    (partial,) = engine.generate([GenerationRequest(image, "Detect cat.")])
    assert partial.token_logprobs is None
    assert partial.token_texts == pieces


LOOP = [
    "<|object_ref_start|>",
    "cat",
    "<|object_ref_end|>",
    "<|box_start|>",
    *["<1>", "<2>", "<3>", "<4>", ","] * 6,
]
"""A looping answer: the same box six times (cut by max_tokens)."""
LOOP_CUT = 4 + 3 * 5
"""Tokens up to the third identical box's separator."""


def _output(texts, *, finish="length", text=None, decoded=True):
    """A vLLM ``RequestOutput`` in plain Python: ids 500.., log-prob -0.01*i;
    every third token has no decoded text (the decode function gives it)."""
    ids = [500 + i for i in range(len(texts))]
    entries = [
        {i: _logprob(-0.01 * k, t if decoded and k % 3 else None)}
        for k, (i, t) in enumerate(zip(ids, texts, strict=True))
    ]
    completion = SimpleNamespace(
        text="".join(texts) if text is None else text,
        token_ids=ids,
        logprobs=entries,
        finish_reason=finish,
    )
    decode = dict(zip(ids, texts, strict=True)).__getitem__
    return SimpleNamespace(outputs=[completion], prompt_token_ids=[1] * 7), decode


def test_a_looping_output_is_cut_at_the_guards_stop():
    output, decode = _output(LOOP)
    result = result_from_output(output, decode, SamplingSettings(max_repeats=3))
    assert result.finish_reason == "runaway" and result.truncated
    assert result.token_texts == LOOP[:LOOP_CUT]
    assert result.text == "".join(LOOP[:LOOP_CUT])
    assert result.token_ids == list(range(500, 500 + LOOP_CUT))
    assert result.token_logprobs == pytest.approx([-0.01 * k for k in range(LOOP_CUT)])
    assert (result.prompt_tokens, result.output_tokens) == (7, LOOP_CUT)


def test_the_instance_cap_cuts_an_output_that_ended_by_itself():
    texts = ["<|box_start|>"]
    for i in range(10):
        texts += [f"<{i}>", f"<{i}>", f"<{i + 1}>", f"<{i + 1}>", ","]
    texts += ["<|box_end|>", "<|im_end|>"]
    output, decode = _output(texts, finish="stop", text="".join(texts[:-1]))
    sampling = SamplingSettings(max_instances=4)
    result = result_from_output(output, decode, sampling)
    assert result.finish_reason == "runaway"
    assert result.token_texts == texts[: 1 + 4 * 5]
    assert result.text.endswith("<3><3><4><4>,") and result.output_tokens == 21


def test_an_output_within_the_limits_is_kept_whole():
    texts = [*LOOP[:14], "<|box_end|>", "<|im_end|>"]  # two identical boxes
    output, decode = _output(texts, finish="stop", text="".join(texts[:-1]))
    result = result_from_output(output, decode, SamplingSettings(max_repeats=3))
    assert result.finish_reason == "stop"
    assert result.token_texts == texts and result.text == "".join(texts[:-1])
    assert len(result.token_logprobs) == result.output_tokens == len(texts)


def test_a_trigger_on_the_stop_token_is_a_stop():
    # Keypoint JSON: 4-bin runs outside box spans; the third ends at <|im_end|>.
    box = [" ", "<1>", " ", "<2>", " ", "<3>", " ", "<4>", " "]
    texts = [*box, '"', *box, '"', *box, "<|im_end|>"]
    output, decode = _output(texts, finish="stop", text="".join(texts[:-1]))
    result = result_from_output(output, decode, SamplingSettings(max_repeats=3))
    assert result.finish_reason == "stop" and result.token_texts == texts


def test_a_cut_keeps_the_outputs_own_text_where_token_texts_split_a_character():
    # vLLM decodes each token alone: a character split over two byte tokens
    # reads as two replacement characters in the token texts.
    texts = [
        "<|object_ref_start|>",
        "\ufffd",
        "\ufffd",
        "<|object_ref_end|>",
        *LOOP[3:],
    ]
    output, decode = _output(texts, text="".join(["<|object_ref_start|>é", *texts[3:]]))
    result = result_from_output(output, decode, SamplingSettings(max_repeats=3))
    assert result.finish_reason == "runaway"
    kept = LOOP_CUT + 1  # one more token before the loop
    assert result.token_texts == texts[:kept]
    assert result.text == "<|object_ref_start|>é" + "".join(texts[3:kept])


def test_sampling_overrides_go_on_every_request(tiny_model_dir, monkeypatch):
    from transformers import AutoTokenizer

    from worker.engines import vllm_engine

    output, _ = _output(["<|im_end|>"], finish="stop", text="")
    llm = _RecordingLLM(AutoTokenizer.from_pretrained(tiny_model_dir), [output])
    monkeypatch.setattr(vllm_engine, "sampling_params", _kwargs_instead_of_params)
    engine = VLLMEngine(
        str(tiny_model_dir), llm=llm, sampling_overrides={"min_tokens": 5}
    )
    engine.generate([GenerationRequest(Image.new("RGB", (64, 64)), "Detect cat.")])
    ((_,), (params,)) = llm.calls[0]
    assert params["min_tokens"] == 5 and params["stop"] == ["<|im_end|>"]
    assert engine.capacity().startswith("continuous batching")


def test_without_v1_logits_processors_the_guard_limits_are_not_sent():
    from worker.engines.vllm_engine import sampling_kwargs, supports_guard_processor

    assert not supports_guard_processor()  # this venv has no vLLM
    assert "extra_args" not in sampling_kwargs(SamplingSettings(), False)
    assert "extra_args" in sampling_kwargs(SamplingSettings())


def test_the_guard_processor_path_names_the_class():
    module, _, name = GUARD_LOGITS_PROCESSOR.partition(":")
    source = (REPO_ROOT / (module.replace(".", "/") + ".py")).read_text()
    assert f"class {name}(LogitsProcessor)" in source


# Real vLLM (slow) ------------------------------------------------------------------
SCORE_TOLERANCE = 0.02
"""Scores of the two engines from the same top-20 alternatives: float32 kernels
differ a little between them (log-probs within 0.05)."""


def _scores(result: dict, sample) -> list[float]:
    """The detection scores ``worker.scoring`` gives a result (as a dict)."""
    from converters.parser import parse_output
    from worker.scoring import score_predictions

    parsed = parse_output(result["text"], Task.DETECTION, *sample.image.size)
    scored = score_predictions(
        parsed.predictions,
        result["token_texts"],
        result["token_logprobs"],
        result["token_top_logprobs"],
    )
    assert scored and all(p.score is not None for p in scored)
    return [p.score for p in scored]


@pytest.mark.slow
@needs_vllm_venv
def test_in_engine_guard_against_vllms_logits_processor_interface(tiny_model_dir):
    """The runaway guard as vLLM runs it: rows, moves, placeholders, forcing."""
    out = subprocess.run(
        [str(VLLM_PYTHON), str(GUARD_CHECK), str(tiny_model_dir)],
        capture_output=True,
        text=True,
        env=vllm_env(),
        cwd=REPO_ROOT,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # the second identical box ends at its comma; from the next step on, the
    # looping row may only end its answer, the other rows are untouched
    assert found["forced_at"] == found["second_comma"]
    assert found["rows_forced"] == [True, False, False]
    assert found["allowed"] == [found["stop_id"]]
    assert found["after_move"] == [False, False, True]
    assert found["supported"]  # vLLM 0.32 takes v1 logits processors


@pytest.mark.slow
@needs_vllm_venv
def test_in_process_vllm_engine_on_the_trained_model(
    trained_model_dir, trained_engine, tmp_path, capsys
):
    """Our engine in .venv-vllm (its command line), all images in one batch."""
    python = VLLM_PYTHON
    samples = held_out()
    command = [str(python), "-m", "worker.engines.vllm_engine", str(trained_model_dir)]
    prompts = [build_prompt(Task.DETECTION, [s.phrase]) for s in samples]
    for i, (sample, prompt) in enumerate(zip(samples, prompts, strict=True)):
        path = tmp_path / f"{i}.png"
        sample.image.save(path)
        command += ["--image", str(path), "--prompt", prompt]
    command += ["--max-new-tokens", str(MAX_NEW_TOKENS), "--dtype", "float32"]
    command += ["--max-model-len", str(TINY_MAX_MODEL_LEN), "--enforce-eager"]
    started = time.perf_counter()
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=vllm_env(),
        cwd=REPO_ROOT,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    seconds = time.perf_counter() - started
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads(out.stdout.strip().splitlines()[-1])
    assert payload["tokenizer_mode"] == "auto"  # vLLM 0.32 has no slow mode
    results = payload["results"]
    for result, sample in zip(results, samples, strict=True):
        check_detection(result, sample)

    # The same greedy answer as the transformers engine on the same model.
    references = trained_engine.generate(
        [
            GenerationRequest(
                s.image, p, SamplingSettings(max_new_tokens=MAX_NEW_TOKENS)
            )
            for s, p in zip(samples, prompts, strict=True)
        ]
    )
    for ours, reference, sample in zip(results, references, samples, strict=True):
        assert ours["text"] == reference.text
        assert ours["token_ids"] == reference.token_ids
        assert ours["token_logprobs"] == pytest.approx(
            reference.token_logprobs, abs=0.05
        )
        # the same scores, given the same alternatives (vLLM returns the top 20)
        top = [
            dict(sorted(a.items(), key=lambda kv: -kv[1])[:SCORE_TOP_LOGPROBS])
            for a in reference.token_top_logprobs
        ]
        same_view = {**asdict(reference), "token_top_logprobs": top}
        assert _scores(ours, sample) == pytest.approx(
            _scores(same_view, sample), abs=SCORE_TOLERANCE
        )
    with capsys.disabled():
        timing = results[0]["timings"]
        print(
            f"\nvLLM in-process: load {payload['load_s']:.1f} s, first batch of "
            f"{len(samples)} {timing['generate']:.2f} s, subprocess {seconds:.1f} s"
        )
