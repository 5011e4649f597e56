"""Redis is not a way into the worker: only rexlabel's jobs run, Redis has a password.

Anyone who can write to Redis can put a job there with rq's own client. RQ
imports and calls whatever function (and callbacks) a job names; a rexlabel
worker must fail such jobs, in one log line, without importing anything they
name, and keep serving real chunks. A real ``rexlabel worker --burst`` (the
``openai`` engine on :class:`FakeChat`, no model) runs against a private
``redis-server --requirepass``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from redis import Redis
from rq import Callback, Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from backend.queue import RQRunner
from common.queues import QUEUE_BULK, QUEUE_INTERACTIVE, RUN_CHUNK
from common.rq_jobs import REFUSED_PREFIX
from tests.security.conftest import (
    BIN,
    FakeChat,
    Listener,
    clean_env,
    png_bytes,
    redis_server,
)

PASSWORD = "rq-test-5f1c0e9a7d3b"
"""The test Redis's password: it must never appear in a log or a reply."""
CANARY = "tests.security.rq_canary.hit"
"""A function whose module marks RQ_CANARY_PATH when imported."""
WORKER_RUN_TIMEOUT_S = 120
"""A burst worker on the fake model starts and empties its queue in seconds."""


@pytest.fixture
def redis_url(tmp_path):
    with redis_server(tmp_path, PASSWORD) as url:
        yield url


def _queue(url: str, name: str = QUEUE_BULK) -> Queue:
    return Queue(name, connection=Redis.from_url(url), serializer=JSONSerializer)


def _run_worker(url: str, tmp_path: Path, fake: FakeChat, **env: str):
    """``rexlabel worker --burst`` on ``url``; its exit code and log."""
    full_env = clean_env(
        REDIS_URL=url,
        REXLABEL_ENGINE="openai",
        REXLABEL_OPENAI_URL=fake.api_url,
        REXLABEL_WORKER_METRICS_PORT="0",
        LOCAL_FILES_DOCUMENT_ROOT=str(tmp_path),
        RQ_CANARY_PATH=str(tmp_path / "canary"),
        **env,
    )
    return subprocess.run(
        [str(BIN / "rexlabel"), "worker", "--burst"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=WORKER_RUN_TIMEOUT_S,
    )


def _chunk(tmp_path: Path) -> dict:
    """One image under the worker's LOCAL_FILES_DOCUMENT_ROOT (``tmp_path``)."""
    (tmp_path / "shape.png").write_bytes(png_bytes())
    image = "/data/local-files/?d=shape.png"
    call = {"task": "detection", "categories": ["shape"]}
    return {"images": [{"id": "im0", "image": image, "calls": [call]}]}


def test_jobs_naming_other_functions_or_callbacks_are_refused(redis_url, tmp_path):
    made = tmp_path / "made-by-rq"
    bulk, interactive = _queue(redis_url), _queue(redis_url, QUEUE_INTERACTIVE)
    with Listener() as hook, FakeChat() as fake:
        refused = {
            "os.makedirs": bulk.enqueue("os.makedirs", str(made)),
            CANARY: interactive.enqueue(CANARY),
            "on_success": bulk.enqueue(
                RUN_CHUNK, _chunk(tmp_path), on_success=Callback(CANARY)
            ),
            "on_failure": bulk.enqueue(
                RUN_CHUNK, {"images": "bad"}, on_failure=Callback(CANARY)
            ),
            "on_stopped": bulk.enqueue(
                RUN_CHUNK, _chunk(tmp_path), on_stopped=Callback(CANARY)
            ),
            "webhook": bulk.enqueue(
                RUN_CHUNK,
                {"images": "bad"},
                webhooks=[Webhook(hook.url + "/hook", "failed", method="POST")],
            ),
        }
        real = bulk.enqueue(RUN_CHUNK, _chunk(tmp_path))  # after them: still served
        done = _run_worker(redis_url, tmp_path, fake)
        assert done.returncode == 0, done.stderr
        assert hook.seen == [], "a refused job's webhook was sent"
    log = done.stdout + done.stderr
    assert not made.exists(), "os.makedirs ran"
    assert not (tmp_path / "canary").exists(), "a module named in a job was imported"
    refusals = [line for line in log.splitlines() if "refused job" in line]
    assert len(refusals) == len(refused), log
    for what, job in refused.items():
        assert job.get_status(refresh=True) == JobStatus.FAILED, what
        (line,) = [line for line in refusals if job.id in line]
        named = {"os.makedirs": "os.makedirs", "webhook": hook.url}.get(what, CANARY)
        assert repr(job.id) in line and named in line, line
        assert job.latest_result().exc_string.startswith(REFUSED_PREFIX)
    assert real.get_status(refresh=True) == JobStatus.FINISHED, log
    (image,) = real.return_value()["images"]
    assert image["error"] is None and image["calls"], image
    assert PASSWORD not in log


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # JSON can still carry an ``instance``: RQ would call the attribute of
        # that name on it instead of importing the function.
        (
            JSONSerializer.dumps([RUN_CHUNK, {"a": 1}, [{"images": []}], {}]),
            "bound to an instance",
        ),
        (b"\x00not json", "unreadable job payload"),
        (JSONSerializer.dumps([RUN_CHUNK, None]), "unreadable job payload"),
        (JSONSerializer.dumps([["os", "system"], None, [], {}]), "is not a rexlabel"),
    ],
)
def test_a_forged_payload_is_refused_and_the_worker_goes_on(
    redis_url, tmp_path, raw, reason
):
    queue = _queue(redis_url)
    job = queue.enqueue(RUN_CHUNK, {"images": []})
    queue.connection.hset(job.key, "data", raw)  # what a Redis writer can do
    real = queue.enqueue(RUN_CHUNK, {"images": []})
    with FakeChat() as fake:
        done = _run_worker(redis_url, tmp_path, fake)
    assert done.returncode == 0, done.stderr
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert reason in job.latest_result().exc_string
    assert real.get_status(refresh=True) == JobStatus.FINISHED, done.stderr


def test_worker_and_queue_need_the_redis_password(redis_url, tmp_path):
    no_password = redis_url.replace(f":{PASSWORD}@", "")
    wrong = redis_url.replace(PASSWORD, "not-the-password")
    with FakeChat() as fake:
        for url in (no_password, wrong):
            done = _run_worker(url, tmp_path, fake)
            assert done.returncode == 1, done.stderr
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            (line,) = [line for line in lines if "cannot reach Redis" in line]
            assert "127.0.0.1" in line and "not-the-password" not in line
            assert "Traceback" not in done.stderr
        assert _run_worker(redis_url, tmp_path, fake).returncode == 0

    runner = RQRunner.from_url(redis_url)
    assert runner.status()["queue_up"] is True
    assert runner.enqueue({"images": []}).get_status() == JobStatus.QUEUED
    locked_out = RQRunner.from_url(no_password)
    health = locked_out.status()
    assert health["queue_up"] is False and "Authentication" in health["error"]
    (outcome,) = locked_out.run_many([{"images": []}], timeout=5)
    assert outcome.result is None and "Authentication" in outcome.error


def test_config_and_start_up_lines_hide_the_redis_password(redis_url):
    env = clean_env(REDIS_URL=redis_url)
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "REDIS_URL" in done.stdout
    assert PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize("owner", ["worker maintenance", "backend executor"])
def test_cleaning_abandoned_jobs_imports_no_callback_and_posts_no_webhook(
    redis_url, tmp_path, monkeypatch, owner
):
    """RQ's registry cleanup ran a job's failure callback (import and call) and
    sent its webhooks: both the worker's maintenance and the backend's bulk
    executor clean registries, outside the worker's own refusal."""
    import sys
    import time

    from rq.registry import StartedJobRegistry

    from backend.bulk.executors import RQExecutor
    from common.rq_jobs import clean_queue

    monkeypatch.setenv("RQ_CANARY_PATH", str(tmp_path / "canary"))
    with Listener() as hook:
        queue = _queue(redis_url)
        job = queue.enqueue(
            RUN_CHUNK,
            _chunk(tmp_path),
            on_failure=Callback(CANARY),
            webhooks=[Webhook(hook.url + "/hook", "failed", method="POST")],
        )
        # As an attacker with Redis access: the job "started" and was abandoned.
        job.connection.lrem(queue.key, 0, job.id)
        job.set_status(JobStatus.STARTED)
        job.connection.zadd(
            StartedJobRegistry(queue=queue).key, {job.id: time.time() - 60}
        )
        if owner == "worker maintenance":
            clean_queue(queue)
        else:
            executor = RQExecutor(queue.connection, queue_name=queue.name)
            clean_queue(executor.queue)
        assert hook.seen == [], "an abandoned job's webhook was sent"
    assert "tests.security.rq_canary" not in sys.modules
    assert not (tmp_path / "canary").exists(), "a callback named in Redis ran"
