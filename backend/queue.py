"""Run chunks on the workers and wait for them: through Redis/RQ, or in-process.

With ``REDIS_URL`` set, chunks go through :mod:`backend.dispatch` (by dotted
path ``worker.jobs.run_chunk``, JSON payloads) on RQ queues, and the request
waits for their results with a deadline below Label Studio's 100 s timeout.
Without Redis the same job function runs in this process (the model is loaded
on first use), so one command serves on a laptop.

Queue choice (see ``backend.app``): everything a person waits for goes to
``rexlabel:interactive`` -- a click with Auto-Annotation is put at the *front*
of it, a synchronous ``/predict`` (task opened, label stream, a small
"Retrieve Predictions") at the back; background work goes to ``rexlabel:bulk``,
which workers take only when no interactive work waits.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from backend.dispatch import Dispatcher, failure_reason
from common import settings
from common.model_state import (
    READY,
    ModelLoader,
    ModelNotReady,
    read_states,
    summarize_workers,
)
from common.queues import QUEUE_INTERACTIVE, QUEUES, RUN_CHUNK
from common.redis_conn import redis_connection

log = logging.getLogger(__name__)

JOB_TIMEOUT_S = 600
"""RQ stops a chunk running longer: far above any synchronous chunk, which the
backend gives up on after REXLABEL_PREDICT_TIMEOUT anyway."""

RESULT_TTL_S = 300
"""Seconds a finished chunk's result stays in Redis: the waiting request reads
it within milliseconds; the margin covers slow clients and debugging."""

FAILURE_TTL_S = 86_400
"""A failed chunk's traceback stays a day for `rq info` and post-mortems."""

WAIT_SLICE_S = 1.0
"""Longest single blocking read while waiting: a cancelled or lost job is
noticed within this time; a result arrives without any delay."""

HEALTH_TIMEOUT_S = 0.3
"""Socket timeouts of the health check's Redis connection: Label Studio gives
``/health`` one second in all."""

LOAD_RUNTIME = "worker.jobs.load_runtime"
"""What the in-process runner loads for the real job function: the engine (and
SAM) from the settings, installed for ``worker.jobs.run_chunk``."""

NO_REASON = "the worker gave no reason"
"""A failed chunk's error when its traceback is empty."""

DEFAULT_LOAD = object()
"""InProcessRunner's ``load`` default: LOAD_RUNTIME for RUN_CHUNK, else nothing."""


class QueueError(RuntimeError):
    """A chunk could not be run; the message says why."""


class DeadlineExceeded(QueueError):
    """The chunk did not finish before the deadline."""


class JobFailed(QueueError):
    """The worker raised while running the chunk; the message is its error."""


@dataclass(frozen=True)
class Deadline:
    """When a :meth:`ChunkRunner.run_many` call gives up."""

    timeout: float
    """Its seconds, as the call got them (the figure error messages name)."""
    at: float
    """The ``time.monotonic()`` value ``timeout`` seconds after the call."""

    def remaining(self) -> float:
        """Seconds left; zero or less once passed."""
        return self.at - time.monotonic()


@dataclass
class ChunkOutcome:
    """The result of one chunk, or the error that replaced it."""

    payload: dict[str, Any]
    result: dict[str, Any] | None = None
    error: str | None = None


class ChunkRunner(ABC):
    """Runs chunk payloads (``common.jobspec``) and returns their results."""

    mode: str = "runner"

    def run_many(
        self,
        payloads: Sequence[dict[str, Any]],
        *,
        timeout: float,
        urgent: bool = False,
    ) -> list[ChunkOutcome]:
        """One outcome per payload, in order, within ``timeout`` seconds.

        ``urgent`` work (a click) goes ahead of other interactive work. A chunk
        that fails or misses the deadline gets ``error``; the others are kept.
        """
        deadline = Deadline(timeout, time.monotonic() + timeout)
        outcomes = [ChunkOutcome(payload=dict(p)) for p in payloads]
        if outcomes:  # nothing to run: do not wait for a loading model
            self._run(outcomes, deadline, urgent)
        return outcomes

    @abstractmethod
    def _run(
        self, outcomes: list[ChunkOutcome], deadline: Deadline, urgent: bool
    ) -> None:
        """Set each outcome's ``result`` or ``error`` before ``deadline``."""

    @abstractmethod
    def status(self) -> dict[str, Any]:
        """``{"mode", "queue_up", "workers", "model", ...}`` for ``/health``; fast.

        ``workers`` counts those serving the interactive queue (what /predict
        needs); ``model["state"]`` is ``ready``, ``loading``, ``failed`` (with
        ``reason``) or, through Redis, ``no_workers``."""

    def start(self) -> None:
        """Begin loading the model in the background, where this runner loads it."""

    def close(self) -> None:  # pragma: no cover - nothing to release by default
        """Release connections."""


class RQRunner(ChunkRunner):
    """Chunks go through Redis to ``rexlabel worker`` processes."""

    mode = "redis"

    def __init__(
        self,
        connection: Any,
        *,
        health_connection: Any = None,
        job_timeout: int = JOB_TIMEOUT_S,
        function: str = RUN_CHUNK,
    ) -> None:
        self.dispatcher = Dispatcher(connection, QUEUES, function)
        self.health_connection = health_connection or connection
        self.job_timeout = job_timeout

    @property
    def connection(self) -> Any:
        """The queue's Redis client (its timeouts cover :meth:`wait`'s reads)."""
        return self.dispatcher.connection

    @property
    def function(self) -> str:
        """Dotted path of the job function the chunks run."""
        return self.dispatcher.function

    @property
    def queues(self) -> dict[str, Any]:
        """The RQ queues by name, :data:`common.queues.QUEUES`."""
        return self.dispatcher.queues

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RQRunner:
        """Clients with timeouts: the queue's covers :meth:`wait`'s blocking reads."""
        return cls(
            redis_connection(url, purpose="queue", blocking=WAIT_SLICE_S),
            health_connection=redis_connection(
                url, purpose="health check", timeout=HEALTH_TIMEOUT_S
            ),
            **kwargs,
        )

    def enqueue(
        self,
        payload: dict[str, Any],
        *,
        queue: str = QUEUE_INTERACTIVE,
        urgent: bool = False,
    ) -> Any:
        """Put one chunk on ``queue``; returns the RQ job."""
        return self.dispatcher.enqueue(
            queue,
            payload,
            job_id=f"rexlabel-{uuid.uuid4().hex}",
            timeout_s=self.job_timeout,
            result_ttl_s=RESULT_TTL_S,
            failure_ttl_s=FAILURE_TTL_S,
            at_front=urgent,
            description=f"{self.function} ({len(payload.get('images') or [])} images)",
        )

    def wait(self, job: Any, deadline: float) -> dict[str, Any]:
        """The chunk's result; DeadlineExceeded / JobFailed otherwise.

        ``deadline`` is a ``time.monotonic()`` value. Reads RQ's result stream
        (:meth:`Dispatcher.results_after`), so a result is seen the moment it is
        written.
        """
        from rq.exceptions import InvalidJobOperation
        from rq.job import JobStatus
        from rq.results import Result

        last_id = "0-0"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"job {job.id} did not finish in time")
            results = self.dispatcher.results_after(
                job.id, last_id, min(remaining, WAIT_SLICE_S)
            )
            for last_id, result in results:
                if result.type is Result.Type.SUCCESSFUL:
                    if not isinstance(result.return_value, dict):
                        kind = type(result.return_value).__name__
                        raise JobFailed(f"job {job.id} returned {kind}, not a result")
                    return result.return_value
                if result.type in (
                    Result.Type.FAILED,
                    Result.Type.STOPPED,
                    Result.Type.MAX_RETRIES_EXCEEDED,
                ):
                    raise JobFailed(failure_reason(result.exc_string, NO_REASON))
                # RETRIED: the job runs again; keep waiting for its next result.
            if results:
                continue
            try:
                status = job.get_status(refresh=True)
            except InvalidJobOperation:
                raise JobFailed(f"job {job.id} vanished from Redis") from None
            if status in (JobStatus.CANCELED, JobStatus.STOPPED):
                raise JobFailed(f"job {job.id} was {status.value}")

    def cancel(self, job: Any) -> None:
        """Take a job that has not started off its queue (best effort)."""
        try:
            from rq.job import JobStatus

            if job.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.DEFERRED):
                job.cancel()
        except Exception:  # the job may have started or vanished meanwhile
            log.debug("could not cancel job %s", job.id, exc_info=True)

    def _run(
        self, outcomes: list[ChunkOutcome], deadline: Deadline, urgent: bool
    ) -> None:
        jobs: list[Any] = []
        for outcome in outcomes:  # all first, so workers run them side by side
            try:
                jobs.append((outcome, self.enqueue(outcome.payload, urgent=urgent)))
            except Exception as exc:  # Redis down
                outcome.error = f"could not enqueue the job: {exc}"
        for outcome, job in jobs:
            try:
                outcome.result = self.wait(job, deadline.at)
            except DeadlineExceeded:
                outcome.error = (
                    f"no worker finished the job within {deadline.timeout:.0f} s "
                    "(are workers running? see /health)"
                )
                self.cancel(job)
            except JobFailed as exc:
                outcome.error = f"the worker failed: {exc}"
            except Exception as exc:  # Redis went away while waiting
                outcome.error = f"lost the job while waiting: {exc}"

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "queue_up": False, "workers": 0}
        try:
            self.health_connection.ping()
            out["queue_up"] = True
            conn = self.health_connection
            per_queue = {name: self.dispatcher.worker_count(name) for name in QUEUES}
            out["workers"] = per_queue[QUEUE_INTERACTIVE]
            out["workers_per_queue"] = per_queue
            out["queued"] = {
                name: conn.llen(queue.key) for name, queue in self.queues.items()
            }
            out["model"] = summarize_workers(out["workers"], read_states(conn))
        except Exception as exc:
            out["error"] = f"Redis: {exc}"
        return out

    def close(self) -> None:
        for connection in {
            id(c): c for c in (self.connection, self.health_connection)
        }.values():
            try:
                connection.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass


class InProcessRunner(ChunkRunner):
    """No Redis: run the job function here, one chunk at a time.

    The model loads in the background (:class:`common.model_state.ModelLoader`
    calling ``load``, by default ``worker.jobs.load_runtime`` for the real job
    function and nothing for others): :meth:`start` begins it (``create_app``
    calls it at start-up), else the first ``status()`` or ``run_many()`` does.
    A request waits for the model, and then for its turn on it, only as long as
    its deadline allows; ``worker.jobs`` (and torch) are imported by the load,
    never by this module.
    """

    mode = "in-process"

    def __init__(
        self,
        function: str = RUN_CHUNK,
        load: str | Callable[[], Any] | object | None = DEFAULT_LOAD,
    ) -> None:
        self.function = function
        if load is DEFAULT_LOAD:
            load = LOAD_RUNTIME if function == RUN_CHUNK else None
        self.loader = ModelLoader(_resolve(load)) if load is not None else None
        self._lock = threading.RLock()
        """Serialises chunks when the model brings no lock of its own."""

    def job_function(self) -> Any:
        return _resolve(self.function)

    def start(self) -> None:
        """Begin loading the model in the background (no-op when loading/loaded)."""
        if self.loader is not None:
            self.loader.start()

    def _run(
        self, outcomes: list[ChunkOutcome], deadline: Deadline, urgent: bool
    ) -> None:
        timeout = deadline.timeout
        try:
            model = self.loader.wait(timeout) if self.loader is not None else None
        except ModelNotReady as exc:
            for outcome in outcomes:
                outcome.error = str(exc)
            return
        # The runtime's own lock (worker.jobs.WorkerRuntime, re-entrant) also
        # guards in-process bulk jobs; waiting on it is what the deadline bounds.
        lock = getattr(model, "lock", None) or self._lock
        run_chunk = self.job_function()
        for outcome in outcomes:
            remaining = deadline.remaining()
            if remaining <= 0:
                outcome.error = f"not started: the {timeout:.0f} s deadline passed"
                continue
            if not lock.acquire(timeout=remaining):
                outcome.error = (
                    f"model busy: deadline passed ({timeout:.0f} s) while other "
                    "requests used the model"
                )
                continue
            try:
                outcome.result = run_chunk(outcome.payload)
            except Exception as exc:
                log.warning("in-process chunk failed", exc_info=True)
                outcome.error = f"the worker failed: {type(exc).__name__}: {exc}"
            finally:
                lock.release()

    def status(self) -> dict[str, Any]:
        """Also ``model``: the load's state (``common.model_state.ModelState``)."""
        out: dict[str, Any] = {"mode": self.mode, "queue_up": True, "workers": 1}
        if self.loader is None:
            out["model"] = {"state": READY}
        else:
            self.loader.start()  # retries a failed load once LOAD_RETRY_AFTER_S passed
            out["model"] = self.loader.state().to_dict()
        return out


def _resolve(target: str | Callable[[], Any]) -> Any:
    """``"package.module.name"`` -> that object; a callable is returned as is."""
    if callable(target):
        return target
    module, name = target.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def in_process_problem(redis_url: str, engine: str) -> str | None:
    """Why this process cannot run chunks itself, or None.

    Without ``redis_url`` the model runs here, so ``engine`` needs its packages
    installed; the backend image has none of torch's, and must get REDIS_URL.
    """
    if redis_url:
        return None
    # The inline path: only a backend that runs the model itself asks the
    # engine registry (which finds packages without importing them).
    from worker.engines.registry import ENGINE_INSTALL_HINT, missing_packages

    missing = missing_packages(engine)
    if not missing:
        return None
    return (
        f"REDIS_URL is empty, so the model would run in this process, but "
        f"REXLABEL_ENGINE={engine} needs {' and '.join(missing)}, which "
        f"{'is' if len(missing) == 1 else 'are'} not installed here: set REDIS_URL "
        f"and run `rexlabel worker` where the model runs (the backend image "
        f"works so), or install the engine here ({ENGINE_INSTALL_HINT[engine]})"
    )


def create_runner(redis_url: str = "", engine: str | None = None) -> ChunkRunner:
    """RQ when ``redis_url`` is set, else in-process; then ``engine`` (default:
    REXLABEL_ENGINE) must be installed here, or SettingsError says what to do."""
    if redis_url:
        return RQRunner.from_url(redis_url)
    problem = in_process_problem(redis_url, engine or settings.get("REXLABEL_ENGINE"))
    if problem:
        raise settings.SettingsError(problem)
    return InProcessRunner()
