"""Real Redis and real ``rexlabel worker`` processes for the worker tests.

Each pytest session claims a Redis database of its own (:func:`claimed_db`),
emptied before each test, so RQ's registries there hold only what it made.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

TEST_DB_POOL = tuple(range(1, 10))
"""Redis databases these tests may claim (0 and 10-15 are used by other tests).
Each pytest session claims one for itself, so two sessions running the suite
at once on one machine never flush each other's queues."""
CLAIM_KEY = "rexlabel:test-session"
"""Key marking a database as claimed; kept when the database is cleaned."""
CLAIM_TTL_S = 3 * 3600
"""A claim outlives any test session; a crashed session's claim expires."""
REDIS_BASE_URL = os.environ.get("REXLABEL_TEST_REDIS", "redis://127.0.0.1:6379")
REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0
"""A worker loading the tiny model registers within seconds; CI can be slow."""

_claimed: int | None = None


def _release() -> None:
    from redis import Redis

    if _claimed is not None:
        Redis.from_url(redis_url(_claimed)).delete(CLAIM_KEY)


def claimed_db() -> int:
    """This session's Redis database (claimed on first use); skip without Redis."""
    global _claimed
    if _claimed is not None:
        return _claimed
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    owner = f"{socket.gethostname()}:{os.getpid()}"
    for db in TEST_DB_POOL:
        connection = Redis.from_url(redis_url(db), socket_connect_timeout=1)
        try:
            if connection.set(CLAIM_KEY, owner, nx=True, ex=CLAIM_TTL_S):
                _claimed = db
                atexit.register(_release)
                return db
        except RedisConnectionError as exc:
            pytest.skip(f"no Redis at {REDIS_BASE_URL}: {exc}")
    pytest.skip(f"every test Redis database {TEST_DB_POOL} is claimed by a session")


def redis_url(db: int | None = None) -> str:
    return f"{REDIS_BASE_URL.rstrip('/')}/{claimed_db() if db is None else db}"


_EMPTY_BUT_CLAIM = """
for _, key in ipairs(redis.call('KEYS', '*')) do
    if key ~= ARGV[1] then redis.call('DEL', key) end
end
"""
"""Run as one script, so the database empties atomically like a Redis restart
(a SCAN-then-DEL loop could keep a job enqueued mid-scan while deleting its
queue: a state no restart produces)."""


def empty_db(connection) -> None:
    """Delete every key but the claim (never FLUSHDB: it would drop the claim)."""
    connection.eval(_EMPTY_BUT_CLAIM, 0, CLAIM_KEY)


def redis_or_skip():
    """A connection to this session's database, emptied (but still claimed)."""
    from redis import Redis

    connection = Redis.from_url(redis_url(), socket_connect_timeout=1)
    empty_db(connection)
    return connection


def worker_env(model_dir: Path | str, **extra: str):
    """Environment of a worker on the tiny model, on the CPU, offline."""
    env = {
        **os.environ,
        "REDIS_URL": redis_url(),
        "REXLABEL_MODEL": str(model_dir),
        "REXLABEL_ENGINE": "transformers",
        "REXLABEL_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "SAM_CHECKPOINT": "",
        "REXLABEL_WORKER_METRICS_PORT": "0",
        "LOG_LEVEL": "WARNING",
    }
    env.update(extra)
    return env


FAST_WORKER = (
    "--execution-ttl",
    "3",
    "--heartbeat-interval",
    "1",
    "--maintenance-interval",
    "1",
    "--worker-ttl",
    "16",
)
"""Worker options that notice a killed worker within seconds."""


def wait_for(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.02
):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def start_worker(
    connection,
    env: dict[str, str],
    *args: str,
    name: str,
    log_path: Path | None = None,
    entry: str = "backend.cli",
) -> subprocess.Popen:
    """``rexlabel worker --name NAME ARGS`` in a new process; returns once RQ
    lists it (the model is loaded by then). A ``--burst`` worker may empty its
    queues and exit 0 between two polls: that counts as started. ``entry`` is
    the module run with ``-m`` (tests.worker.note_worker also runs NOTE jobs)."""
    from rq import Worker

    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", entry, "worker", "--name", name, *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )

    def registered() -> bool:
        if process.poll() is not None:
            if process.returncode == 0 and "--burst" in args:
                return True
            log = log_path.read_text() if log_path else ""
            raise AssertionError(
                f"worker {name} exited with {process.returncode}\n{log}"
            )
        return any(w.name == name for w in Worker.all(connection=connection))

    wait_for(registered, START_TIMEOUT_S, f"worker {name} to register", 0.1)
    return process


def stop_worker(process: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM (warm shutdown), then SIGKILL if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
