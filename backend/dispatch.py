"""Chunks on RQ: enqueue a payload, read its results back, delete the job.

The one place the backend talks to RQ about a chunk. A chunk is a
``common.jobspec`` payload enqueued by dotted path (:data:`RUN_CHUNK` unless a
test names another function) with RQ's JSON serializer -- never pickle: a Redis
others can reach must not mean code execution on the GPU boxes. Two policies
sit on top:

- interactive, ``backend.queue.RQRunner``: a request enqueues its chunks and
  waits for their results until a deadline;
- bulk, ``backend.bulk.executors.RQExecutor``: a window of chunks stays in
  flight, each re-run on another worker when its worker dies.

RQ is imported when a :class:`Dispatcher` is built, not with this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from common.queues import RUN_CHUNK


class Dispatcher:
    """rexlabel's RQ queues ``queue_names`` on ``connection``, JSON payloads only."""

    def __init__(
        self, connection: Any, queue_names: Iterable[str], function: str = RUN_CHUNK
    ) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        self.connection = connection
        self.function = function
        """Dotted path of the job function every chunk runs."""
        self.serializer = JSONSerializer
        self.queues = {
            name: Queue(name, connection=connection, serializer=JSONSerializer)
            for name in queue_names
        }

    def enqueue(
        self,
        queue: str,
        payload: dict[str, Any],
        *,
        job_id: str,
        timeout_s: int,
        result_ttl_s: int,
        failure_ttl_s: int,
        description: str,
        at_front: bool = False,
        retry: Any = None,
    ) -> Any:
        """Put ``payload`` on ``queue`` as a job of :attr:`function`; the RQ job.

        RQ stops the job after ``timeout_s``; its result stays ``result_ttl_s``,
        its traceback ``failure_ttl_s`` seconds. ``retry`` is RQ's ``Retry``.
        """
        return self.queues[queue].enqueue(
            self.function,
            payload,
            job_id=job_id,
            job_timeout=timeout_s,
            result_ttl=result_ttl_s,
            failure_ttl=failure_ttl_s,
            at_front=at_front,
            retry=retry,
            description=description,
        )

    def fetch(self, job_id: str) -> Any | None:
        """The RQ job ``job_id``, or None when Redis has none."""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            return Job.fetch(
                job_id, connection=self.connection, serializer=self.serializer
            )
        except NoSuchJobError:
            return None

    def fetch_many(self, job_ids: list[str]) -> list[Any | None]:
        """The RQ jobs ``job_ids`` in order, None for each that Redis has not."""
        from rq.job import Job

        return Job.fetch_many(
            job_ids, connection=self.connection, serializer=self.serializer
        )

    def results_after(
        self, job_id: str, after: Any, block_s: float
    ) -> list[tuple[Any, Any]]:
        """``(entry id, rq.results.Result)`` for each result of ``job_id`` written
        after stream entry ``after`` (``"0-0"``: all), waiting up to ``block_s``
        seconds (at least a millisecond) for the first: a blocking XREAD of RQ's
        result stream, so a result is seen the moment it is written."""
        from rq.results import Result

        response = self.connection.xread(
            {Result.get_key(job_id): after}, block=max(1, int(block_s * 1000))
        )
        return [
            (
                entry_id,
                Result.restore(
                    job_id,
                    entry_id.decode(),
                    fields,
                    connection=self.connection,
                    serializer=self.serializer,
                ),
            )
            for entry_id, fields in (response[0][1] if response else [])
        ]

    def worker_count(self, queue: str) -> int:
        """Workers registered on ``queue`` (counted on that queue's connection)."""
        from rq import Worker

        return Worker.count(connection=self.connection, queue=self.queues[queue])


def failure_reason(exc_string: str | None, fallback: str) -> str:
    """The last line of a failed job's traceback (the exception), or ``fallback``."""
    lines = [line for line in (exc_string or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else fallback


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
