"""Rex-Omni-sized throughput on one GPU, offline, through our transformers engine.

Usage::

    python bench/bench_gpu.py                 # H100: the real 3B architecture
    python bench/bench_gpu.py --batches 1,8   # fewer batch sizes
    python bench/bench_gpu.py --smoke         # tiny config on the CPU (script check)

No weights are downloaded: the model is Qwen2.5-VL-3B's architecture (what
Rex-Omni fine-tunes; config written out below) with random weights in bf16,
and the tokenizer/processor of ``rexlabel make-test-model`` (Rex-Omni's special
and bin tokens; the real vocabulary size 151936 so every id fits). Each request
is a 640x480 image (476x644 after smart_resize: 391 visual tokens) with a
detection prompt, and generates exactly 128 tokens (``min_new_tokens`` =
``max_new_tokens``), so the figures measure the engine, not what random
weights choose to write. Reports images/s, generated tokens/s, generate-only
time and peak GPU memory at batch 1, 8 and 32, then one JSON line.

Budget: about 20 s of imports and random init, then under 60 s of runs on an
H100; well inside 5 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
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

IMAGE_SIZE = (640, 480)
OUTPUT_TOKENS = 128
BATCHES = (1, 8, 32)
SMOKE_BATCHES = (1, 2)
SMOKE_TOKENS = 8


def build(smoke: bool, device: str, workdir: Path):
    """Random-weight model (bf16 on GPU) and the tiny processor, saved/loaded."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from converters.grammar import (
        END_OF_TEXT,
        IM_END,
        IMAGE_PAD,
        VIDEO_PAD,
        VISION_END,
        VISION_START,
    )
    from worker.engines.transformers_loading import default_attention, load_processor
    from worker.training.tiny_model import build_processor, build_tokenizer

    tokenizer = build_tokenizer()
    build_processor(tokenizer).save_pretrained(workdir)
    processor = load_processor(str(workdir))  # the engine's own loading path
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
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    attn = default_attention(device)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=attn
        )
    model.eval()
    return model, processor, attn


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="Tiny config on the CPU.")
    parser.add_argument("--device", help="Default: cuda, or cpu with --smoke.")
    parser.add_argument("--batches", help="Comma-separated batch sizes.")
    parser.add_argument("--tokens", type=int, help="Output tokens per request.")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import numpy as np
    import torch
    from PIL import Image

    from converters.prompts import build_prompt
    from worker.engines.base import GenerationRequest, SamplingSettings
    from worker.engines.transformers_engine import TransformersEngine

    device = args.device or ("cpu" if args.smoke else "cuda")
    batches = (
        [int(b) for b in args.batches.split(",")]
        if args.batches
        else list(SMOKE_BATCHES if args.smoke else BATCHES)
    )
    tokens = args.tokens or (SMOKE_TOKENS if args.smoke else OUTPUT_TOKENS)
    cuda = device.startswith("cuda")

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, processor, attn = build(args.smoke, device, Path(tmp))
    build_s = time.perf_counter() - started
    engine = TransformersEngine(
        "random-qwen2.5-vl-3b" if not args.smoke else "random-smoke",
        device=device,
        loaded=(model, processor),
        max_batch_size=max(batches),
        generate_kwargs={"min_new_tokens": tokens},
    )
    sampling = SamplingSettings(
        max_new_tokens=tokens, max_instances=10**9, max_repeats=10**9
    )
    prompt = build_prompt("detection", ["person", "car", "dog"])
    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE

    def requests(n):
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

    engine.generate(requests(1))  # warm-up: kernels, allocator
    rows = []
    for batch in batches:
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        reqs = requests(batch)
        t0 = time.perf_counter()
        engine.generate(reqs)  # first batch of this shape: one-off kernel setup
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        results = engine.generate(reqs)
        seconds = time.perf_counter() - t0
        out = sum(r.output_tokens for r in results)
        row = {
            "batch": batch,
            "seconds": round(seconds, 3),
            "first_call_seconds": round(cold, 3),
            "images_per_s": round(batch / seconds, 3),
            "tokens_per_s": round(out / seconds, 1),
            "output_tokens": out,
            "prompt_tokens": results[0].prompt_tokens,
            "generate_s": round(results[0].timings["generate"], 3),
            "preprocess_s": round(results[0].timings["preprocess"], 3),
        }
        if cuda:
            row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        rows.append(row)
        print(
            f"batch {batch:>3}: {row['images_per_s']:8.2f} images/s "
            f"{row['tokens_per_s']:9.1f} tokens/s  {seconds:.2f} s "
            f"(first call {cold:.2f} s)"
            + (f"  peak {row['peak_gib']} GiB" if cuda else ""),
            file=sys.stderr,
            flush=True,
        )
    report = {
        "bench": "gpu",
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "dtype": str(model.dtype).removeprefix("torch."),
        "attention": attn,
        "params_b": round(model.num_parameters() / 1e9, 3),
        "image_size": list(IMAGE_SIZE),
        "output_tokens": tokens,
        "build_s": round(build_s, 1),
        "torch": torch.__version__,
        "rows": rows,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
