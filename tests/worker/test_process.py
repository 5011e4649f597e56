"""``rexlabel worker`` (worker.process) as a real process on a real Redis.

Queue priority, heartbeats that keep a long chunk alive, and a warm shutdown
on SIGTERM. (A worker killed with ``kill -9`` is in test_jobs.py.)
"""

from __future__ import annotations

import signal
import time

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.worker.rq_helpers import (
    empty_db,
    redis_or_skip,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)
from worker.jobs import QUEUE_BULK, QUEUE_INTERACTIVE, QUEUES
from worker.process import (
    CLEANUP_LOCK_PREFIX,
    RexWorker,
    build_worker,
    clean_queue,
)

NOTE = "tests.worker.rq_jobfuncs.note"

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_conn():
    connection = redis_or_skip()
    yield connection
    empty_db(connection)


def _queue(connection: Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def test_build_worker_is_a_json_non_forking_worker(redis_conn):
    worker = build_worker(redis_conn, heartbeat_interval=1, execution_ttl=4)
    assert isinstance(worker, RexWorker)
    assert [q.name for q in worker.queues] == list(QUEUES)
    assert (
        worker.serializer is JSONSerializer
        or "JSON" in type(worker.serializer).__name__
    )
    assert not hasattr(worker, "fork_work_horse")  # runs jobs in its own process
    with pytest.raises(ValueError, match="execution_ttl"):
        build_worker(redis_conn, heartbeat_interval=5, execution_ttl=5)


def test_cleanup_is_skipped_while_another_process_holds_the_lock(redis_conn):
    queue = _queue(redis_conn, QUEUE_BULK)
    redis_conn.set(CLEANUP_LOCK_PREFIX + QUEUE_BULK, 1, ex=5)
    assert clean_queue(queue) is False
    redis_conn.delete(CLEANUP_LOCK_PREFIX + QUEUE_BULK)
    assert clean_queue(queue) is True
    assert not redis_conn.exists(CLEANUP_LOCK_PREFIX + QUEUE_BULK)


def test_interactive_queue_is_served_before_bulk(redis_conn, tiny_model_dir, tmp_path):
    bulk, interactive = (
        _queue(redis_conn, QUEUE_BULK),
        _queue(redis_conn, QUEUE_INTERACTIVE),
    )
    for name in ("bulk-1", "bulk-2"):
        bulk.enqueue(NOTE, {"list": "order", "name": name})
    interactive.enqueue(NOTE, {"list": "order", "name": "click"})
    process = start_worker(
        redis_conn,
        worker_env(tiny_model_dir),
        "--burst",
        name="prio",
        log_path=tmp_path / "worker.log",
    )
    assert process.wait(timeout=60) == 0
    order = [x.decode() for x in redis_conn.lrange("order", 0, -1)]
    assert order == ["click", "bulk-1", "bulk-2"]


def test_heartbeats_keep_a_long_chunk_alive(redis_conn, tiny_model_dir, tmp_path):
    """A chunk running 4x longer than the execution TTL is not taken for dead,
    even with registry clean-ups running all the time."""
    queue = _queue(redis_conn, QUEUE_BULK)
    job = queue.enqueue(
        NOTE,
        {"list": "runs", "name": "long", "sleep": 8},
        retry=Retry(max=2),
        job_timeout=60,
    )
    process = start_worker(
        redis_conn,
        worker_env(tiny_model_dir),
        "--execution-ttl",
        "2",
        "--heartbeat-interval",
        "0.5",
        "--maintenance-interval",
        "1",
        "--worker-ttl",
        "16",
        name="beats",
        log_path=tmp_path / "worker.log",
    )
    try:
        wait_for(lambda: job.get_status() == JobStatus.STARTED, 30, "the job to start")
        while job.get_status() == JobStatus.STARTED:
            clean_queue(queue)  # what a waiting bulk job does every few seconds
            time.sleep(0.25)
        assert job.get_status() == JobStatus.FINISHED
        assert (
            Job.fetch(
                job.id, connection=redis_conn, serializer=JSONSerializer
            ).retries_left
            == 2
        )  # never re-enqueued
        assert redis_conn.lrange("runs", 0, -1) == [b"long"]
    finally:
        stop_worker(process)


def test_sigterm_finishes_the_running_chunk_then_exits(
    redis_conn, tiny_model_dir, tmp_path
):
    queue = _queue(redis_conn, QUEUE_BULK)
    running = queue.enqueue(NOTE, {"list": "runs", "name": "first", "sleep": 3})
    waiting = queue.enqueue(NOTE, {"list": "runs", "name": "second"})
    process = start_worker(
        redis_conn,
        worker_env(tiny_model_dir),
        name="term",
        log_path=tmp_path / "worker.log",
    )
    wait_for(lambda: running.get_status() == JobStatus.STARTED, 30, "the job to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert running.get_status() == JobStatus.FINISHED
    assert running.return_value()["name"] == "first"
    assert waiting.get_status() == JobStatus.QUEUED  # left for another worker
    assert redis_conn.lrange("runs", 0, -1) == [b"first"]


def _run_worker_command(env: dict[str, str]):
    import subprocess
    import sys

    from tests.worker.rq_helpers import REPO_ROOT

    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "worker"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_worker_needs_redis(tiny_model_dir, tmp_path):
    env = worker_env(tiny_model_dir)
    env["REDIS_URL"] = ""
    done = _run_worker_command(env)
    assert done.returncode == 2
    assert "REDIS_URL" in done.stderr


def test_unreachable_redis_is_one_clear_line_with_the_password_hidden(tiny_model_dir):
    env = worker_env(tiny_model_dir)
    env["REDIS_URL"] = "redis://:hunter2-secret@127.0.0.1:1/0"  # nothing listens
    done = _run_worker_command(env)
    assert done.returncode == 1, done.stderr
    assert "cannot reach Redis at" in done.stderr
    assert "127.0.0.1:1" in done.stderr
    assert "hunter2-secret" not in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_setting_stops_the_worker_before_the_model_loads(tiny_model_dir):
    env = worker_env(tiny_model_dir)
    env["REXLABEL_MAX_INSTANCES"] = "lots"  # read only once a chunk runs
    env["REXLABEL_MODEL"] = "/nonexistent/model"  # a load would fail differently
    done = _run_worker_command(env)
    assert done.returncode == 2, done.stderr
    assert "bad configuration" in done.stderr
    assert "REXLABEL_MAX_INSTANCES='lots'" in done.stderr
    assert "Traceback" not in done.stderr
