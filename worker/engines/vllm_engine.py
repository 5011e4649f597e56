"""The vLLM engine: Rex-Omni in-process through ``vllm.LLM``, with upstream's settings.

Faster than transformers on GPUs (continuous batching, paged KV cache). The
whole batch goes to one ``LLM.generate`` call, each request with its own
``SamplingParams``; images are pre-resized with smart_resize as upstream's
vLLM path does. Per token it keeps the id, its text and its log-probability.

vLLM is imported when the engine is built, never at module import: the package
works without it. Smoke test from a venv that has vLLM::

    python -m worker.engines.vllm_engine MODEL --image a.jpg --prompt "Detect cat."

The runaway guard (``worker.engines.runaway_guard_text``'s rules, the request's
``max_repeats`` and ``max_instances``) runs inside vLLM as a logits processor
(``worker.engines.vllm_guard``): a looping answer is ended one token after the
trigger instead of running to ``max_tokens``. Each finished output is then cut
after the token at which the transformers engine would have stopped, with
finish reason ``runaway`` (the same rules on the token texts, so a vLLM that
cannot load the processor still gets the same answers, only later).

Throughput: the whole batch goes to vLLM at once (continuous batching), and
prefix caching shares the KV cache of the system prompt and chat template
across requests. ``capacity()`` says how many tokens vLLM's KV cache holds.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import sys
import time
import typing
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from common.images.decode import resize_for_model
from common.logs import json_logging
from common.settings import (
    DEFAULT_VLLM_GPU_MEMORY_UTILIZATION,
    DEFAULT_VLLM_MAX_MODEL_LEN,
)
from converters.geometry import MAX_PIXELS, MIN_PIXELS
from converters.grammar import IM_END
from converters.prompts import SYSTEM_PROMPT, build_messages
from worker.engines.base import (
    Engine,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingSettings,
    timed_batch,
    vllm_sampling_fields,
)
from worker.engines.runaway_guard_text import RunawayScanner
from worker.scoring import SCORE_TOP_LOGPROBS, bin_value

log = logging.getLogger(__name__)

LIMIT_MM_PER_PROMPT = {"image": 1}
"""Rex-Omni answers about exactly one image per request."""
UPSTREAM_TOKENIZER_MODE = "slow"
"""Upstream passes ``tokenizer_mode="slow"``; newer vLLM has no such mode."""
FALLBACK_TOKENIZER_MODE = "auto"
"""Used where ``slow`` is gone (vLLM 0.32 measured here); the fast tokenizer
decodes the added ``<0>``..``<999>`` tokens the same way."""
GUARD_ARG = "rexlabel_guard"
"""``SamplingParams.extra_args`` key of the in-engine runaway guard's limits
(read by ``worker.engines.vllm_guard``, which imports vLLM)."""
GUARD_LOGITS_PROCESSOR = "worker.engines.vllm_guard:RunawayLogitsProcessor"
"""The in-engine runaway guard, as ``LLM(logits_processors=[...])`` takes it."""
PREPROCESS_THREADS = 4
"""Requests prepared at once: the resize to the model's size (PIL, a few ms
for a 640x480 photo) releases the GIL, so this divides the worker's time per
image before vLLM gets the batch."""
LOGPROBS_PER_TOKEN = SCORE_TOP_LOGPROBS
"""Ask vLLM for the sampled token's log-probability plus the top alternatives,
which ``worker.scoring`` weighs at coordinate tokens (vLLM's default
``max_logprobs`` allows this many)."""


def supported_tokenizer_modes() -> set[str] | None:
    """The ``tokenizer_mode`` values the installed vLLM declares, if it says."""
    for module_name in ("vllm.config.model", "vllm.config"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        modes = getattr(module, "TokenizerMode", None)
        if modes is not None:
            return {str(mode) for mode in typing.get_args(modes)}
    return None


def supports_guard_processor() -> bool:
    """Whether the installed vLLM takes v1 logits processors
    (``LLM(logits_processors=...)``, vLLM 0.10.2 and later), which the
    in-engine runaway guard is (imports vLLM's engine arguments)."""
    import dataclasses

    try:
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        return False
    fields = {f.name for f in dataclasses.fields(EngineArgs)}
    return "logits_processors" in fields and (
        importlib.util.find_spec("vllm.v1.sample.logits_processor") is not None
    )


def choose_tokenizer_mode(modes: set[str] | None = None) -> str:
    """``slow`` (upstream's choice) where vLLM still has it, else ``auto``."""
    modes = supported_tokenizer_modes() if modes is None else modes
    if modes is None or UPSTREAM_TOKENIZER_MODE in modes:
        return UPSTREAM_TOKENIZER_MODE
    return FALLBACK_TOKENIZER_MODE


def sampling_kwargs(
    sampling: SamplingSettings, in_engine_guard: bool = True
) -> dict[str, Any]:
    """``SamplingParams`` arguments for our settings, as upstream sets them, plus
    exact grammar text (no spaces around special tokens), log-probs and the
    in-engine runaway guard's limits (``worker.engines.vllm_guard``)."""
    kwargs = {
        **vllm_sampling_fields(sampling),
        "stop": [IM_END],  # upstream's stop string (also the EOS token)
        "logprobs": LOGPROBS_PER_TOKEN,
    }
    if in_engine_guard:
        kwargs["extra_args"] = {
            GUARD_ARG: {
                "max_repeats": sampling.max_repeats,
                "max_instances": sampling.max_instances,
            }
        }
    return kwargs


def _token_text(token_id: int, entry: Any, decode: Callable[[int], str]) -> str:
    """A token's text: vLLM's decoded log-prob text, else ``decode(token_id)``."""
    logprob = (entry or {}).get(token_id)
    text = getattr(logprob, "decoded_token", None)
    return decode(token_id) if text is None else text


def _alternatives(
    text: str, entry: Any, decode: Callable[[int], str]
) -> dict[str, float]:
    """A coordinate token's alternatives (text -> log-prob) from vLLM's
    per-position log-probs; empty for other tokens (scoring reads only those)."""
    if not entry or bin_value(text) is None:
        return {}
    alternatives = {}
    for token_id, logprob in entry.items():
        name = logprob.decoded_token
        alternatives[decode(token_id) if name is None else name] = float(
            logprob.logprob
        )
    return alternatives


def result_from_output(
    output: Any, decode: Callable[[int], str], sampling: SamplingSettings
) -> GenerationResult:
    """A ``GenerationResult`` from one vLLM ``RequestOutput`` (first completion).

    ``decode`` gives a token id's text where vLLM gave none. The runaway
    guard's rules run over the token texts; on a trigger the ids, texts,
    log-probs and text end at the triggering token and the finish reason is
    ``runaway`` (a trigger on the stop token itself is a plain stop, as in the
    transformers engine).
    """
    completion = output.outputs[0]
    ids = list(completion.token_ids)
    entries = completion.logprobs or [None] * len(ids)
    texts = [_token_text(i, e, decode) for i, e in zip(ids, entries, strict=False)]
    logprobs: list[float] | None = None
    top: list[dict[str, float]] | None = None
    if completion.logprobs is not None:
        top = [
            _alternatives(t, e, decode)
            for t, e in zip(texts, completion.logprobs, strict=False)
        ]
        logprobs = []
        for token_id, entry in zip(ids, completion.logprobs, strict=False):
            value = entry.get(token_id) if entry else None
            if value is None:  # vLLM always reports the sampled token
                logprobs = top = None
                break
            logprobs.append(float(value.logprob))
    finish = (
        FinishReason.LENGTH
        if completion.finish_reason == FinishReason.LENGTH
        else FinishReason.STOP
    )
    text = completion.text.removesuffix(IM_END)  # servers that keep the stop string
    scanner = RunawayScanner(
        max_repeats=sampling.max_repeats, max_instances=sampling.max_instances
    )
    end = scanner.feed_all(texts)
    if end is not None and texts[end] != IM_END:
        head = "".join(texts[: end + 1])
        tail = "".join(texts[end + 1 :]).removesuffix(IM_END)
        if not text.startswith(head) and tail and text.endswith(tail):
            head = text[: len(text) - len(tail)]  # texts differ inside characters
        text, finish = head, FinishReason.RUNAWAY
        ids, texts = ids[: end + 1], texts[: end + 1]
        logprobs = logprobs[: end + 1] if logprobs is not None else None
        top = top[: end + 1] if top is not None else None
    return GenerationResult(
        text=text,
        token_ids=ids,
        token_texts=texts,
        token_logprobs=logprobs,
        finish_reason=finish,
        prompt_tokens=len(output.prompt_token_ids or []),
        output_tokens=len(ids),
        token_top_logprobs=top,
    )


def sampling_params(
    sampling: SamplingSettings,
    overrides: dict[str, Any] | None = None,
    in_engine_guard: bool = True,
):
    """vLLM ``SamplingParams`` for ``sampling``, then ``overrides`` (imports vLLM)."""
    from vllm import SamplingParams

    kwargs = sampling_kwargs(sampling, in_engine_guard)
    return SamplingParams(**{**kwargs, **(overrides or {})})


class VLLMEngine(Engine):
    """Rex-Omni on an in-process ``vllm.LLM``.

    Args:
        model: hub id or local directory (``create_engine`` passes
            REXLABEL_MODEL).
        device: accepted for the registry; vLLM picks its platform itself.
        max_model_len: prompt plus output tokens per request: up to ~2,700
            prompt tokens (2,560 image tokens plus text) and 4,096 output
            tokens fit in the default (REXLABEL_VLLM_MAX_MODEL_LEN).
        gpu_memory_utilization: share of GPU memory vLLM may take for weights
            and KV cache (REXLABEL_VLLM_GPU_MEMORY_UTILIZATION).
        tokenizer_mode: default: ``slow`` where supported, else ``auto``.
        quantization: e.g. ``awq`` for ``IDEA-Research/Rex-Omni-AWQ``
            (REXLABEL_QUANTIZATION through create_engine).
        min_pixels / max_pixels: the area bounds images are resized within
            (REXLABEL_MIN_PIXELS / REXLABEL_MAX_PIXELS).
        system_prompt: the chat's system message (REXLABEL_SYSTEM_PROMPT).
        sampling_overrides: ``SamplingParams`` fields set on every request
            after ours (benches force lengths with ``min_tokens`` and
            ``ignore_eos``).
        llm_kwargs: any other ``vllm.LLM`` argument (``dtype``,
            ``enforce_eager``, ``tensor_parallel_size`` ...).
        llm: an already built ``vllm.LLM`` to use instead of building one.
    """

    name = "vllm"

    def __init__(
        self,
        model: str,
        device: str | None = None,
        *,
        max_model_len: int = DEFAULT_VLLM_MAX_MODEL_LEN,
        gpu_memory_utilization: float = DEFAULT_VLLM_GPU_MEMORY_UTILIZATION,
        tokenizer_mode: str | None = None,
        quantization: str | None = None,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
        system_prompt: str = SYSTEM_PROMPT,
        sampling_overrides: dict[str, Any] | None = None,
        llm: Any = None,
        **llm_kwargs: Any,
    ) -> None:
        self.sampling_overrides = dict(sampling_overrides or {})
        self._model_id = _merged_weights(model) if llm is None else model
        self.device = device
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.system_prompt = system_prompt
        self.max_model_len = max_model_len
        self.tokenizer_mode = tokenizer_mode or choose_tokenizer_mode()
        self.in_engine_guard = True
        started = time.perf_counter()
        if llm is None:
            self.in_engine_guard = supports_guard_processor()
            llm = self._build_llm(gpu_memory_utilization, quantization, llm_kwargs)
        self.llm = llm
        self.processor = self._load_processor()
        self.tokenizer = self.llm.get_tokenizer()
        log.info(
            "vLLM engine on %s ready in %.1f s (tokenizer_mode=%s, max_model_len=%d)",
            self._model_id,
            time.perf_counter() - started,
            self.tokenizer_mode,
            self.max_model_len,
        )

    def capacity(self) -> str:
        """What bounds a batch: vLLM's KV cache, in tokens and in requests of
        ``max_model_len`` tokens (more fit when shorter), when vLLM says."""
        cache = getattr(
            getattr(getattr(self.llm, "llm_engine", None), "vllm_config", None),
            "cache_config",
            None,
        )
        blocks = getattr(cache, "num_gpu_blocks", None)
        if not blocks:
            return "continuous batching (vLLM sizes its own KV cache)"
        tokens = int(blocks) * int(cache.block_size)
        return (
            f"continuous batching; KV cache {tokens:,} tokens: "
            f"{tokens // self.max_model_len} requests of max_model_len "
            f"({self.max_model_len}) at once, more when shorter"
        )

    def _build_llm(
        self, memory: float, quantization: str | None, extra: dict[str, Any]
    ) -> Any:
        from vllm import LLM

        kwargs = dict(
            model=self._model_id,
            tokenizer=self._model_id,
            max_model_len=self.max_model_len,
            gpu_memory_utilization=memory,
            limit_mm_per_prompt=dict(LIMIT_MM_PER_PROMPT),
            # the system prompt and chat template open every request
            enable_prefix_caching=True,
            tensor_parallel_size=1,
            trust_remote_code=True,
            quantization=quantization,
            # vLLM's own switch for its loading bar overrides TQDM_DISABLE
            use_tqdm_on_load=not json_logging(),
        )
        if self.in_engine_guard:
            kwargs["logits_processors"] = [GUARD_LOGITS_PROCESSOR]
        else:
            log.warning(
                "this vLLM takes no v1 logits processors: the runaway guard cuts "
                "looping answers after they end, not as they loop"
            )
        kwargs.update(extra)
        try:
            return LLM(tokenizer_mode=self.tokenizer_mode, **kwargs)
        except ValueError as exc:
            if self.tokenizer_mode != UPSTREAM_TOKENIZER_MODE or (
                "tokenizer_mode" not in str(exc)
            ):
                raise
            log.warning("vLLM has no slow tokenizer mode (%s); using auto", exc)
            self.tokenizer_mode = FALLBACK_TOKENIZER_MODE
            return LLM(tokenizer_mode=self.tokenizer_mode, **kwargs)

    def _load_processor(self):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(
            self._model_id, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    # Engine API -----------------------------------------------------------
    def preprocess(self, request: GenerationRequest) -> dict[str, Any]:
        """Chat-template text plus the pre-resized image, as vLLM takes them."""
        image = resize_for_model(
            request.image, min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )
        messages = build_messages(
            request.prompt, image, system_prompt=self.system_prompt
        )
        text = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return {"prompt": text, "multi_modal_data": {"image": image}}

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        if not requests:
            return []
        started = time.perf_counter()
        with ThreadPoolExecutor(min(PREPROCESS_THREADS, len(requests))) as pool:
            prompts = list(pool.map(self.preprocess, requests))
        params = [
            sampling_params(r.sampling, self.sampling_overrides, self.in_engine_guard)
            for r in requests
        ]
        preprocessed = time.perf_counter()
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        generated = time.perf_counter()
        results = [
            result_from_output(output, self._decode, request.sampling)
            for output, request in zip(outputs, requests, strict=True)
        ]
        return timed_batch(results, started, preprocessed, generated)

    def _decode(self, token_id: int) -> str:
        """One token's text, special tokens kept."""
        return self.tokenizer.decode([token_id], skip_special_tokens=False)

    def close(self) -> None:
        self.llm = None
        self.processor = None


def main(argv: list[str] | None = None) -> int:
    """Run images through the engine in one batch; print the results as JSON.

    ``--image A.png --prompt "..." --image B.png --prompt "..."`` pairs each
    image with the prompt in the same position.
    """
    from PIL import Image

    from common import settings

    parser = argparse.ArgumentParser(prog="python -m worker.engines.vllm_engine")
    parser.add_argument("model", help="hub id or local model directory")
    parser.add_argument("--image", action="append", required=True, help="image file")
    parser.add_argument("--prompt", action="append", required=True, help="prompt")
    parser.add_argument("--max-new-tokens", type=int, default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--enforce-eager", action="store_true")
    args = parser.parse_args(argv)
    if len(args.image) != len(args.prompt):
        parser.error(
            f"give one --prompt per --image ({len(args.image)} images, "
            f"{len(args.prompt)} prompts)"
        )

    load_started = time.perf_counter()
    engine = VLLMEngine(
        args.model,
        max_model_len=args.max_model_len or settings.get("REXLABEL_VLLM_MAX_MODEL_LEN"),
        gpu_memory_utilization=settings.get("REXLABEL_VLLM_GPU_MEMORY_UTILIZATION"),
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
    )
    loaded = time.perf_counter()
    sampling = SamplingSettings().with_overrides(
        {"max_new_tokens": args.max_new_tokens} if args.max_new_tokens else None
    )
    requests = [
        GenerationRequest(Image.open(path).convert("RGB"), prompt, sampling)
        for path, prompt in zip(args.image, args.prompt, strict=True)
    ]
    results = engine.generate(requests)
    # vLLM logs to stdout too: the JSON is the last line.
    sys.stdout.write("\n")
    json.dump(
        {
            "load_s": loaded - load_started,
            "tokenizer_mode": engine.tokenizer_mode,
            "results": [asdict(r) for r in results],
        },
        sys.stdout,
    )
    sys.stdout.write("\n")
    return 0


def _merged_weights(model: str) -> str:
    """The directory vLLM loads for ``model``: a project's models directory
    gives the run its pointer names; a LoRA adapter is refused (vLLM loads
    whole checkpoints here), with what to do instead."""
    from common.model_store import base_chain

    chain = base_chain(model)
    if len(chain) > 1:
        raise ValueError(
            f"{chain[0][0]} is a LoRA adapter over {chain[1][0]}: the vllm engine "
            "serves whole weights; write them with `rexlabel finetune --merge` (or "
            "--method full), or serve the adapter with REXLABEL_ENGINE=transformers"
        )
    return chain[0][0]


if __name__ == "__main__":
    sys.exit(main())
