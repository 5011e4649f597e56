"""``rexlabel worker`` (worker.process) as a real process on a real Redis.

Queue priority, heartbeats that keep a long chunk alive, and a warm shutdown
on SIGTERM. (A worker killed with ``kill -9`` is in test_jobs.py.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
from redis import Redis
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from common import redis_conn as redis_conn_module
from common.queues import QUEUE_BULK, QUEUE_INTERACTIVE, QUEUE_TRAIN, QUEUES
from common.rq_jobs import CLEANUP_LOCK_PREFIX, clean_queue
from tests.worker.note_worker import NOTE
from tests.worker.rq_helpers import (
    REPO_ROOT,
    empty_db,
    redis_or_skip,
    redis_url,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)
from worker.process import (
    PUBSUB_POLL_S,
    RexWorker,
    build_worker,
    worker_connection,
    worker_queues,
)

NOTE_WORKER = "tests.worker.note_worker"
"""``rexlabel worker`` that also runs NOTE jobs."""
BURST_EXIT_LIMIT_S = 45
"""A burst worker on the fake model starts and quits in seconds; RQ's command
listener kept it about 60 s after "done, quitting"."""

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
        entry=NOTE_WORKER,
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
        entry=NOTE_WORKER,
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
        entry=NOTE_WORKER,
        log_path=tmp_path / "worker.log",
    )
    wait_for(lambda: running.get_status() == JobStatus.STARTED, 30, "the job to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert running.get_status() == JobStatus.FINISHED
    assert running.return_value()["name"] == "first"
    assert waiting.get_status() == JobStatus.QUEUED  # left for another worker
    assert redis_conn.lrange("runs", 0, -1) == [b"first"]


def _run_worker_command(env: dict[str, str], *args: str):
    import subprocess
    import sys

    from tests.worker.rq_helpers import REPO_ROOT

    return subprocess.run(
        [sys.executable, "-m", "backend.cli", "worker", *args],
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


# --train: which queues, whether a model loads ------------------------------------
def test_train_alone_listens_to_the_train_queue_only_and_serves_nothing():
    assert worker_queues(None, train=False) == (list(QUEUES), True)
    assert worker_queues(None, train=True) == ([QUEUE_TRAIN], False)
    assert worker_queues("rexlabel:bulk", train=True) == (
        [QUEUE_BULK, QUEUE_TRAIN],
        True,
    )
    assert worker_queues(f"{QUEUE_TRAIN},{QUEUE_BULK}", train=True) == (
        [QUEUE_TRAIN, QUEUE_BULK],
        True,
    )
    assert worker_queues(QUEUE_TRAIN, train=True) == ([QUEUE_TRAIN], False)


def test_the_train_queue_without_train_is_a_usage_error(tiny_model_dir):
    env = worker_env(tiny_model_dir)
    done = _run_worker_command(env, "--queues", QUEUE_TRAIN)
    assert done.returncode == 2, done.stderr
    assert "add --train" in done.stderr


# Burst workers exit promptly; idle workers keep their Redis connection ---------
def _pubsub_threads() -> list[threading.Thread]:
    from redis.client import PubSubWorkerThread

    return [
        t
        for t in threading.enumerate()
        if isinstance(t, PubSubWorkerThread) and t.is_alive()
    ]


def test_a_burst_worker_starts_no_command_listener(redis_conn):
    """RQ's listener thread waited 60 s per poll, and shutdown joined it."""
    before = _pubsub_threads()
    worker = build_worker(redis_conn, [f"rexlabel-test:{uuid.uuid4().hex}"])
    assert worker.work(burst=True) is False  # empty queue: nothing ran
    assert worker.pubsub_thread is None
    assert _pubsub_threads() == before


def test_a_long_running_worker_polls_for_commands_briefly(redis_conn):
    worker = build_worker(redis_conn, [f"rexlabel-test:{uuid.uuid4().hex}"])
    worker.work(max_idle_time=1)  # subscribes, idles, quits, unsubscribes
    assert worker.pubsub_thread is not None
    assert worker.pubsub_thread.sleep_time == PUBSUB_POLL_S
    assert not worker.pubsub_thread.is_alive()


def test_burst_worker_on_an_empty_queue_exits_at_once(redis_conn):
    """Bounded well below RQ's 60 s listener poll (a bound, not a timing)."""
    from tests.security.conftest import MODEL_ID, FakeChat

    with FakeChat() as fake:
        env = worker_env(
            MODEL_ID, REXLABEL_ENGINE="openai", REXLABEL_OPENAI_URL=fake.api_url
        )
        done = subprocess.run(
            [sys.executable, "-m", "backend.cli", "worker", "--burst"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=BURST_EXIT_LIMIT_S,
        )
    assert done.returncode == 0, done.stderr


def test_an_idle_worker_outwaits_its_command_timeout(redis_conn, monkeypatch):
    """RQ blocks in BLMOVE for ``worker_ttl - 15`` s; the worker's socket
    timeout covers that even when the per-reply timeout is far shorter (RQ
    raises only the timeout of connections it opens later, not of this one)."""
    from rq.exceptions import DequeueTimeout

    monkeypatch.setattr(redis_conn_module, "COMMAND_TIMEOUT_S", 0.5)
    connection = worker_connection(redis_url(), worker_ttl=17)
    connection.ping()  # the pooled connection exists before RQ sees it, as in run()
    worker = build_worker(
        connection, [f"rexlabel-test:{uuid.uuid4().hex}"], worker_ttl=17
    )
    assert worker.dequeue_timeout > redis_conn_module.COMMAND_TIMEOUT_S
    with pytest.raises(DequeueTimeout):  # not redis' TimeoutError
        worker.queue_class.dequeue_any(
            worker.queues,
            worker.dequeue_timeout,
            connection=connection,
            serializer=worker.serializer,
        )
