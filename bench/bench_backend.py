"""Latency the backend and the queue add on top of the model.

Run (Redis on 127.0.0.1:6379; uses database 13 and flushes it)::

    .venv/bin/python bench/bench_backend.py
    .venv/bin/python bench/bench_backend.py --requests 500 --workers 2

What runs, all real except the model: the backend as deployed (``gunicorn
-k gthread 'backend.app:create_app()'``) in its own process with ``REDIS_URL``
set, and ``--workers`` rexlabel worker processes (``worker.process``'s worker
class, JSON serializer) whose ``worker.jobs.WorkerRuntime`` holds
:class:`InstantEngine`, an ``Engine`` that answers every request at once with
a fixed, well-formed Rex-Omni answer. Image loading, prompt building, parsing,
scoring, Redis, RQ, Flask, planning and the Label Studio conversion are all
timed; generation is not.

Basic auth is on (``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``), as a deployment
must have it, and the image is a Label Studio local-files reference under
``LOCAL_FILES_DOCUMENT_ROOT`` (the only local files served over HTTP).

Figures printed (no assertions):

- p50 / p99 / max milliseconds of a one-task interactive ``/predict`` (a
  drawn rectangle -> visual prompting), sequential, over HTTP;
- the same for an in-process ``Backend`` (no HTTP, no Redis) to split the cost;
- requests per second with ``--clients`` concurrent clients.

Goal: p50 < 15 ms, p99 < 50 ms through Redis and a worker.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from converters.grammar import IM_END  # noqa: E402 - after the path fix above
from worker.engines.base import (  # noqa: E402 - after the path fix above
    Engine,
    GenerationRequest,
    GenerationResult,
)

BENCH_REDIS_DB = 13
"""Database used only by this bench (tests use 12 and 14); flushed at start."""

IMAGE_SIZE = (640, 480)
"""A typical Label Studio upload, small enough that loading it is not the story."""

WARMUP_REQUESTS = 20
"""Untimed requests first: imports, connection pools, the image cache."""

SERVER_START_TIMEOUT_S = 60.0
"""gunicorn plus the backend's imports take a few seconds on a busy machine."""

ANSWER = (
    "<|object_ref_start|>object_1<|object_ref_end|><|box_start|>"
    "<100><120><300><340>,<500><520><700><740><|box_end|>"
)
"""Two boxes: what visual prompting typically returns for one drawn box."""

BENCH_USER = "bench"
BENCH_PASSWORD = "bench-password-not-secret"
"""Basic auth credentials of the bench's own loopback server."""

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" smart="true">'
    '<Label value="Car"/><Label value="Person"/></RectangleLabels></View>'
)

_TOKEN = re.compile(r"<\|[a-z_]+\|>|<\d+>|.", re.S)


class InstantEngine(Engine):
    """Answers every request at once with :data:`ANSWER` (greedy, confident)."""

    name = "instant"

    def __init__(self, answer: str = ANSWER) -> None:
        self.answer = answer
        pieces = [*_TOKEN.findall(answer), IM_END]
        self.token_texts = pieces
        self.token_ids = list(range(1, len(pieces) + 1))
        self.token_logprobs = [-0.01] * len(pieces)

    @property
    def model_id(self) -> str:
        return "bench/instant"

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        return [
            GenerationResult(
                text=self.answer,
                token_ids=list(self.token_ids),
                token_texts=list(self.token_texts),
                token_logprobs=list(self.token_logprobs),
                finish_reason="stop",
                prompt_tokens=100,
                output_tokens=len(self.token_ids),
                timings={"preprocess": 0.0, "generate": 0.0, "postprocess": 0.0},
            )
            for _ in requests
        ]


# Processes ---------------------------------------------------------------------
def run_worker(url: str, name: str) -> int:
    """The worker process: rexlabel's worker class with the instant engine."""
    from redis import Redis

    from common.queues import QUEUES
    from worker.jobs import WorkerRuntime, install_runtime
    from worker.process import build_worker

    install_runtime(WorkerRuntime(engine=InstantEngine()))
    worker = build_worker(Redis.from_url(url), QUEUES, name=name)
    worker.work(logging_level="WARNING")
    return 0


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Requests ----------------------------------------------------------------------
def interactive_body(image: str, task_id: int = 1) -> dict[str, Any]:
    """One task and one drawn rectangle, as Label Studio sends them."""
    drawn = {
        "id": "drawn1",
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
        "original_width": IMAGE_SIZE[0],
        "original_height": IMAGE_SIZE[1],
        "image_rotation": 0,
        "value": {
            "x": 10,
            "y": 20,
            "width": 20,
            "height": 30,
            "rotation": 0,
            "rectanglelabels": ["Car"],
        },
    }
    return {
        "tasks": [{"id": task_id, "data": {"image": image}}],
        "project": "1.1795697856",
        "label_config": CONFIG,
        "params": {"login": None, "password": None, "context": {"result": [drawn]}},
    }


def _check(reply: dict[str, Any]) -> None:
    results = reply.get("results") or []
    if reply.get("errors") or len(results) != 1 or not results[0]["result"]:
        raise RuntimeError(f"unexpected reply: {reply}")


def time_requests(send, n: int) -> list[float]:
    """Milliseconds per call of ``send()``."""
    for _ in range(WARMUP_REQUESTS):
        _check(send())
    times = []
    for _ in range(n):
        started = time.perf_counter()
        reply = send()
        times.append((time.perf_counter() - started) * 1000)
        _check(reply)
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def report(name: str, times: list[float]) -> None:
    print(
        f"{name:<42} p50 {percentile(times, 50):6.1f} ms   "
        f"p99 {percentile(times, 99):6.1f} ms   max {max(times):6.1f} ms   "
        f"mean {statistics.fmean(times):6.1f} ms   (n={len(times)})"
    )


def time_health(session: Any, url: str, n: int = 100) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        session.get(url).raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
    return times


def throughput(url: str, body: dict[str, Any], clients: int, seconds: float) -> float:
    import requests

    done = [0] * clients
    stop = time.monotonic() + seconds
    failures: list[str] = []

    def client(i: int) -> None:
        session = requests.Session()
        session.auth = (BENCH_USER, BENCH_PASSWORD)
        while time.monotonic() < stop:
            reply = session.post(url, json=body, timeout=30).json()
            try:
                _check(reply)
            except RuntimeError as exc:
                failures.append(str(exc))
                return
            done[i] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(failures[0])
    return sum(done) / (time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8, help="gunicorn threads")
    args = parser.parse_args(argv)

    import requests
    from PIL import Image
    from redis import Redis

    url = f"{args.redis.rstrip('/')}/{BENCH_REDIS_DB}"
    connection = Redis.from_url(url)
    connection.flushdb()
    tmp = Path(tempfile.mkdtemp(prefix="rexlabel-bench-"))
    Image.new("RGB", IMAGE_SIZE, (90, 120, 150)).save(tmp / "street.jpg", quality=90)
    body = interactive_body("/data/local-files/?d=street.jpg")
    served = {
        "LOCAL_FILES_DOCUMENT_ROOT": str(tmp),
        "BASIC_AUTH_USER": BENCH_USER,
        "BASIC_AUTH_PASS": BENCH_PASSWORD,
    }
    os.environ.update(served)  # the in-process worker's image loader reads these

    # In-process: planning, the instant model's pipeline and conversion, no HTTP.
    from backend.app import BackendConfig, create_app
    from backend.queue import InProcessRunner
    from backend.state import MemoryStore
    from worker.jobs import WorkerRuntime, install_runtime

    install_runtime(WorkerRuntime(engine=InstantEngine()))
    app = create_app(served, runner=InProcessRunner(), store=MemoryStore())
    backend = app.extensions["rexlabel"]
    assert isinstance(backend.config, BackendConfig)
    print(f"InstantEngine answer: {len(InstantEngine().token_ids)} tokens, 2 boxes")
    report(
        "in-process Backend.predict (no HTTP/Redis)",
        time_requests(lambda: backend.predict(body), args.requests),
    )

    env = {
        **served,
        "REDIS_URL": url,
        "LOG_LEVEL": "WARNING",
        "REXLABEL_MODEL": "bench/instant",
    }
    workers = [
        _start([sys.executable, __file__, "--worker", url, f"bench-{i}"], env)
        for i in range(args.workers)
    ]
    port = _free_port()
    server = _start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gthread",
            "-w",
            "1",
            "--threads",
            str(args.threads),
            "-b",
            f"127.0.0.1:{port}",
            "backend.app:create_app()",
        ],
        env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                health = requests.get(
                    f"{base}/health", timeout=1, auth=(BENCH_USER, BENCH_PASSWORD)
                ).json()
                if health["queue"]["workers"] >= args.workers:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server or workers did not come up")
            time.sleep(0.2)
        session = requests.Session()
        session.auth = (BENCH_USER, BENCH_PASSWORD)
        predict = f"{base}/predict"
        report(
            f"HTTP + Redis + {args.workers} worker(s), 1 client",
            time_requests(
                lambda: session.post(predict, json=body).json(), args.requests
            ),
        )
        report("HTTP /health (for scale)", time_health(session, f"{base}/health"))
        rate = throughput(predict, body, args.clients, args.seconds)
        print(
            f"{args.clients} concurrent clients, {args.workers} worker(s): "
            f"{rate:.0f} requests/s"
        )
    finally:
        _stop(server)
        for worker in workers:
            _stop(worker)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(run_worker(sys.argv[2], sys.argv[3]))
    sys.exit(main())
