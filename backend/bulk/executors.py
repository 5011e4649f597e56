"""Run chunks: on RQ workers (``rexlabel:bulk``) or in this process.

Both take ``(chunk index, payload)`` pairs in order and call back with each
chunk's result (``worker.jobs.run_chunk``'s JSON) or the reason it failed, in
completion order. Neither writes anything: the caller writes, then records.

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
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from common.queues import QUEUE_BULK, RUN_CHUNK

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

ChunkCallback = Callable[[int, dict[str, Any], dict[str, Any] | None, str | None], None]
"""``(chunk index, payload, result or None, error or None)``."""


def rq_job_id(job_id: str, chunk: int, round_: int = 0) -> str:
    """The RQ job id of a chunk: deterministic, RQ-safe characters only."""
    suffix = f"-r{round_}" if round_ else ""
    return f"rexlabel-{job_id}-{chunk:06d}{suffix}"


def delete_job(job: Any) -> None:
    """``job.delete()``, first dropping executions whose record has expired.

    RQ 3.0 keeps an execution in the job's execution registry 60 s longer than
    the execution itself lives; deleting a job whose worker died within that
    minute raises "Execution ... not found in Redis". Those entries are stale
    (the worker is gone), so they are removed first. A job that vanished
    meanwhile (Redis emptied) is not an error.
    """
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.executions import Execution, ExecutionRegistry
    from rq.results import Result

    registry = ExecutionRegistry(job_id=job.id, connection=job.connection)
    for raw in job.connection.zrange(registry.key, 0, -1):
        execution_id = raw.decode() if isinstance(raw, bytes) else raw
        execution = Execution(id=execution_id, job_id=job.id, connection=job.connection)
        if not job.connection.exists(execution.key):
            job.connection.zrem(registry.key, execution_id)
    try:
        job.delete()
    except (InvalidJobOperation, NoSuchJobError, ValueError):
        # gone meanwhile (Redis emptied, another process deleted it): drop the rest
        job.connection.delete(job.key, Result.get_key(job.id))


def _failure_reason(exc_string: str | None) -> str:
    """The last line of a traceback (the exception), or a generic reason."""
    lines = [line for line in (exc_string or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "chunk failed on the worker"


class InlineExecutor:
    """Runs chunks one after the other in this process (``--inline``, no Redis)."""

    def __init__(
        self, run_chunk: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    ):
        self._run_chunk = run_chunk

    def run(
        self,
        chunks: Iterable[tuple[int, dict[str, Any]]],
        on_result: ChunkCallback,
        should_stop: Callable[[], bool],
        *,
        job_id: str = "",
        round_: int = 0,
    ) -> bool:
        """Returns False when stopped before every chunk ran."""
        run_chunk = self._run_chunk
        if run_chunk is None:
            from worker.jobs import run_chunk
        for index, payload in chunks:
            if should_stop():
                return False
            try:
                result = run_chunk(payload)
            except Exception as exc:  # the chunk fails, the job goes on
                log.exception("chunk %s failed", index)
                on_result(index, payload, None, f"{type(exc).__name__}: {exc}")
            else:
                on_result(index, payload, result, None)
        return True


class RQExecutor:
    """Runs chunks on RQ workers listening on ``queue_name``."""

    def __init__(
        self,
        connection: Any,
        *,
        queue_name: str = QUEUE_BULK,
        retries: int = CHUNK_RETRIES,
        timeout_s: int = CHUNK_TIMEOUT_S,
        result_ttl_s: int = RESULT_TTL_S,
        poll_interval_s: float = POLL_INTERVAL_S,
        housekeeping_interval_s: float = HOUSEKEEPING_INTERVAL_S,
    ) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        self.connection = connection
        self.queue = Queue(queue_name, connection=connection, serializer=JSONSerializer)
        self.retries = retries
        self.timeout_s = timeout_s
        self.result_ttl_s = result_ttl_s
        self.poll_interval_s = poll_interval_s
        self.housekeeping_interval_s = housekeeping_interval_s
        self._window = MIN_IN_FLIGHT
        self._last_housekeeping = 0.0

    # One chunk -------------------------------------------------------------------
    def _fetch(self, rq_id: str) -> Any:
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            return Job.fetch(
                rq_id, connection=self.connection, serializer=self.queue.serializer
            )
        except NoSuchJobError:
            return None

    def submit(self, rq_id: str, index: int, payload: dict[str, Any]) -> None:
        """Enqueue the chunk unless a live or finished copy of it exists."""
        from rq import Retry
        from rq.job import JobStatus

        existing = self._fetch(rq_id)
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
        self.queue.enqueue(
            RUN_CHUNK,
            payload,
            job_id=rq_id,
            retry=Retry(max=self.retries) if self.retries else None,
            job_timeout=self.timeout_s,
            result_ttl=self.result_ttl_s,
            failure_ttl=self.result_ttl_s,
            description=f"{payload.get('job', '')} chunk {index}",
        )

    # Housekeeping ------------------------------------------------------------------
    def housekeeping(self, force: bool = False) -> None:
        """Re-enqueue abandoned chunks (dead workers) and size the window."""
        now = time.monotonic()
        if not force and now - self._last_housekeeping < self.housekeeping_interval_s:
            return
        self._last_housekeeping = now
        from rq import Worker

        from common.rq_jobs import clean_queue

        clean_queue(self.queue)
        workers = Worker.count(connection=self.connection, queue=self.queue)
        self._window = max(MIN_IN_FLIGHT, IN_FLIGHT_PER_WORKER * workers)

    # The loop ------------------------------------------------------------------------
    def run(
        self,
        chunks: Iterable[tuple[int, dict[str, Any]]],
        on_result: ChunkCallback,
        should_stop: Callable[[], bool],
        *,
        job_id: str = "",
        round_: int = 0,
    ) -> bool:
        """Keep a window of chunks in flight until all are back.

        Returns False when stopped (cancel) before every chunk came back;
        chunks still queued are then removed from the queue.
        """
        import redis
        from rq.exceptions import InvalidJobOperation, NoSuchJobError

        pending: Iterator[tuple[int, dict[str, Any]]] = iter(chunks)
        exhausted = False
        in_flight: dict[str, tuple[int, dict[str, Any]]] = {}
        while True:
            try:
                if should_stop():
                    self._withdraw(in_flight)
                    return False
                self.housekeeping()
                while not exhausted and len(in_flight) < self._window:
                    item = next(pending, None)
                    if item is None:
                        exhausted = True
                        break
                    index, payload = item
                    rq_id = rq_job_id(
                        job_id or str(payload.get("job", "")), index, round_
                    )
                    self.submit(rq_id, index, payload)
                    in_flight[rq_id] = (index, payload)
                if exhausted and not in_flight:
                    return True
                if not self._collect(in_flight, on_result):
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
        from rq.job import Job, JobStatus

        ids = list(in_flight)
        jobs = Job.fetch_many(
            ids, connection=self.connection, serializer=self.queue.serializer
        )
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
                reason = _failure_reason(getattr(latest, "exc_string", None))
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
        from rq.job import Job, JobStatus

        ids = list(in_flight)
        for job in Job.fetch_many(
            ids, connection=self.connection, serializer=self.queue.serializer
        ):
            if job is not None and job.get_status(refresh=False) in (
                JobStatus.QUEUED,
                JobStatus.SCHEDULED,
                JobStatus.DEFERRED,
            ):
                delete_job(job)
        in_flight.clear()
