"""Every Redis client rexlabel opens, with timeouts: :func:`redis_connection`.

A client without socket timeouts waits forever when Redis stops answering (a
paused container, a half-open TCP connection after a network change): the
backend's request threads, a bulk job or an idle worker would hang with it.
Every connection therefore comes from :func:`redis_connection`, which sets a
connect timeout and a per-reply timeout; callers that block on the server side
(``XREAD BLOCK``, RQ's ``BLMOVE`` dequeue) add the longest block they issue.

The password is the one in the URL (``redis://:PASSWORD@host:6379/0``), so the
Redis of the Compose stack (``--requirepass``) is reached by every client alike.

Importable by the backend: no torch, no Flask.
"""

from __future__ import annotations

from typing import Any

CONNECT_TIMEOUT_S = 5.0
"""Seconds to open the TCP connection: Redis on the same network answers in
milliseconds; 5 s covers a busy host or a slow DNS answer, and a Redis that is
down is reported in seconds rather than after the kernel's ~2 min SYN retries."""

COMMAND_TIMEOUT_S = 10.0
"""Seconds to wait for the reply to one command that does not block on the
server: those answer in milliseconds, and Redis' own stalls (an AOF fsync, a
large KEYS on another client) stay far below this. Longer means Redis is gone."""

HEALTH_CHECK_INTERVAL_S = 30
"""A pooled connection idle for longer is PINGed before its next command, so one
that a firewall or a Redis restart dropped is replaced instead of failing it."""


def redis_connection(
    url: str,
    *,
    purpose: str,
    timeout: float | None = None,
    blocking: float = 0.0,
) -> Any:
    """A ``redis.Redis`` client for ``url`` that never waits without a limit.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://``, ``unix://``);
            its password is used for AUTH.
        purpose: who connects ("worker", "queue", "bulk jobs", ...), named in the
            error when ``url`` is not a Redis URL.
        timeout: seconds for one reply (default :data:`COMMAND_TIMEOUT_S`) and,
            capped at :data:`CONNECT_TIMEOUT_S`, for the connect.
        blocking: the longest server-side block this client issues, in seconds
            (``XREAD BLOCK``, ``BLMOVE`` timeouts); added to ``timeout`` so that a
            block that ends normally is never taken for a dead Redis.

    Raises:
        ValueError: ``url`` is not a Redis URL (the message hides its password).
    """
    from redis import Redis

    timeout = COMMAND_TIMEOUT_S if timeout is None else timeout
    if timeout <= 0 or blocking < 0:
        raise ValueError(
            f"{purpose}: Redis timeouts must be positive, got timeout={timeout!r} "
            f"and blocking={blocking!r}"
        )
    try:
        return Redis.from_url(
            url,
            socket_connect_timeout=min(CONNECT_TIMEOUT_S, timeout),
            socket_timeout=timeout + blocking,
            health_check_interval=HEALTH_CHECK_INTERVAL_S,
        )
    except ValueError as exc:
        from common.redaction import redact_text

        raise ValueError(
            f"{purpose}: {redact_text(str(url))!r} is not a Redis URL "
            f"(redis://[:password@]host:port/db): {exc}"
        ) from None
