"""Run chunks: on RQ workers (``rexlabel:bulk``) or in this process.

Both take ``(chunk index, payload)`` pairs in order and call back with each
chunk's result (``worker.jobs.run_chunk``'s JSON) or the reason it failed, in
completion order (:meth:`ChunkExecutor.run`). Neither writes anything: the
caller writes, then records. The RQ one is the bulk policy on top of
:mod:`backend.dispatch`: streamed, with retries.

RQ chunks get deterministic ids (``rexlabel-<job id>-<chunk>``), so a second
run of the same job finds chunks that are still queued, running, or finished
with their results waiting in Redis, and adopts them instead of enqueuing them
twice. A chunk whose worker died (``kill -9``) is re-enqueued by RQ's abandoned
job handling (``Retry``); this module triggers that clean-up itself every few
seconds so recovery never waits for a worker's maintenance.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from backend.dispatch import Dispatcher, delete_job, failure_reason
from common.queues import QUEUE_BULK

log = logging.getLogger(__name__)

CHUNK_RETRIES = 2
"""Extra runs of a chunk whose worker died or raised: a second chance on
another worker; a chunk failing three times is reported, not retried forever."""
CHUNK_TIMEOUT_S = 3600
"""RQ kills a chunk running longer than an hour: dozens of dense images at
4,096 tokens each on a slow GPU stay well below it."""
RESULT_TTL_S = 24 * 3600
"""Finished chunks keep their results in Redis a day, so a crashed CLI rerun
the next morning still collects them (the CLI deletes each once written)."""
MIN_IN_FLIGHT = 4
"""Chunks kept queued or running at least: workers never wait for the CLI."""
IN_FLIGHT_PER_WORKER = 2
"""Plus two per live worker: one running, one ready to start."""
POLL_INTERVAL_S = 0.05
"""Pause between status polls when nothing finished: 20 cheap pipelines a second."""
HOUSEKEEPING_INTERVAL_S = 2.0
"""How often abandoned chunks are re-enqueued and live workers counted."""
REDIS_RETRY_S = 1.0
"""Pause before trying Redis again after a connection error (Redis restarting)."""
NO_REASON = "chunk failed on the worker"
"""A failed chunk's reason when its traceback is empty."""

ChunkCallback = Callable[[int, dict[str, Any], dict[str, Any] | None, str | None], None]
"""``(chunk index, payload, result or None, error or None)``."""


def rq_job_id(job_id: str, chunk: int, round_: int = 0) -> str:
    """The RQ job id of a chunk: deterministic, RQ-safe characters only."""
    suffix = f"-r{round_}" if round_ else ""
    return f"rexlabel-{job_id}-{chunk:06d}{suffix}"


@dataclass(frozen=True)
class ChunkRun:
    """One :meth:`ChunkExecutor.run` call."""

    pending: Iterator[tuple[int, dict[str, Any]]]
    """The ``(chunk index, payload)`` pairs not handed over yet, in order."""
    on_result: ChunkCallback
    should_stop: Callable[[], bool]
    job_id: str
    round_: int

    def rq_id(self, index: int, payload: dict[str, Any]) -> str:
        """The chunk's RQ job id (:func:`rq_job_id`); ``job_id`` or the payload's."""
        job_id = self.job_id or str(payload.get("job", ""))
        return rq_job_id(job_id, index, self.round_)


class ChunkExecutor(ABC):
    """Runs chunks and hands each one's outcome over as it comes back."""

    def run(
        self,
        chunks: Iterable[tuple[int, dict[str, Any]]],
        on_result: ChunkCallback,
        should_stop: Callable[[], bool],
        *,
        job_id: str = "",
        round_: int = 0,
    ) -> bool:
        """Hand each chunk's outcome to ``on_result`` as it comes back: True once
        all are back, False when ``should_stop()`` said so first. ``job_id``
        (default: each payload's ``job``) and ``round_`` name the RQ jobs
        (:func:`rq_job_id`)."""
        return self._run(ChunkRun(iter(chunks), on_result, should_stop, job_id, round_))

    @abstractmethod
    def _run(self, run: ChunkRun) -> bool:
        """Hand every chunk of ``run`` to ``run.on_result``; see :meth:`run`."""


class InlineExecutor(ChunkExecutor):
    """Runs chunks one after the other in this process (``--inline``, no Redis)."""

    def __init__(
        self, run_chunk: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ):
        self._run_chunk = run_chunk

    def _run(self, run: ChunkRun) -> bool:
        """Returns False when stopped before every chunk ran."""
        run_chunk = self._run_chunk
        if run_chunk is None:
            from worker.jobs import run_chunk
        for index, payload in run.pending:
            if run.should_stop():
                return False
            try:
                result = run_chunk(payload)
            except Exception as exc:  # the chunk fails, the job goes on
                log.exception("chunk %s failed", index)
                run.on_result(index, payload, None, f"{type(exc).__name__}: {exc}")
            else:
                run.on_result(index, payload, result, None)
        return True


class RQExecutor(ChunkExecutor):
    """Runs chunks on RQ workers listening on ``queue_name``: the bulk policy,
    tuned by the class attributes (the module's constants)."""

    retries: int = CHUNK_RETRIES
    timeout_s: int = CHUNK_TIMEOUT_S
    result_ttl_s: int = RESULT_TTL_S
    poll_interval_s: float = POLL_INTERVAL_S
    housekeeping_interval_s: float = HOUSEKEEPING_INTERVAL_S

    def __init__(self, connection: Any, *, queue_name: str = QUEUE_BULK) -> None:
        self.dispatcher = Dispatcher(connection, [queue_name])
        self.connection = connection
        self.queue = self.dispatcher.queues[queue_name]
        self._window = MIN_IN_FLIGHT
        self._last_housekeeping = 0.0

    # One chunk -------------------------------------------------------------------
    def submit(self, rq_id: str, index: int, payload: dict[str, Any]) -> None:
        """Enqueue the chunk unless a live or finished copy of it exists."""
        from rq import Retry
        from rq.job import JobStatus

        existing = self.dispatcher.fetch(rq_id)
        if existing is not None:
            status = existing.get_status(refresh=False)
            if status in (
                JobStatus.QUEUED,
                JobStatus.STARTED,
                JobStatus.SCHEDULED,
                JobStatus.DEFERRED,
                JobStatus.FINISHED,
            ):
                log.info("chunk %s: adopting RQ job %s (%s)", index, rq_id, status)
                return
            delete_job(existing)
        self.dispatcher.enqueue(
            self.queue.name,
            payload,
            job_id=rq_id,
            retry=Retry(max=self.retries) if self.retries else None,
            timeout_s=self.timeout_s,
            result_ttl_s=self.result_ttl_s,
            failure_ttl_s=self.result_ttl_s,
            description=f"{payload.get('job', '')} chunk {index}",
        )

    # Housekeeping ------------------------------------------------------------------
    def housekeeping(self, force: bool = False) -> None:
        """Re-enqueue abandoned chunks (dead workers) and size the window."""
        now = time.monotonic()
        if not force and now - self._last_housekeeping < self.housekeeping_interval_s:
            return
        self._last_housekeeping = now
        from common.rq_jobs import clean_queue

        clean_queue(self.queue)
        workers = self.dispatcher.worker_count(self.queue.name)
        self._window = max(MIN_IN_FLIGHT, IN_FLIGHT_PER_WORKER * workers)

    # The loop ------------------------------------------------------------------------
    def _run(self, run: ChunkRun) -> bool:
        """Keep a window of chunks in flight until all are back.

        Returns False when stopped (cancel) before every chunk came back;
        chunks still queued are then removed from the queue.
        """
        import redis
        from rq.exceptions import InvalidJobOperation, NoSuchJobError

        exhausted = False
        in_flight: dict[str, tuple[int, dict[str, Any]]] = {}
        while True:
            try:
                if run.should_stop():
                    self._withdraw(in_flight)
                    return False
                self.housekeeping()
                while not exhausted and len(in_flight) < self._window:
                    item = next(run.pending, None)
                    if item is None:
                        exhausted = True
                        break
                    index, payload = item
                    rq_id = run.rq_id(index, payload)
                    self.submit(rq_id, index, payload)
                    in_flight[rq_id] = (index, payload)
                if exhausted and not in_flight:
                    return True
                if not self._collect(in_flight, run.on_result):
                    time.sleep(self.poll_interval_s)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning(
                    "Redis unavailable (%s); retrying in %.0f s", exc, REDIS_RETRY_S
                )
                time.sleep(REDIS_RETRY_S)
            except (InvalidJobOperation, NoSuchJobError) as exc:
                # a job vanished between two reads (Redis restarted empty); the
                # next poll finds it missing and enqueues it again
                log.warning("RQ job changed under us (%s); polling again", exc)

    def _collect(
        self, in_flight: dict[str, tuple[int, dict[str, Any]]], on_result: ChunkCallback
    ) -> int:
        """Hand finished and failed chunks to ``on_result``; returns how many."""
        from rq.job import JobStatus

        ids = list(in_flight)
        jobs = self.dispatcher.fetch_many(ids)
        handled = 0
        for rq_id, job in zip(ids, jobs, strict=True):
            index, payload = in_flight[rq_id]
            if job is None:  # gone: Redis restarted empty, or someone deleted it
                log.warning(
                    "chunk %s: RQ job %s vanished; enqueuing it again", index, rq_id
                )
                self.submit(rq_id, index, payload)
                continue
            status = job.get_status(refresh=False)
            if status == JobStatus.FINISHED:
                result = job.return_value()
                if result is None:  # finished but its result expired
                    delete_job(job)
                    self.submit(rq_id, index, payload)
                    continue
                on_result(index, payload, result, None)
            elif status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
                latest = job.latest_result()
                reason = failure_reason(getattr(latest, "exc_string", None), NO_REASON)
                if status != JobStatus.FAILED:
                    reason = f"chunk {status.value}"
                on_result(index, payload, None, reason)
            else:
                continue
            delete_job(job)
            del in_flight[rq_id]
            handled += 1
        return handled

    def _withdraw(self, in_flight: dict[str, tuple[int, dict[str, Any]]]) -> None:
        """Take queued chunks off the queue (cancel); running ones finish and
        keep their results in Redis for a later resume."""
        from rq.job import JobStatus

        for job in self.dispatcher.fetch_many(list(in_flight)):
            if job is not None and job.get_status(refresh=False) in (
                JobStatus.QUEUED,
                JobStatus.SCHEDULED,
                JobStatus.DEFERRED,
            ):
                delete_job(job)
        in_flight.clear()
