"""Rex-Omni-sized throughput and latency on one GPU, offline, through both engines.

Usage::

    python bench/bench_gpu.py                       # both engines, H100 cases
    python bench/bench_gpu.py --engine vllm --sizes 640x480 --batches 1,64
    python bench/bench_gpu.py --smoke               # tiny config on the CPU
    python bench/bench_gpu.py --smoke --device cuda # the same on a GPU (seconds)

No weights are downloaded: the model is Qwen2.5-VL-3B's architecture (what
Rex-Omni fine-tunes; config below) with random weights in bf16 (vLLM:
``load_format="dummy"`` over a directory holding that config), and the
tokenizer/processor of ``rexlabel make-test-model`` (Rex-Omni's special and
bin tokens; the real vocabulary size 151936 so every id fits). Each request is
a random-noise image (640x480: 391 visual tokens; 1280x960: 1,564) with a
detection prompt, and generates exactly ``--tokens`` tokens (128: transformers
``min_new_tokens``, vLLM ``min_tokens`` and ``ignore_eos``), so the figures
measure the engines, not what random weights choose to write. Everything
production runs is on: the runaway guard, log-probs with alternatives,
repetition penalty.

Cases, per engine and image size: batch 1 (``--latency-requests`` requests one
after another: interactive latency) and each of ``--batches`` above 1 until
images/s stops rising or memory runs out; then a ``best`` line. Variants of
the transformers engine: ``eager`` (dynamic KV cache), ``static`` (static KV
cache, REXLABEL_TRANSFORMERS_STATIC_CACHE: transformers then compiles the
decoding step with CUDA graphs; the cache sized for the 128 tokens, its best
case) and ``static-cap`` (the same, the cache sized for the 4,096-token cap as
in production, 128 tokens written).

Output: one JSON line per case on stdout (and appended to ``--out``):
``engine``, ``variant``, ``image_size``, ``batch``, ``images_per_s``,
``tokens_per_s``, ``latency_p50_s``/``latency_p95_s`` (a request's wait for
its answer), ``peak_gib`` (transformers: the most PyTorch allocated; vLLM:
the GPU's memory in use, its KV cache included), ``first_call_s``.
``--deadline`` (epoch seconds) skips cases that would end past it, each with
a ``skipped`` line. Each engine runs in a process of its own (vLLM keeps its
memory until the process ends).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REAL_VOCAB_SIZE = 151936
"""Qwen2.5-VL's (padded) vocabulary: the tiny tokenizer's ids all fit in it."""

QWEN25_VL_3B_TEXT = {
    "vocab_size": REAL_VOCAB_SIZE,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "use_sliding_window": False,
    "sliding_window": 32768,
    "max_window_layers": 70,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 1000000.0,
        "mrope_section": [16, 24, 24],
    },
}
"""Qwen2.5-VL-3B-Instruct's text model (its config.json)."""

QWEN25_VL_3B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "hidden_act": "silu",
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}
"""Qwen2.5-VL-3B-Instruct's vision tower (its config.json ``vision_config``)."""

SMOKE_TEXT = {
    **QWEN25_VL_3B_TEXT,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_parameters": {
        **QWEN25_VL_3B_TEXT["rope_parameters"],
        "mrope_section": [4, 6, 6],  # sums to half the smaller head size (32)
    },
}
SMOKE_VISION = {
    **QWEN25_VL_3B_VISION,
    "depth": 2,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_heads": 4,
    "out_hidden_size": 128,
    "fullatt_block_indexes": [1],
}

ENGINES = ("transformers", "vllm")
SIZES = ((640, 480), (1280, 960))
OUTPUT_TOKENS = 128
BATCHES = {"transformers": (16, 32, 64), "vllm": (32, 64, 128, 256)}
"""Batch sizes tried above 1, ascending; a case stops at the first that is not
faster than the one before."""
STATIC_CAP = "static-cap"
"""The static cache as production sizes it: for REXLABEL_MAX_NEW_TOKENS's
default (4,096) output tokens, while 128 are written."""
VARIANTS = {"transformers": ("eager", "static", STATIC_CAP), "vllm": ("default",)}
LATENCY_REQUESTS = 6
"""Batch-1 requests in a row: enough for a p50 and a rough p95."""
SMOKE_SIZES = ((640, 480),)
SMOKE_BATCHES = (2,)
SMOKE_TOKENS = 8
SMOKE_LATENCY_REQUESTS = 2
VLLM_MAX_MODEL_LEN = 4096
"""Room for a 1280x960 prompt (~1,650 tokens) and its output; vLLM sizes its
KV cache from ``VLLM_GPU_MEMORY_UTILIZATION``, not from this."""
VLLM_GPU_MEMORY_UTILIZATION = 0.85
NOT_FASTER = 1.03
"""A batch size must beat the previous one by 3% for the next to be tried."""
CASE_MARGIN = 1.5
"""A case is started only if the deadline leaves this times the last case's
length (batches grow, so the next one takes longer)."""
CATEGORIES = ["person", "car", "dog"]


def build_config(tokenizer, smoke: bool):
    """Qwen2.5-VL-3B's config (or the smoke one) with the tokenizer's ids."""
    from transformers import Qwen2_5_VLConfig

    from converters.grammar import (
        END_OF_TEXT,
        IM_END,
        IMAGE_PAD,
        VIDEO_PAD,
        VISION_END,
        VISION_START,
    )

    ids = {
        name: tokenizer.convert_tokens_to_ids(token)
        for name, token in (
            ("image_token_id", IMAGE_PAD),
            ("video_token_id", VIDEO_PAD),
            ("vision_start_token_id", VISION_START),
            ("vision_end_token_id", VISION_END),
        )
    }
    text = dict(SMOKE_TEXT if smoke else QWEN25_VL_3B_TEXT)
    text["eos_token_id"] = tokenizer.convert_tokens_to_ids(IM_END)
    text["pad_token_id"] = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=SMOKE_VISION if smoke else QWEN25_VL_3B_VISION,
        tie_word_embeddings=True,
        **ids,
    )
    config.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return config


def write_model_dir(workdir: Path, smoke: bool, dtype: str):
    """A model directory without weights: config, tokenizer, processor."""
    from worker.training.tiny_model import build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    build_processor(tokenizer).save_pretrained(workdir)
    config = build_config(tokenizer, smoke)
    config.dtype = dtype
    config.save_pretrained(workdir)
    return config


def transformers_engine(workdir: Path, smoke: bool, device: str, variant: str, tokens):
    """Our transformers engine on a random-weight model (built on the device)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from worker.engines.transformers_engine import TransformersEngine
    from worker.engines.transformers_loading import default_attention, load_processor

    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    config = write_model_dir(workdir, smoke, str(dtype).removeprefix("torch."))
    processor = load_processor(str(workdir))  # the engine's own loading path
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=default_attention(device)
        )
    model.eval()
    stop_id = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    return TransformersEngine(
        str(workdir),
        device=device,
        loaded=(model, processor),
        max_batch_size=max(max(BATCHES["transformers"]), 1),
        max_padding=1.0,  # one size per case: nothing to group
        static_cache=variant.startswith("static"),
        generate_kwargs={"min_new_tokens": tokens},
        logits_processors=[EndAfter(tokens, stop_id)] if variant == STATIC_CAP else [],
    )


class EndAfter:
    """A logits processor that ends every row after ``tokens`` tokens, so a
    request capped at REXLABEL_MAX_NEW_TOKENS's default still writes exactly
    ``tokens`` (+ the end token): the static cache is then sized as in
    production, for the whole cap."""

    def __init__(self, tokens: int, stop_id: int) -> None:
        self.tokens, self.stop_id = tokens, stop_id
        self.start = self.last = 0

    def __call__(self, input_ids, scores):
        length = input_ids.shape[1]
        if length <= self.last:  # a new generate call
            self.start = length
        self.last = length
        if length - self.start >= self.tokens:
            scores[:] = float("-inf")
            scores[:, self.stop_id] = 0.0
        return scores


def vllm_engine(workdir: Path, smoke: bool, device: str, tokens: int):
    """Our vLLM engine over ``load_format="dummy"`` (random weights)."""
    from worker.engines.vllm_engine import VLLMEngine

    cpu = device == "cpu"
    dtype = "float32" if cpu else "bfloat16"
    write_model_dir(workdir, smoke, dtype)
    return VLLMEngine(
        str(workdir),
        max_model_len=VLLM_MAX_MODEL_LEN,
        gpu_memory_utilization=VLLM_GPU_MEMORY_UTILIZATION,
        load_format="dummy",
        dtype=dtype,
        enforce_eager=cpu or smoke,  # CUDA graphs on a GPU (seconds to capture)
        seed=0,
        sampling_overrides={"min_tokens": tokens, "ignore_eos": True, "stop": None},
    )


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


class Bench:
    """Runs the cases of one engine and prints a JSON line for each."""

    def __init__(self, args, engine_name: str, variant: str, device: str) -> None:
        self.args, self.engine_name, self.variant = args, engine_name, variant
        self.device = device
        self.cuda = device.startswith("cuda")
        self.rows: list[dict] = []
        self.last_case_s = 0.0

    def emit(self, row: dict) -> None:
        row = {
            "bench": "gpu",
            "engine": self.engine_name,
            "variant": self.variant,
            "smoke": self.args.smoke,
            **row,
        }
        line = json.dumps(row)
        print(line, flush=True)
        if self.args.out:
            with open(self.args.out, "a", encoding="utf-8") as out:
                out.write(line + "\n")

    def time_left(self) -> bool:
        if not self.args.deadline:
            return True
        return time.time() + CASE_MARGIN * self.last_case_s < self.args.deadline

    def requests(self, n: int, size, sampling):
        import numpy as np
        from PIL import Image

        from converters.prompts import build_prompt
        from worker.engines.base import GenerationRequest

        rng = np.random.default_rng(len(self.rows))
        width, height = size
        prompt = build_prompt("detection", CATEGORIES)
        return [
            GenerationRequest(
                Image.fromarray(
                    rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
                ),
                prompt,
                sampling,
            )
            for _ in range(n)
        ]

    def memory(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        if self.engine_name == "vllm":
            free, total = torch.cuda.mem_get_info()
            return round((total - free) / 2**30, 2)
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)

    def reset_memory(self) -> None:
        if self.cuda and self.engine_name == "transformers":
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def case(self, engine, size, batch: int, sampling, latency_requests: int):
        """One batch size: a first call of the shape, then the timed calls."""
        started = time.perf_counter()
        self.reset_memory()
        first = time.perf_counter()
        engine.generate(self.requests(batch, size, sampling))
        first = time.perf_counter() - first
        rounds = latency_requests if batch == 1 else 1
        latencies, outputs, seconds = [], 0, 0.0
        for _ in range(rounds):
            reqs = self.requests(batch, size, sampling)
            t0 = time.perf_counter()
            results = engine.generate(reqs)
            took = time.perf_counter() - t0
            seconds += took
            latencies += [took] * batch  # every answer arrives with the batch
            outputs += sum(r.output_tokens for r in results)
        row = {
            "image_size": list(size),
            "batch": batch,
            "images_per_s": round(batch * rounds / seconds, 3),
            "tokens_per_s": round(outputs / seconds, 1),
            "latency_p50_s": round(percentile(latencies, 0.5), 3),
            "latency_p95_s": round(percentile(latencies, 0.95), 3),
            "output_tokens": outputs // (batch * rounds),
            "prompt_tokens": results[0].prompt_tokens,
            "engine_batch": int(max(r.timings.get("batch_size", 0) for r in results)),
            "first_call_s": round(first, 3),
            "peak_gib": self.memory(),
            "device": self.device_name(),
        }
        self.last_case_s = time.perf_counter() - started
        self.rows.append(row)
        self.emit(row)
        print(
            f"{self.engine_name}/{self.variant} {size[0]}x{size[1]} batch {batch:>3}: "
            f"{row['images_per_s']:7.2f} images/s {row['tokens_per_s']:9.1f} tokens/s "
            f"p50 {row['latency_p50_s']:.2f} s (first call {first:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        return row

    def device_name(self) -> str:
        if not self.cuda:
            return "cpu"
        import torch

        return torch.cuda.get_device_name()

    def run(self, engine, sizes, batches, tokens: int, latency_requests: int) -> None:
        from common.settings import DEFAULT_MAX_NEW_TOKENS
        from worker.engines.base import SamplingSettings

        cap = DEFAULT_MAX_NEW_TOKENS if self.variant == STATIC_CAP else tokens
        sampling = SamplingSettings(
            max_new_tokens=cap, max_instances=10**9, max_repeats=10**9
        )
        engine.generate(self.requests(1, sizes[0], sampling))  # warm-up
        for size in sizes:
            best = None
            for batch in (1, *batches):
                if not self.time_left():
                    self.emit(
                        {
                            "image_size": list(size),
                            "batch": batch,
                            "skipped": "time budget",
                        }
                    )
                    continue
                try:
                    row = self.case(engine, size, batch, sampling, latency_requests)
                except Exception as exc:  # out of memory ends the ladder
                    if "out of memory" not in str(exc).lower():
                        raise
                    self.emit(
                        {
                            "image_size": list(size),
                            "batch": batch,
                            "error": "out of memory",
                        }
                    )
                    break
                if (
                    batch > 1
                    and best
                    and row["images_per_s"] < best["images_per_s"] * NOT_FASTER
                ):
                    best = max(best, row, key=lambda r: r["images_per_s"])
                    break
                if batch > 1:
                    best = row
            if best:
                self.emit({**best, "case": "best"})


def run_engine(args, engine_name: str) -> int:
    import importlib.util

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if engine_name == "vllm" and importlib.util.find_spec("vllm") is None:
        Bench(args, engine_name, "default", "").emit(
            {"skipped": f"vllm is not installed for {sys.executable}"}
        )
        return 0
    device = args.device or ("cpu" if args.smoke else "cuda")
    sizes = parse_sizes(args.sizes) or (SMOKE_SIZES if args.smoke else SIZES)
    batches = parse_ints(args.batches) or (
        SMOKE_BATCHES if args.smoke else BATCHES[engine_name]
    )
    tokens = args.tokens or (SMOKE_TOKENS if args.smoke else OUTPUT_TOKENS)
    latency = args.latency_requests or (
        SMOKE_LATENCY_REQUESTS if args.smoke else LATENCY_REQUESTS
    )
    variants = args.variants.split(",") if args.variants else VARIANTS[engine_name]
    for variant in variants:
        bench = Bench(args, engine_name, variant, device)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            if engine_name == "vllm":
                engine = vllm_engine(Path(tmp), args.smoke, device, tokens)
            else:
                engine = transformers_engine(
                    Path(tmp), args.smoke, device, variant, tokens
                )
            bench.emit(
                {
                    "case": "load",
                    "seconds": round(time.perf_counter() - started, 1),
                    "capacity": engine.capacity(),
                }
            )
            bench.run(engine, sizes, [b for b in batches if b > 1], tokens, latency)
            engine.close()
    return 0


def parse_sizes(text: str | None):
    if not text:
        return None
    return tuple(tuple(int(v) for v in item.split("x")) for item in text.split(","))


def parse_ints(text: str | None):
    return tuple(int(v) for v in text.split(",")) if text else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=(*ENGINES, "both"), default="both")
    parser.add_argument("--smoke", action="store_true", help="Tiny config, seconds.")
    parser.add_argument("--device", help="Default: cuda, or cpu with --smoke.")
    parser.add_argument("--sizes", help="e.g. 640x480,1280x960")
    parser.add_argument("--batches", help="Batch sizes above 1 to try, e.g. 32,64.")
    parser.add_argument("--variants", help="transformers: eager,static")
    parser.add_argument("--tokens", type=int, help="Output tokens per request.")
    parser.add_argument("--latency-requests", type=int)
    parser.add_argument("--deadline", type=float, help="Epoch seconds: skip past it.")
    parser.add_argument("--out", help="Append the JSON lines to this file too.")
    args = parser.parse_args(argv)
    if args.engine != "both":
        return run_engine(args, args.engine)
    status = 0
    for name in ENGINES:  # a process each: vLLM holds its memory until exit
        command = [sys.executable, __file__, *(argv or sys.argv[1:]), "--engine", name]
        status = subprocess.run(command).returncode or status
    return status


if __name__ == "__main__":
    sys.exit(main())
