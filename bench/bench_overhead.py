"""Our own overhead around the engine, per image, on the CPU: what a GPU worker
spends besides the model.

Usage::

    .venv/bin/python bench/bench_overhead.py              # 4 chunks of 32 images
    .venv/bin/python bench/bench_overhead.py --chunks 8 --chunk-size 64

Runs the worker's real chunk path (``worker.jobs.run_chunk``: payload parsing,
image loading from JPEG files, prompts, the engine wrapper, parsing, scoring,
the result's JSON form) and then the backend's Label Studio conversion
(``converters.labelstudio.to_labelstudio``), with the vLLM engine wrapper
(``VLLMEngine``: smart_resize, chat template, ``SamplingParams``, reading
vLLM's outputs and log-probs, the runaway scan) over an instant ``vllm.LLM``
stand-in that answers at once. Every image is a 640x480 JPEG, and every answer
is 128 tokens (23 boxes over 3 phrases) with vLLM's 20 log-probs at each
position, so parsing and scoring work as hard as on the GPU bench.

Prints per-image milliseconds by stage and their share of the GPU's time per
image at the throughput goals (vLLM 20 images/s: 50 ms; transformers 8
images/s: 125 ms), then one JSON line. Goal: under 5% of each. The vLLM
wrapper runs in the main venv without vLLM: the stand-in returns what
``LLM.generate`` returns, and ``SamplingParams`` is replaced by its keyword
arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_SIZE = (640, 480)
CHUNK_SIZE = 32
"""Images per chunk: ``backend.bulk.CHUNK_SIZE``."""
CHUNKS = 4
CATEGORIES = ("person", "car", "dog")
BOXES_PER_PHRASE = (8, 8, 7)
"""23 boxes: with the phrase tokens, about 128 answer tokens."""
TOP_LOGPROBS = 20
"""vLLM's alternatives per position (``worker.scoring.SCORE_TOP_LOGPROBS``)."""
GOALS_MS = {"vllm_20_images_per_s": 50.0, "transformers_8_images_per_s": 125.0}
"""GPU time per image at the issue's throughput goals."""
OVERHEAD_GOAL = 0.05


def answer_text() -> str:
    """A 23-box detection answer in Rex-Omni's grammar."""
    groups = []
    for phrase, count in zip(CATEGORIES, BOXES_PER_PHRASE, strict=True):
        boxes = ",".join(
            "".join(f"<{(37 * i + k * 211) % 1000}>" for k in range(4))
            for i in range(count)
        )
        groups.append(
            f"<|object_ref_start|>{phrase}<|object_ref_end|>"
            f"<|box_start|>{boxes}<|box_end|>"
        )
    return ", ".join(groups)


class InstantLLM:
    """Answers ``generate`` at once with :func:`answer_text`, as vLLM's
    ``RequestOutput`` objects (token ids, texts, log-probs with alternatives)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        text = answer_text()
        ids = tokenizer(text + "<|im_end|>", add_special_tokens=False)["input_ids"]
        first_bin = tokenizer.convert_tokens_to_ids("<0>")
        entries = []
        for token in ids:
            entry = {token: self._logprob(-0.02, token)}
            if 0 <= token - first_bin < 1000:
                for k in range(1, TOP_LOGPROBS):
                    other = first_bin + (token - first_bin + k) % 1000
                    entry[other] = self._logprob(-2.0 - k, other)
            entries.append(entry)
        self.completion = dict(text=text, token_ids=ids, logprobs=entries)
        self.prompt_ids = list(range(450))

    def _logprob(self, value: float, token: int):
        text = self.tokenizer.decode([token], skip_special_tokens=False)
        return SimpleNamespace(logprob=value, rank=1, decoded_token=text)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, params, use_tqdm=False):
        self.called_at = time.perf_counter()
        return [
            SimpleNamespace(
                outputs=[SimpleNamespace(**self.completion, finish_reason="stop")],
                prompt_token_ids=self.prompt_ids,
            )
            for _ in prompts
        ]


def write_images(folder: Path, count: int) -> list[str]:
    """JPEGs of photo-like content (smooth noise), about 40-60 KB each."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE
    paths = []
    for index in range(count):
        small = rng.integers(0, 255, (height // 16, width // 16, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((width, height), Image.BICUBIC)
        path = folder / f"{index:04d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def engine_for(model_dir: str):
    from transformers import AutoTokenizer

    from worker.engines import vllm_engine

    # SamplingParams without vLLM: its keyword arguments stand in for it.
    vllm_engine.sampling_params = lambda sampling, overrides=None, guard=True: {
        **vllm_engine.sampling_kwargs(sampling, guard),
        **(overrides or {}),
    }
    llm = InstantLLM(AutoTokenizer.from_pretrained(model_dir))
    return vllm_engine.VLLMEngine(model_dir, llm=llm)


def run(model_dir: str, chunks: int, chunk_size: int) -> dict:
    from common.jobspec import ImageJob, ImageResult, ModelCall
    from converters.labelstudio.writer import to_labelstudio
    from converters.tasks import Task
    from worker.jobs import WorkerRuntime, install_runtime, run_chunk

    engine = engine_for(model_dir)
    install_runtime(WorkerRuntime(engine=engine))
    call = ModelCall(task=Task.DETECTION, categories=list(CATEGORIES))
    stages: dict[str, list[float]] = {
        "load_and_prompts": [],
        "engine_wrapper": [],
        "parse_score_json": [],
        "labelstudio": [],
    }
    totals: list[float] = []
    cpu: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(Path(tmp), chunk_size)
        jobs = [
            ImageJob(id=str(i), image=p, calls=[call], local_paths=True).to_dict()
            for i, p in enumerate(paths)
        ]
        run_chunk({"images": jobs[:2]})  # warm-up: imports, caches
        for chunk in range(chunks):
            cpu_started = time.process_time()
            started = time.perf_counter()
            out = run_chunk({"images": jobs, "chunk": chunk})
            converted = time.perf_counter()
            regions = 0
            for item in out["images"]:
                result = ImageResult.from_dict(item)
                assert result.error is None, result.error
                for call_result in result.calls:
                    regions += len(
                        to_labelstudio(
                            call_result.predictions,
                            from_name="label",
                            to_name="image",
                            width=result.width,
                            height=result.height,
                        )
                    )
            ended = time.perf_counter()
            n = len(out["images"])
            timings = out["images"][0]["calls"][0]["timings"]  # the batch's
            before = engine.llm.called_at - timings["preprocess"] - started
            wrapper = sum(timings[k] for k in ("preprocess", "generate", "postprocess"))
            stages["load_and_prompts"].append(before / n)
            stages["engine_wrapper"].append(wrapper / n)
            stages["parse_score_json"].append(
                (converted - started - before - wrapper) / n
            )
            stages["labelstudio"].append((ended - converted) / n)
            totals.append((ended - started) / n)
            cpu.append((time.process_time() - cpu_started) / n)
            assert regions == n * sum(BOXES_PER_PHRASE), regions
    per_image_ms = {k: round(statistics.median(v) * 1000, 3) for k, v in stages.items()}
    total_ms = round(statistics.median(totals) * 1000, 3)
    return {
        "cpu_ms": round(statistics.median(cpu) * 1000, 3),
        "bench": "overhead",
        "image_size": list(IMAGE_SIZE),
        "chunk_size": chunk_size,
        "chunks": chunks,
        "answer_tokens": len(engine.llm.completion["token_ids"]),
        "per_image_ms": per_image_ms,
        "total_ms": total_ms,
        "share_of_gpu_time": {
            goal: round(total_ms / ms, 4) for goal, ms in GOALS_MS.items()
        },
        "goal_share": OVERHEAD_GOAL,
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Model directory (default: the tiny one).")
    parser.add_argument("--chunks", type=int, default=CHUNKS)
    parser.add_argument("--chunk-size", type=int, default=CHUNK_SIZE)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if not model_dir:
            from worker.training.tiny_model import make_test_model

            model_dir = str(make_test_model(Path(tmp) / "tiny", verify=False))
        report = run(model_dir, args.chunks, args.chunk_size)
    for stage, ms in report["per_image_ms"].items():
        print(f"{stage:>16}: {ms:7.3f} ms/image", file=sys.stderr)
    print(f"{'total':>16}: {report['total_ms']:7.3f} ms/image", file=sys.stderr)
    print(f"{'cpu time':>16}: {report['cpu_ms']:7.3f} ms/image", file=sys.stderr)
    for goal, share in report["share_of_gpu_time"].items():
        print(f"{goal}: {share:.1%} of GPU time per image", file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
