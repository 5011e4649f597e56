"""Throughput of the transformers engine on the tiny model, by batch size.

Usage::

    .venv/bin/python bench/bench_engine.py                 # builds the tiny model
    .venv/bin/python bench/bench_engine.py --model DIR --tokens 32 --repeats 3

Every request generates exactly ``--tokens`` tokens (``min_new_tokens`` =
``max_new_tokens``), so batches differ only in size. Prints images/s and
generated tokens/s at batch 1, 4 and 16 (best of ``--repeats`` runs), the
batching gain (tokens/s at the largest batch over batch 1) and a JSON line.
Runs on the CPU unless ``--device`` says otherwise.
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

DEFAULT_BATCHES = (1, 4, 16)
DEFAULT_TOKENS = 32
"""Output tokens per request: about one detection group of a few boxes."""
DEFAULT_IMAGE_SIZE = (224, 224)
"""64 visual tokens: a small image keeps the bench about generation."""


def run(model_dir: str, device: str, batches, tokens: int, repeats: int, size):
    import numpy as np
    from PIL import Image

    from converters.prompts import build_prompt
    from worker.engines.base import GenerationRequest, SamplingSettings
    from worker.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(
        model_dir, device=device, generate_kwargs={"min_new_tokens": tokens}
    )
    rng = np.random.default_rng(0)
    sampling = SamplingSettings(
        max_new_tokens=tokens, max_instances=10**9, max_repeats=10**9
    )
    prompt = build_prompt("detection", ["red square", "blue circle"])

    def requests(n):
        return [
            GenerationRequest(
                Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)),
                prompt,
                sampling,
            )
            for _ in range(n)
        ]

    engine.generate(requests(1))  # warm-up
    rows = []
    for batch in batches:
        best = None
        for _ in range(repeats):
            reqs = requests(batch)
            started = time.perf_counter()
            results = engine.generate(reqs)
            seconds = time.perf_counter() - started
            out = sum(r.output_tokens for r in results)
            if best is None or seconds < best[0]:
                best = (seconds, out, results[0].timings)
        seconds, out, timings = best
        rows.append(
            {
                "batch": batch,
                "seconds": round(seconds, 4),
                "images_per_s": round(batch / seconds, 3),
                "tokens_per_s": round(out / seconds, 1),
                "generate_s": round(timings["generate"], 4),
                "preprocess_s": round(timings["preprocess"], 4),
            }
        )
    return engine, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="Model directory (default: build the tiny one)."
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--batches", default=",".join(map(str, DEFAULT_BATCHES)), help="e.g. 1,4,16"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    batches = [int(b) for b in args.batches.split(",")]

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if not model_dir:
            from worker.training.tiny_model import make_test_model

            model_dir = str(make_test_model(Path(tmp) / "tiny", verify=False))
        engine, rows = run(
            model_dir,
            args.device,
            batches,
            args.tokens,
            args.repeats,
            DEFAULT_IMAGE_SIZE,
        )
    gain = rows[-1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    print(
        f"transformers engine, {engine.model.num_parameters() / 1e6:.2f}M params, "
        f"{args.device}, {torch.get_num_threads()} threads, "
        f"{DEFAULT_IMAGE_SIZE[0]}x{DEFAULT_IMAGE_SIZE[1]} images, {args.tokens} tokens"
    )
    for row in rows:
        print(
            f"batch {row['batch']:>3}: {row['images_per_s']:8.2f} images/s "
            f"{row['tokens_per_s']:9.1f} tokens/s ({row['seconds']:.2f} s)"
        )
    print(f"batching gain (batch {rows[-1]['batch']} vs 1): {gain:.2f}x")
    print(
        json.dumps(
            {
                "bench": "engine",
                "device": args.device,
                "threads": torch.get_num_threads(),
                "tokens": args.tokens,
                "rows": rows,
                "batching_gain": round(gain, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
