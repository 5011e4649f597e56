"""backend.dispatch on a real Redis: what both chunk policies share (the
interactive one is in test_queue.py, the bulk one in tests/backend/bulk/)."""

from __future__ import annotations

import json
import zlib

import pytest

from backend.dispatch import Dispatcher, delete_job, failure_reason
from tests.backend.redis_helpers import redis_or_skip

ECHO = "tests.backend.jobfuncs.echo_chunk"
QUEUE = "rexlabel:dispatch-test"
"""A queue no worker listens on: jobs stay where the test put them."""


@pytest.fixture
def dispatcher():
    return Dispatcher(redis_or_skip(), [QUEUE], ECHO)


def _enqueue(dispatcher: Dispatcher, job_id: str, payload: dict):
    return dispatcher.enqueue(
        QUEUE,
        payload,
        job_id=job_id,
        timeout_s=60,
        result_ttl_s=60,
        failure_ttl_s=60,
        description="test chunk",
    )


def test_the_failure_reason_is_the_tracebacks_last_line() -> None:
    traceback = "Traceback (most recent call last):\n  ...\nValueError: boom\n\n"
    assert failure_reason(traceback, "no reason") == "ValueError: boom"
    assert failure_reason(None, "no reason") == "no reason"
    assert failure_reason(" \n\n", "no reason") == "no reason"


def test_a_chunk_is_stored_as_json_naming_the_job_function(dispatcher) -> None:
    payload = {"images": [{"id": "a", "image": "a.jpg"}], "step": 3}
    job = _enqueue(dispatcher, "rexlabel-dispatch-json", payload)
    stored = json.loads(zlib.decompress(dispatcher.connection.hget(job.key, "data")))
    assert stored == [ECHO, None, [payload], {}]
    assert list(dispatcher.fetch(job.id).args) == [payload]
    assert dispatcher.fetch_many([job.id, "rexlabel-none"])[1] is None
    assert dispatcher.fetch("rexlabel-none") is None
    assert dispatcher.results_after(job.id, "0-0", 0.01) == []


def test_deleting_a_job_drops_expired_executions_and_tolerates_its_absence(
    dispatcher,
) -> None:
    from rq.executions import ExecutionRegistry

    job = _enqueue(dispatcher, "rexlabel-dispatch-delete", {"images": []})
    # What a worker killed within the last minute leaves: an execution listed
    # in the job's registry whose own record has expired.
    registry = ExecutionRegistry(job_id=job.id, connection=dispatcher.connection)
    dispatcher.connection.zadd(registry.key, {"expired-execution": 9e12})
    delete_job(job)
    assert dispatcher.fetch(job.id) is None
    assert not dispatcher.connection.exists(registry.key)
    delete_job(job)  # gone meanwhile: not an error
