"""Is the model loaded? Background loading, its state, and workers' state in Redis.

Readiness has three states, the same in-process and for queued workers:

- ``loading``: the load started (a first start may download ~7 GB of weights);
- ``ready``: requests can use the model;
- ``failed``: the load raised; ``reason`` says why (the exception's message).

:class:`ModelLoader` loads once in a background thread (the backend without
Redis starts it at start-up), logs start, end with seconds, or the failure, and
lets a request wait for the model only as long as its deadline allows.

A ``rexlabel worker`` registers with RQ only after its model loaded, so RQ's
worker count is the number of *ready* workers. While it loads, or after its
load failed, the worker says so in Redis instead (:class:`LoadReporter`), so
the backend's ``/health`` can tell "workers loading" or "the workers failed:
<reason>" from "no worker at all" (:func:`read_states`).

No torch and no Flask here: both the backend and the worker import it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

LOADING = "loading"
READY = "ready"
FAILED = "failed"
STATES = (LOADING, READY, FAILED)

LOAD_RETRY_AFTER_S = 60.0
"""A failed load is tried again when a request or /health asks for the model
this long after the failure: a model server (vLLM) that was still starting, or a
network hiccup during the download, heals without a restart; a permanent error
costs one log line a minute."""

STATE_KEY_PREFIX = "rexlabel:model-state:"
"""Redis key of one worker's published state: this prefix plus its RQ name."""
STATE_INDEX_KEY = "rexlabel:model-states"
"""Sorted set of worker names that published a state, scored by expiry (unix
seconds): /health reads the live ones without scanning the keyspace."""
PUBLISH_INTERVAL_S = 5.0
"""Seconds between refreshes of a loading worker's state (one Redis pipeline)."""
LOADING_TTL_S = 30
"""A loading worker's state lives this long without a refresh: six missed
refreshes, so a killed worker stops counting as loading within half a minute."""
FAILED_TTL_S = 600
"""A failed worker's reason stays this long for /health: long enough to be read
after the supervisor restarted (and the restart failed again), short enough
that a fixed deployment stops reporting it soon."""
REASON_MAX_CHARS = 500
"""A failure reason is cut to this: /health must stay small and fast."""


class ModelNotReady(RuntimeError):
    """The model is not usable now; the message says why (loading or failed)."""


@dataclass(frozen=True)
class ModelState:
    """One snapshot of the model's readiness.

    ``since`` is the unix time the current state began; ``seconds`` is how long
    the finished load took (ready or failed), else None.
    """

    state: str
    reason: str = ""
    since: float = 0.0
    seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}

    def message(self) -> str:
        """What a per-task error says while the model cannot be used."""
        if self.state == FAILED:
            return f"model failed to load: {self.reason}"
        waited = max(0.0, time.time() - self.since) if self.since else 0.0
        return (
            f"model still loading ({waited:.0f} s so far); try again when "
            "/health says ready"
        )


def failure_reason(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line, cut to REASON_MAX_CHARS."""
    text = " ".join(str(exc).split()) or "no message"
    return f"{type(exc).__name__}: {text}"[:REASON_MAX_CHARS]


class ModelLoader:
    """Loads the model once, in a background thread, and tells who waits.

    ``load()`` returns the loaded model (``worker.jobs.load_runtime`` in the
    backend). :meth:`start` begins a load unless one runs or succeeded (or a
    failure is younger than ``retry_after`` seconds); :meth:`wait` starts it if
    needed and blocks at most ``timeout`` seconds. A process forked after a
    start (gunicorn) loads again in the child: the loading thread stays behind
    in the parent.
    """

    def __init__(
        self,
        load: Callable[[], Any],
        *,
        what: str = "model",
        retry_after: float = LOAD_RETRY_AFTER_S,
    ) -> None:
        self._load = load
        self.what = what
        self.retry_after = retry_after
        self._cond = threading.Condition()
        self._state: ModelState | None = None  # None: never started here
        self._model: Any = None
        self._pid = os.getpid()
        self._failed_at = 0.0  # time.monotonic() of the last failure

    def state(self) -> ModelState:
        """The current state; a load that never started counts as loading."""
        with self._cond:
            self._forget_if_forked()
            return self._state or ModelState(LOADING, since=time.time())

    def start(self) -> ModelState:
        """Start loading in the background if nothing loads or is loaded."""
        with self._cond:
            self._forget_if_forked()
            state = self._state
            if state is not None and state.state in (LOADING, READY):
                return state
            if state is not None and (
                time.monotonic() - self._failed_at < self.retry_after
            ):
                return state
            self._state = ModelState(LOADING, since=time.time())
            threading.Thread(
                target=self._run, name=f"rexlabel-load-{self.what}", daemon=True
            ).start()
            return self._state

    def wait(self, timeout: float) -> Any:
        """The loaded model, waiting at most ``timeout`` s; ModelNotReady if not."""
        self.start()
        deadline = time.monotonic() + max(0.0, timeout)
        with self._cond:
            while self._state is not None and self._state.state == LOADING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            state = self._state or ModelState(LOADING, since=time.time())
            if state.state == READY:
                return self._model
        raise ModelNotReady(state.message())

    def _forget_if_forked(self) -> None:
        if self._pid != os.getpid():  # under self._cond
            self._pid, self._state, self._model = os.getpid(), None, None

    def _run(self) -> None:
        started = time.perf_counter()
        log.info("%s: loading in the background", self.what)
        try:
            model = self._load()
        except Exception as exc:  # any load error is a state, not a crash
            seconds = time.perf_counter() - started
            reason = failure_reason(exc)
            log.error("%s: failed to load after %.1f s: %s", self.what, seconds, reason)
            log.debug("%s: load traceback", self.what, exc_info=True)
            self._finish(ModelState(FAILED, reason, time.time(), seconds), None)
            return
        seconds = time.perf_counter() - started
        log.info("%s: ready (loaded in %.1f s)", self.what, seconds)
        self._finish(ModelState(READY, "", time.time(), seconds), model)

    def _finish(self, state: ModelState, model: Any) -> None:
        with self._cond:
            self._state, self._model = state, model
            if state.state == FAILED:
                self._failed_at = time.monotonic()
            self._cond.notify_all()


# -- workers' state in Redis ------------------------------------------------------
def state_key(name: str) -> str:
    return STATE_KEY_PREFIX + name


def publish_state(connection: Any, name: str, state: ModelState, ttl: int) -> None:
    """Store worker ``name``'s state for ``ttl`` seconds (and drop expired names)."""
    now = time.time()
    pipe = connection.pipeline()
    pipe.set(state_key(name), json.dumps({"name": name, **state.to_dict()}), ex=ttl)
    pipe.zadd(STATE_INDEX_KEY, {name: now + ttl})
    pipe.zremrangebyscore(STATE_INDEX_KEY, "-inf", now)
    pipe.execute()


def withdraw_state(connection: Any, name: str) -> None:
    """Forget worker ``name``'s state (it is registered with RQ now, or gone)."""
    pipe = connection.pipeline()
    pipe.delete(state_key(name))
    pipe.zrem(STATE_INDEX_KEY, name)
    pipe.execute()


def read_states(connection: Any) -> list[dict[str, Any]]:
    """The live published states: ``[{"name", "state", "reason"?, "since"}, ...]``."""
    names = connection.zrangebyscore(STATE_INDEX_KEY, time.time(), "+inf")
    if not names:
        return []
    out = []
    for raw in connection.mget([state_key(n.decode()) for n in names]):
        try:
            item = json.loads(raw) if raw else None
        except ValueError:
            item = None
        if isinstance(item, dict) and item.get("state") in STATES:
            out.append(item)
    return out


def summarize_workers(ready: int, published: list[dict[str, Any]]) -> dict[str, Any]:
    """The model state of a pool of workers, for /health.

    ``ready`` is RQ's count of registered workers on the interactive queue (a
    worker registers only once its model loaded); ``published`` are the states
    of workers still loading or whose load failed. ``state`` is ``ready`` when
    any worker is, else ``loading`` when any loads, else ``failed`` (with the
    latest failure's ``reason``), else ``no_workers``.
    """
    loading = [p for p in published if p["state"] == LOADING]
    failed = sorted(
        (p for p in published if p["state"] == FAILED),
        key=lambda p: p.get("since") or 0,
    )
    out: dict[str, Any] = {"ready": ready, "loading": len(loading)}
    out["failed"] = len(failed)
    if ready:
        out["state"] = READY
    elif loading:
        out["state"] = LOADING
    elif failed:
        out["state"] = FAILED
    else:
        out["state"] = "no_workers"
    if failed:
        out["reason"] = failed[-1].get("reason") or "no reason given"
    return out


class LoadReporter:
    """Publishes a worker's ``loading`` state while its model loads.

    Use around the load: ``with LoadReporter(connection, name): load()``. A
    thread refreshes the state every ``interval`` seconds; on success the state
    is withdrawn (the worker then registers with RQ, which counts it ready); on
    an exception ``failed`` is published with the reason and the exception goes
    on. Redis errors here are logged, never raised: reporting must not stop a
    worker from loading.
    """

    def __init__(
        self,
        connection: Any,
        name: str,
        *,
        interval: float = PUBLISH_INTERVAL_S,
        loading_ttl: int = LOADING_TTL_S,
        failed_ttl: int = FAILED_TTL_S,
    ) -> None:
        self.connection = connection
        self.name = name
        self.interval = interval
        self.loading_ttl = loading_ttl
        self.failed_ttl = failed_ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._state = ModelState(LOADING, since=time.time())

    def __enter__(self) -> LoadReporter:
        self._safely(publish_state, self._state, self.loading_ttl)
        self._thread = threading.Thread(
            target=self._refresh, name="rexlabel-load-report", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if exc is None:
            self._safely(withdraw_state)
            return
        seconds = time.time() - self._state.since
        failed = ModelState(FAILED, failure_reason(exc), time.time(), seconds)
        self._safely(publish_state, failed, self.failed_ttl)

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval):
            self._safely(publish_state, self._state, self.loading_ttl)

    def _safely(self, action: Callable[..., None], *args: Any) -> None:
        try:
            action(self.connection, self.name, *args)
        except Exception as exc:  # Redis trouble: the load matters more
            log.warning("could not publish the model state to Redis: %s", exc)
