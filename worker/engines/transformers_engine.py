"""The transformers engine: Rex-Omni through ``Qwen2_5_VLForConditionalGeneration``.

Runs everywhere (bf16 on a GPU, fp32 on a CPU) and is the engine the tests use
on the tiny model. Requests with identical sampling settings are planned into
``generate`` calls (``worker.engines.batch_plan``): similar prompt lengths
together, padding capped, and on a GPU as many as its free memory holds;
left padding. Per token it keeps the id,
its text and the log-probability the model gave it (raw logits, before the
repetition penalty), so ``worker.scoring`` can score each prediction.

Stages (as transformers pipelines): preprocess (chat template, image
processor) -> generate (the only step on the device) -> postprocess (decode).
Loading (device, dtype, attention, AWQ checks) is in
``worker.engines.transformers_loading``. torch and transformers are imported
lazily: importing this module is cheap.
"""

from __future__ import annotations

import codecs
import logging
import time
from collections.abc import Iterable
from typing import Any

from common.settings import DEFAULT_MAX_NEW_TOKENS
from converters.geometry import MAX_PIXELS, MIN_PIXELS
from converters.grammar import END_OF_TEXT, IM_END
from converters.prompts import SYSTEM_PROMPT, build_messages
from worker.engines.base import (
    Engine,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    SamplingSettings,
    timed_batch,
)
from worker.engines.batch_plan import (
    DEFAULT_MAX_PADDING,
    MAX_BATCH_CAP,
    ModelFootprint,
    batch_size_for_memory,
    plan_batches,
    visual_tokens,
)
from worker.engines.transformers_loading import load_model, resolve_device
from worker.scoring import TRANSFORMERS_TOP_LOGPROBS, bin_value

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_SIZE = 16
"""Requests per ``generate`` call on a CPU (on a GPU the free memory sizes
batches, up to ``batch_plan.MAX_BATCH_CAP``): past this a CPU gains nothing."""
PROMPT_TEXT_TOKENS = 100
"""Text tokens of a prompt around its image (system prompt, template, the
question): for the start-up line's examples only; batches count real ones."""
TYPICAL_VISUAL_TOKENS = 391
"""A 640x480 image's visual tokens (476x644 after smart_resize)."""
TYPICAL_OUTPUT_TOKENS = 128
"""A typical answer's length (a dozen boxes), for the start-up line."""
STATIC_CACHE_BUCKET = 1024
"""A static cache's length is rounded up to a multiple of this, so that
batches of other prompt lengths reuse the compiled decoding step
(transformers also keeps the longest length it has allocated)."""
PREFER_FLASH_OVER_CUDNN_SDPA = True
"""On CUDA, turn off PyTorch's cuDNN attention backend (its first choice on
Hopper): it builds a plan for each new attention shape, and real requests
rarely repeat a shape (prompt length and image size vary). Measured on an H100
(3B, bf16, 8 images x 128 tokens): cuDNN 11.8 s for the first batch of a shape
and 4.2 s when it repeats; flash / memory-efficient kernels 6.2-6.5 s every time."""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level BPE's byte -> printable character table (Qwen uses it)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class TokenTexts:
    """Per-token texts whose concatenation is exactly the decoded text.

    A byte-level token can hold part of a UTF-8 character; such bytes are
    given to the token that completes the character, so character offsets in
    the text map to tokens without gaps or overlaps.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._byte_of = {ch: b for b, ch in _bytes_to_unicode().items()}
        self._added = {
            idx: tok.content for idx, tok in tokenizer.added_tokens_decoder.items()
        }
        self._alone: dict[int, str] = {}
        """Token id -> its text alone, filled as alternatives are read (the
        same few hundred ids come back at every coordinate)."""

    def text_alone(self, token_id: int) -> str:
        """One token's text on its own (a partial UTF-8 character replaced)."""
        text = self._alone.get(token_id)
        if text is None:
            (name,) = self.tokenizer.convert_ids_to_tokens([token_id])
            text = self._token_bytes(token_id, name).decode("utf-8", "replace")
            self._alone[token_id] = text
        return text

    def _token_bytes(self, token_id: int, token: str | None) -> bytes:
        if token_id in self._added:
            return self._added[token_id].encode("utf-8")
        if token is None:  # an id past the tokenizer (padded model vocabulary)
            return b""
        if all(ch in self._byte_of for ch in token):
            return bytes(self._byte_of[ch] for ch in token)
        return self.tokenizer.decode([token_id]).encode("utf-8")

    def alternatives(
        self, texts: list[str], top_logprobs: list, top_ids: list
    ) -> list[dict[str, float]]:
        """Per token of ``texts``: its step's top tokens (text -> log-prob)
        where the token is a coordinate (``worker.scoring`` reads only those),
        else an empty mapping."""
        rows: list[dict[str, float]] = []
        for step, text in enumerate(texts):
            if bin_value(text) is None or step >= len(top_ids):
                rows.append({})
                continue
            alone = self.text_alone
            rows.append(
                {
                    alone(i): logprob
                    for i, logprob in zip(
                        top_ids[step], top_logprobs[step], strict=True
                    )
                }
            )
        return rows

    def __call__(self, token_ids: list[int]) -> list[str]:
        tokens = self.tokenizer.convert_ids_to_tokens(token_ids)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        texts = [
            decoder.decode(self._token_bytes(i, t))
            for i, t in zip(token_ids, tokens, strict=True)
        ]
        if texts:
            texts[-1] += decoder.decode(b"", final=True)
        return texts


def static_cache_length(tokens: int) -> int:
    """``tokens`` (prompt plus output) rounded up to :data:`STATIC_CACHE_BUCKET`."""
    return -(-tokens // STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET


def _group_by_settings(requests: list[GenerationRequest]) -> list[list[int]]:
    """Indices of requests sharing sampling settings, order kept."""
    groups: dict[SamplingSettings, list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(request.sampling, []).append(index)
    return list(groups.values())


class TransformersEngine(Engine):
    """Rex-Omni on transformers.

    Args:
        model: hub id or local directory (``create_engine`` passes
            REXLABEL_MODEL).
        device: ``auto`` (or None: CUDA when visible, else CPU), ``cpu``,
            ``cuda``, ``cuda:1`` ... (REXLABEL_DEVICE through create_engine).
        dtype / attn_implementation: override bf16-on-GPU/fp32-on-CPU and
            flash-attention-2-when-importable-else-sdpa.
        min_pixels / max_pixels: the area bounds images are resized within
            (REXLABEL_MIN_PIXELS / REXLABEL_MAX_PIXELS through create_engine).
        system_prompt: the chat's system message (REXLABEL_SYSTEM_PROMPT).
        quantization: None, or ``awq`` for an AWQ checkpoint on CUDA
            (REXLABEL_QUANTIZATION; see
            :func:`worker.engines.transformers_loading.check_quantization`).
        max_batch_size: most requests per ``generate`` call; default: on a
            GPU :data:`~worker.engines.batch_plan.MAX_BATCH_CAP` with the free
            memory deciding below it (:meth:`capacity` says what it chose),
            else :data:`DEFAULT_MAX_BATCH_SIZE`.
        max_padding: share of a batch's prompt tokens that may be padding
            before similar-length requests are batched apart.
        static_cache: a static KV cache (REXLABEL_TRANSFORMERS_STATIC_CACHE):
            on CUDA transformers then compiles the decoding step into CUDA
            graphs, once per batch size and cache length (lengths are rounded
            up to :data:`STATIC_CACHE_BUCKET`); the cache holds every row's
            full ``max_new_tokens`` from the start.
        generate_kwargs: extra generation settings for every call
            (``GenerationConfig`` fields such as ``min_new_tokens``, which
            benches use to force lengths; other keys go to ``generate``).
        logits_processors: extra ``LogitsProcessor``s run after the built-in
            ones (repetition penalty, sampling), e.g. grammar constraints.
        loaded: an already loaded ``(model, processor)`` pair to serve.
    """

    name = "transformers"

    def __init__(
        self,
        model: str,
        device: str | None = None,
        *,
        dtype: Any = None,
        attn_implementation: str | None = None,
        min_pixels: int = MIN_PIXELS,
        max_pixels: int = MAX_PIXELS,
        system_prompt: str = SYSTEM_PROMPT,
        quantization: str | None = None,
        max_batch_size: int | None = None,
        max_padding: float = DEFAULT_MAX_PADDING,
        static_cache: bool = False,
        generate_kwargs: dict[str, Any] | None = None,
        logits_processors: list[Any] | None = None,
        loaded: tuple[Any, Any] | None = None,
    ) -> None:
        self._model_id = model
        self.device = resolve_device(device)
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        cuda = self.device.startswith("cuda")
        self.max_batch_size = max_batch_size or (
            MAX_BATCH_CAP if cuda else DEFAULT_MAX_BATCH_SIZE
        )
        self.max_padding = max_padding
        self.static_cache = static_cache
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.system_prompt = system_prompt
        self.quantization = quantization
        if self.device.startswith("cuda") and PREFER_FLASH_OVER_CUDNN_SDPA:
            import torch

            torch.backends.cuda.enable_cudnn_sdp(False)
        self.generate_kwargs = dict(generate_kwargs or {})
        self.logits_processors = list(logits_processors or [])
        if loaded is not None:
            self.model, self.processor = loaded
            self.processor.tokenizer.padding_side = "left"
        else:
            self.model, self.processor = load_model(
                self._model_id,
                self.device,
                dtype=dtype,
                attn_implementation=attn_implementation,
                min_pixels=min_pixels,
                max_pixels=max_pixels,
                quantization=quantization,
            )
        tokenizer = self.processor.tokenizer
        # generation stops at the turn's end (upstream ignores its stop list);
        # Qwen's end-of-text pads on the left and after finished rows
        self.stop_id = tokenizer.convert_tokens_to_ids(IM_END)
        self.pad_id = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
        self.token_texts = TokenTexts(tokenizer)
        from worker.engines.runaway_guard_torch import GrammarTokens

        self.grammar = GrammarTokens.from_tokenizer(
            tokenizer, vocab_size=self.model.config.get_text_config().vocab_size
        )
        self.footprint: ModelFootprint | None = None
        """The model's bytes per token (GPU only: None, no memory limit)."""
        self.memory_budget: int | None = None
        """A fixed byte budget for batches instead of the GPU's free memory."""
        if cuda:
            self.footprint = ModelFootprint.from_config(
                self.model.config.to_dict(), self.model.dtype.itemsize
            )

    def free_memory(self) -> int | None:
        """Bytes a batch may use now: the GPU's free memory plus what PyTorch
        holds cached but unused (read at each call, so SAM or another model
        loaded after this one is counted), or :attr:`memory_budget` when set;
        None without a GPU."""
        if self.memory_budget is not None or self.footprint is None:
            return self.memory_budget
        import torch

        device = torch.device(self.device)
        free, _total = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(
            device
        )
        return int(free + cached)

    def capacity(self) -> str:
        """The batch rule in words, for the worker's start-up line."""
        budget = self.free_memory()
        if budget is None or self.footprint is None:
            return f"batches of up to {self.max_batch_size} requests"
        largest = self.footprint.request_bytes(
            visual_tokens(100_000, 100_000, self.min_pixels, self.max_pixels)
            + PROMPT_TEXT_TOKENS,
            visual_tokens(100_000, 100_000, self.min_pixels, self.max_pixels),
            DEFAULT_MAX_NEW_TOKENS,
        )
        typical = self.footprint.request_bytes(
            TYPICAL_VISUAL_TOKENS + PROMPT_TEXT_TOKENS,
            TYPICAL_VISUAL_TOKENS,
            TYPICAL_OUTPUT_TOKENS,
        )
        at = lambda size: batch_size_for_memory(  # noqa: E731
            budget, size, cap=self.max_batch_size
        )
        return (
            f"batches sized from memory: {budget / 2**30:.1f} GiB free "
            f"now; {at(largest)} requests at max_pixels with "
            f"{DEFAULT_MAX_NEW_TOKENS} output tokens, {at(typical)} at 640x480 "
            f"with {TYPICAL_OUTPUT_TOKENS} (cap {self.max_batch_size})"
        )

    @property
    def model_id(self) -> str:
        return self._model_id

    # Engine API -----------------------------------------------------------
    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult | None] = [None] * len(requests)
        for group in _group_by_settings(requests):
            texts = [self.chat_text(requests[i]) for i in group]
            for batch in self.plan(group, requests, texts):
                chosen = [requests[group[i]] for i in batch]
                done = self._generate_batch(chosen, [texts[i] for i in batch])
                for i, result in zip(batch, done, strict=True):
                    results[group[i]] = result
        return results  # type: ignore[return-value]

    def plan(
        self,
        group: list[int],
        requests: list[GenerationRequest],
        texts: list[str],
    ) -> list[list[int]]:
        """Batches of positions in ``group`` (requests sharing sampling
        settings): similar prompt lengths together, within memory."""
        visual = [
            visual_tokens(*requests[i].image.size, self.min_pixels, self.max_pixels)
            for i in group
        ]
        tokenizer = self.processor.tokenizer
        lengths = [
            len(tokenizer(text, add_special_tokens=False)["input_ids"]) - 1 + v
            for text, v in zip(texts, visual, strict=True)
        ]
        fits = None
        budget, footprint = self.free_memory(), self.footprint
        if budget is not None and footprint is not None:
            max_new = requests[group[0]].sampling.max_new_tokens
            most_visual = max(visual)

            def fits(rows: int, longest: int) -> bool:
                one = footprint.request_bytes(longest, most_visual, max_new)
                return batch_size_for_memory(budget, one, cap=rows) >= rows

        return plan_batches(
            lengths,
            max_batch_size=self.max_batch_size,
            max_padding=self.max_padding,
            fits=fits,
        )

    # Stages ---------------------------------------------------------------
    def chat_text(self, request: GenerationRequest) -> str:
        """The request's chat-template text (one image placeholder)."""
        return self.processor.apply_chat_template(
            build_messages(
                request.prompt, request.image, system_prompt=self.system_prompt
            ),
            tokenize=False,
            add_generation_prompt=True,
        )

    def preprocess(
        self, requests: Iterable[GenerationRequest], texts: list[str] | None = None
    ) -> dict[str, Any]:
        """Chat template (unless ``texts`` has it) + image processor for a
        batch, left-padded, on device."""
        requests = list(requests)
        if texts is None:
            texts = [self.chat_text(r) for r in requests]
        images = [r.image.convert("RGB") for r in requests]
        inputs = self.processor(
            text=texts, images=images, padding=True, return_tensors="pt"
        )
        return inputs.to(self.device)

    def _generate_batch(
        self, requests: list[GenerationRequest], texts: list[str] | None = None
    ) -> list[GenerationResult]:
        import torch

        sampling = requests[0].sampling
        started = time.perf_counter()
        inputs = self.preprocess(requests, texts)
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        self._sync()
        preprocessed = time.perf_counter()

        guard, collector, processors, config = self._generation_setup(
            sampling, len(requests)
        )
        if self.static_cache:
            config.cache_implementation = "static"
            if hasattr(config, "max_cache_len"):  # transformers >= 5.2x
                config.max_cache_len = static_cache_length(
                    prompt_len + sampling.max_new_tokens
                )
        extra = config.update(**self.generate_kwargs)
        with torch.inference_mode():
            sequences = self.model.generate(
                **inputs,
                generation_config=config,
                logits_processor=processors,
                stopping_criteria=[guard, collector],
                **extra,
            )
        self._sync()
        generated = time.perf_counter()

        new_tokens = sequences[:, prompt_len:].tolist()
        length = len(new_tokens[0]) if new_tokens else 0
        logprobs = collector.logprobs(length)
        top_logprobs, top_ids = collector.alternatives(length)
        triggered = guard.triggered.tolist()
        results = []
        for row, ids in enumerate(new_tokens):
            results.append(
                self._result(
                    ids,
                    logprobs[row],
                    (top_logprobs[row], top_ids[row]),
                    runaway=triggered[row],
                    prompt_tokens=int(prompt_tokens[row]),
                )
            )
        return timed_batch(results, started, preprocessed, generated)

    def _generation_setup(self, sampling: SamplingSettings, batch_size: int):
        """Guard, log-prob recorder and our own processor list (raw log-probs
        are read before the repetition penalty and the sampling warpers)."""
        from transformers import (
            GenerationConfig,
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        from worker.engines.hf_hooks import LogprobCollector, LogprobRecorder
        from worker.engines.runaway_guard_torch import RunawayGuard

        guard = RunawayGuard(
            self.grammar,
            max_repeats=sampling.max_repeats,
            max_instances=sampling.max_instances,
            batch_size=batch_size,
            device=self.device,
        )
        recorder = LogprobRecorder()
        processors = LogitsProcessorList([recorder])
        if sampling.repetition_penalty != 1.0:
            processors.append(
                RepetitionPenaltyLogitsProcessor(sampling.repetition_penalty)
            )
        do_sample = sampling.temperature > 0
        if do_sample:
            processors.append(TemperatureLogitsWarper(sampling.temperature))
            if sampling.top_k > 0:
                processors.append(TopKLogitsWarper(sampling.top_k))
            if sampling.top_p < 1.0:
                processors.append(TopPLogitsWarper(sampling.top_p))
        processors.extend(self.logits_processors)
        # Everything the defaults would add is already in ``processors``; the
        # neutral values keep generate from adding it twice.
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=do_sample,
            temperature=1.0,
            top_k=None,
            top_p=1.0,
            repetition_penalty=1.0,
            eos_token_id=self.stop_id,
            pad_token_id=self.pad_id,
            bos_token_id=None,
        )
        collector = LogprobCollector(recorder, batch_size, TRANSFORMERS_TOP_LOGPROBS)
        return guard, collector, processors, config

    def _result(
        self,
        ids: list[int],
        logprobs: list[float],
        top: tuple[list, list],
        *,
        runaway: bool,
        prompt_tokens: int,
    ) -> GenerationResult:
        """The result of one row; ``top``: the row's per-step top log-probs
        and token ids (:meth:`LogprobCollector.alternatives`)."""
        if self.stop_id in ids:
            end = ids.index(self.stop_id) + 1
            finish = FinishReason.STOP
        else:
            end = len(ids)
            while end and ids[end - 1] == self.pad_id and runaway:
                end -= 1  # rows stopped by the guard are padded afterwards
            finish = FinishReason.RUNAWAY if runaway else FinishReason.LENGTH
        ids = ids[:end]
        texts = self.token_texts(ids)
        text = "".join(texts[:-1] if finish is FinishReason.STOP else texts)
        return GenerationResult(
            text=text,
            token_ids=ids,
            token_texts=texts,
            token_logprobs=logprobs[:end],
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            output_tokens=len(ids),
            token_top_logprobs=self.token_texts.alternatives(texts, *top),
        )

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.model = None
        self.processor = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
