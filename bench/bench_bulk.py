"""Throughput of the bulk job machinery itself (images/s), and its memory.

Run:  .venv/bin/python bench/bench_bulk.py [--sizes 1000,10000] [--workers 1,2]
      .venv/bin/python bench/bench_bulk.py --engine-ms 5   # worker scaling

Each run pre-labels a folder of small JPEGs with ``backend.bulk`` exactly as
``rexlabel prelabel`` does (chunks on ``rexlabel:bulk``, RQ workers, part files,
streaming COCO merge), but the workers' engine is :class:`InstantEngine`: a
real ``Engine`` that answers at once with a fixed, well-formed Rex-Omni
generation. What is measured is therefore only rexlabel's overhead: image
decode, chunking, queue round trips, parsing, scoring, writing.

Prints, per (images, workers): seconds, images/s, peak RSS of the CLI process
(the orchestrator) and of each worker, plus the 2-worker/1-worker scaling
ratio and the "inline" figure (no Redis, one process). Goal: >= 200 images/s
with one worker, scaling with a second, memory flat with the image count.
With ``--engine-ms N`` the engine also sleeps N ms per image (a GPU's time,
without using the CPU), which shows how the workers scale once the engine,
not the orchestrator, is the bottleneck.
Needs Redis (REXLABEL_BENCH_REDIS, default redis://127.0.0.1:6379/8, flushed).
No assertions: figures only.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from worker.engines.base import Engine, GenerationRequest, GenerationResult  # noqa: E402

BENCH_REDIS = os.environ.get("REXLABEL_BENCH_REDIS", "redis://127.0.0.1:6379/8")
"""A database of its own: flushed before every run."""
IMAGE_SIZE = (96, 72)
"""Small images: decode cost stays visible but does not dominate."""
ANSWER_TOKENS = (
    "<|object_ref_start|>",
    "car",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<100>",
    "<200>",
    "<300>",
    "<400>",
    ",",
    "<500>",
    "<520>",
    "<700>",
    "<650>",
    "<|box_end|>",
    "<|object_ref_start|>",
    "person",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<10>",
    "<20>",
    "<90>",
    "<980>",
    "<|box_end|>",
    "<|im_end|>",
)
"""A fixed answer: three boxes over two categories, ending with the stop token."""
CALL = {"task": "detection", "categories": ["car", "person"]}
WORKER_START_TIMEOUT_S = 60.0
ENGINE_MS_ENV = "REXLABEL_BENCH_ENGINE_MS"
"""Milliseconds the engine waits per image (``--engine-ms``), without using the
CPU: a stand-in for GPU time, so that worker scaling shows on a 2-core machine
where the instant engine leaves the orchestrator as the bottleneck."""


class InstantEngine(Engine):
    """An engine that answers every request at once with :data:`ANSWER_TOKENS`."""

    name = "instant"

    @property
    def model_id(self) -> str:
        return "instant"

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        wait_ms = float(os.environ.get(ENGINE_MS_ENV, "0"))
        if wait_ms > 0:
            time.sleep(wait_ms * len(requests) / 1000)
        text = "".join(ANSWER_TOKENS[:-1])
        results = []
        for request in requests:
            request.image.load()  # touch the pixels, as a real engine would
            results.append(
                GenerationResult(
                    text=text,
                    token_ids=list(range(len(ANSWER_TOKENS))),
                    token_texts=list(ANSWER_TOKENS),
                    token_logprobs=[-0.05] * len(ANSWER_TOKENS),
                    finish_reason="stop",
                    prompt_tokens=64,
                    output_tokens=len(ANSWER_TOKENS),
                )
            )
        return results


def serve(redis_url: str, name: str) -> int:
    """Worker mode: a ``rexlabel worker`` whose engine is :class:`InstantEngine`."""
    from redis import Redis

    from common.queues import QUEUES
    from worker.jobs import WorkerRuntime, install_runtime
    from worker.process import build_worker

    install_runtime(WorkerRuntime(engine=InstantEngine()))
    worker = build_worker(Redis.from_url(redis_url), QUEUES, name=name)
    worker.work(logging_level="WARNING")
    return 0


def make_images(folder: Path, count: int) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        shade = (i * 37) % 256
        Image.new("RGB", IMAGE_SIZE, (shade, 255 - shade, 128)).save(
            folder / f"{i:06d}.jpg", quality=85
        )


def peak_rss_mb(pid: int) -> float:
    """VmHWM of a live process, MiB."""
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_workers(connection, count: int, tag: str) -> list[subprocess.Popen]:
    from rq import Worker

    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--serve", BENCH_REDIS, f"{tag}-{i}"],
            cwd=REPO_ROOT,
            env={**os.environ, "LOG_LEVEL": "WARNING"},
        )
        for i in range(count)
    ]
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while Worker.count(connection=connection) < count:
        if time.monotonic() > deadline:
            raise SystemExit("bench workers did not start")
        time.sleep(0.05)
    return procs


def stop_workers(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(timeout=30)


def run_job(folder: Path, out: Path, jobs_root: Path, connection) -> tuple[float, dict]:
    """One bulk job over ``folder``; returns (seconds, final record)."""
    from backend.bulk.creation import create_files_job
    from backend.bulk.orchestration import run_job as run
    from backend.bulk.store import JobStore

    store = JobStore(jobs_root, connection)
    started = time.perf_counter()
    job = create_files_job(
        [str(folder)], [CALL], out=out, store=store, model_version="bench"
    )
    record = run(job, store, connection=connection)
    return time.perf_counter() - started, record.to_dict()


def measure(folder: Path, size: int, workers: int, tmp: Path) -> dict:
    """Run one case in a fresh process so its peak RSS is its own."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--case",
            str(folder),
            str(size),
            str(workers),
            str(tmp),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    if done.returncode != 0:
        raise SystemExit(f"case {size}x{workers} failed:\n{done.stderr[-3000:]}")
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def case(folder: Path, size: int, workers: int, tmp: Path) -> int:
    """Child mode: run one case and print its figures as JSON."""
    import json

    from redis import Redis

    connection = Redis.from_url(BENCH_REDIS)
    connection.flushdb()
    tag = f"bench{size}x{workers}"
    if not workers:  # inline: chunks run in this process, on the instant engine
        from worker.jobs import WorkerRuntime, install_runtime

        install_runtime(WorkerRuntime(engine=InstantEngine()))
    procs = start_workers(connection, workers, tag) if workers else []
    try:
        seconds, record = run_job(
            folder,
            tmp / f"{tag}.coco.json",
            tmp / f"jobs-{tag}",
            connection if workers else None,
        )
        worker_rss = [peak_rss_mb(p.pid) for p in procs]
        # Before the check below loads the whole COCO file into this process.
        me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        stop_workers(procs)
    if record["done"] != size or record["failed"]:
        raise SystemExit(f"job did not finish cleanly: {record}")
    coco = json.loads((tmp / f"{tag}.coco.json").read_text())
    assert len(coco["images"]) == size and len(coco["annotations"]) == 3 * size
    print(
        json.dumps(
            {
                "images": size,
                "workers": workers,
                "seconds": seconds,
                "rate": size / seconds,
                "cli_rss_mb": me,
                "worker_rss_mb": worker_rss,
            }
        )
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument(
        "--engine-ms",
        type=float,
        default=0.0,
        help="engine time per image, ms (a sleeping stand-in for the GPU)",
    )
    parser.add_argument(
        "--no-inline", action="store_true", help="skip the in-process (no Redis) run"
    )
    parser.add_argument(
        "--serve", nargs=2, metavar=("REDIS_URL", "NAME"), help=argparse.SUPPRESS
    )
    parser.add_argument("--case", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(*args.serve)
    if args.case:
        folder, size, workers, tmp = args.case
        return case(Path(folder), int(size), int(workers), Path(tmp))
    from backend.bulk.creation import CHUNK_SIZE

    os.environ[ENGINE_MS_ENV] = str(args.engine_ms)
    sizes = [int(s) for s in args.sizes.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    print(
        f"bench_bulk: instant engine, {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEGs, "
        f"chunks of {CHUNK_SIZE}, "
        f"engine {args.engine_ms:g} ms/image, "
        f"{os.cpu_count()} CPUs, Redis {BENCH_REDIS}"
    )
    rows = []
    with tempfile.TemporaryDirectory(prefix="rexlabel-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for size in sizes:
            folder = tmp / f"images-{size}"
            make_images(folder, size)
            counts = ([0] if not args.no_inline else []) + worker_counts
            for workers in counts:
                row = measure(folder, size, workers, tmp)
                rows.append(row)
                who = f"{workers} worker(s)" if workers else "inline"
                rss = ", ".join(f"{r:.0f}" for r in row["worker_rss_mb"]) or "-"
                print(
                    f"{size:>6} images, {who:<12} {row['seconds']:7.2f} s "
                    f"{row['rate']:8.1f} img/s   peak RSS: CLI {row['cli_rss_mb']:.0f}"
                    f" MiB, workers {rss} MiB",
                    flush=True,
                )
    for size in sizes:
        by = {r["workers"]: r for r in rows if r["images"] == size}
        if 1 in by and 2 in by:
            print(
                f"{size:>6} images: 2 workers / 1 worker = "
                f"{by[2]['rate'] / by[1]['rate']:.2f}x"
            )
    if len(sizes) > 1:
        small, large = min(sizes), max(sizes)
        for w in worker_counts:
            a = next(
                (r for r in rows if r["images"] == small and r["workers"] == w), None
            )
            b = next(
                (r for r in rows if r["images"] == large and r["workers"] == w), None
            )
            if a and b:
                print(
                    f"CLI peak RSS, {w} worker(s): {a['cli_rss_mb']:.0f} MiB at {small}"
                    f" images, {b['cli_rss_mb']:.0f} MiB at {large}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
