"""A real Redis for backend tests: its own database number, flushed before use."""

from __future__ import annotations

import os

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
