"""A real Redis for backend tests: its own database number, flushed before use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

BACKEND_TEST_REDIS_DB = 12
"""Used only by tests/backend (e2e uses 14): flushing it touches nobody else's
keys, and RQ's worker registry there lists only workers these tests start."""

REDIS_BASE_URL = os.environ.get("REXLABEL_TEST_REDIS", "redis://127.0.0.1:6379")
"""Where the test Redis runs (override for CI services)."""


def redis_url() -> str:
    return f"{REDIS_BASE_URL.rstrip('/')}/{BACKEND_TEST_REDIS_DB}"


def redis_or_skip(flush: bool = True):
    """A connection to the test database, flushed; skip when Redis is absent."""
    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    connection = Redis.from_url(redis_url(), socket_connect_timeout=1)
    try:
        connection.ping()
    except RedisConnectionError as exc:
        pytest.skip(f"no Redis at {redis_url()}: {exc}")
    if flush:
        connection.flushdb()
    return connection


REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT_S = 120.0
"""A worker that loads the tiny model starts in seconds; CI machines are slow."""


def start_worker(
    command: list[str], connection, *, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start a worker process from the repo root; wait until it is registered.

    The caller stops it with :func:`stop_worker`.
    """
    from rq import Worker

    before = Worker.count(connection=connection)
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while Worker.count(connection=connection) <= before:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise RuntimeError(f"worker exited with {process.returncode}:\n{output}")
        if time.monotonic() > deadline:
            stop_worker(process)
            raise RuntimeError("worker did not register in time")
        time.sleep(0.05)
    return process


def stop_worker(process: subprocess.Popen) -> str:
    """SIGTERM (warm shutdown), then kill if needed; returns its output."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.stdout.read() if process.stdout else ""


def test_worker_command(name: str) -> list[str]:
    """rexlabel's worker class running test job functions (no model)."""
    return [sys.executable, "-m", "tests.backend.worker_main", redis_url(), name]


test_worker_command.__test__ = False  # a helper, not a test
