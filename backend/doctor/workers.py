"""Redis and the RQ workers: reachable, persistent, someone listening."""

from __future__ import annotations

from typing import Any

from backend.doctor.report import Check, fail, ok, skip, warn

REDIS_TIMEOUT_S = 2.0
"""Connect/read timeout of the Redis probe."""


def check_redis(url: str, queues: tuple[str, ...] | None = None) -> list[Check]:
    """Redis reachable, AOF persistence on, a worker listening on each queue."""
    if not url:
        return [
            ok(
                "redis",
                "REDIS_URL is not set: jobs run inside the backend process "
                "(one machine, no queue)",
            )
        ]
    from redis.exceptions import RedisError

    from common.redis_conn import redis_connection

    shown = _redis_display(url)
    try:
        conn = redis_connection(url, purpose="doctor", timeout=REDIS_TIMEOUT_S)
        conn.ping()
    except (RedisError, OSError, ValueError) as exc:
        return [
            fail(
                "redis",
                f"cannot reach Redis at {shown}: {exc}",
                "start Redis or fix REDIS_URL (in Docker Compose: "
                "redis://:PASSWORD@redis:6379/0; leave it empty to run jobs "
                "in-process)",
            )
        ]
    checks = [ok("redis", f"Redis at {shown} answers")]
    checks.append(_check_persistence(conn))
    checks.append(check_workers(conn, queues))
    return checks


def _redis_display(url: str) -> str:
    from common.redaction import redact_text

    return redact_text(url)


def _check_persistence(conn: Any) -> Check:
    try:
        appendonly = conn.config_get("appendonly").get("appendonly")
    except Exception as exc:  # managed Redis often forbids CONFIG
        return skip("redis persistence", f"cannot read Redis' config: {exc}")
    if appendonly == "yes":
        return ok("redis persistence", "append-only file on: job records survive")
    return warn(
        "redis persistence",
        "append-only file off: bulk job progress is lost if Redis restarts",
        "start redis-server with --appendonly yes (the compose file does)",
    )


def check_workers(conn: Any, queues: tuple[str, ...] | None) -> Check:
    from rq import Queue, Worker

    if queues is None:
        from common.queues import QUEUES as queues
    counts = {}
    depths = {}
    for name in queues:
        queue = Queue(name, connection=conn)
        counts[name] = Worker.count(connection=conn, queue=queue)
        depths[name] = queue.count
    waiting = ", ".join(f"{name}: {depths[name]} waiting" for name in queues)
    idle = [name for name, count in counts.items() if not count]
    if idle:
        return fail(
            "workers",
            f"no worker listens on {', '.join(idle)} ({waiting})"
            + _unregistered_workers(conn),
            "start `rexlabel worker` with the same REDIS_URL (compose: the worker "
            "service); a worker registers once its model is loaded",
        )
    listening = ", ".join(f"{name}: {counts[name]}" for name in queues)
    return ok("workers", f"workers listening ({listening}; {waiting})")


def _unregistered_workers(conn: Any) -> str:
    """What workers not registered yet published (``common.model_state``):
    still loading the model, or failed to load it and why; else ""."""
    from common.model_state import FAILED, LOADING, read_states, summarize_workers

    try:
        summary = summarize_workers(0, read_states(conn))
    except Exception:  # an extra hint only: the failure above stands without it
        return ""
    if summary["state"] == LOADING:
        return f"; {summary['loading']} worker(s) still loading the model"
    if summary["state"] == FAILED:
        return f"; a worker failed to load the model: {summary['reason']}"
    return ""
