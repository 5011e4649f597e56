"""``rexlabel jobs`` with training jobs: listed with their kind, inspected,
cancelled; bulk jobs beside them unchanged. Real Redis."""

from __future__ import annotations

import json
import time

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from backend.bulk.records import JobRecord, JobStatus
from backend.bulk.store import open_store
from backend.cli import main
from common import training_jobs as records
from common.queues import QUEUE_TRAIN
from common.training_jobs import TrainingRequest
from tests.backend.redis_helpers import redis_or_skip, redis_url


@pytest.fixture
def redis_conn(tmp_path, monkeypatch):
    connection = redis_or_skip()
    monkeypatch.setenv("REDIS_URL", redis_url())
    monkeypatch.setenv("REXLABEL_JOBS_DIR", str(tmp_path / "jobs"))
    yield connection
    connection.flushdb()


def running_job(connection, job_id: str = "train-abc1") -> dict:
    records.enqueue_training(
        connection, job_id, TrainingRequest(3, {"steps": 300}), "api"
    )
    return records.update_record(
        connection,
        job_id,
        state="running",
        step=12,
        steps=300,
        loss=0.41,
        eta_s=137.0,
        run="run-20260101-000000-abc1",
        out="/models/project-3/run-20260101-000000-abc1",
    )


def test_list_shows_training_and_bulk_jobs_with_their_kind(redis_conn, capsys):
    bulk = JobRecord(
        id="files-0001",
        kind="files",
        status=JobStatus.DONE,
        total=4,
        done=4,
        started_at=time.time() - 60,
        updated_at=time.time() - 50,
    )
    redis_conn.set("rexlabel:job:files-0001", json.dumps(bulk.to_dict()))
    redis_conn.sadd("rexlabel:jobs", "files-0001")
    assert [r.id for r in open_store(redis_conn).list_records()] == ["files-0001"]
    running_job(redis_conn)
    assert main(["jobs", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("train-abc1  train   running     project 3")
    assert "step 12/300  loss 0.4100  ETA" in lines[0]
    assert lines[1].startswith("files-0001  files   done        4/4 (0 failed)")
    assert main(["jobs", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["kind"]) for r in listing] == [
        ("train-abc1", "train"),
        ("files-0001", "files"),
    ]


def test_status_of_a_training_job(redis_conn, capsys):
    running_job(redis_conn)
    assert main(["jobs", "status", "train-abc1"]) == 0
    out = capsys.readouterr().out
    assert "train-abc1  train   running     project 3  step 12/300" in out
    assert "  run: run-20260101-000000-abc1" in out
    assert '  options: {"steps": 300}' in out
    assert main(["jobs", "status", "train-abc1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["kind"] == "train" and record["eta_s"] == 137.0


def test_a_training_job_whose_worker_vanished_shows_as_failed(redis_conn, capsys):
    running_job(redis_conn)
    Queue(QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer).fetch_job(
        "train-abc1"
    ).delete()
    assert main(["jobs", "status", "train-abc1"]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "gone from Redis" in out


def test_cancel_a_queued_and_a_running_training_job(redis_conn, capsys):
    records.enqueue_training(redis_conn, "train-q1", TrainingRequest(3, {}), "api")
    assert main(["jobs", "cancel", "train-q1"]) == 0
    assert "cancel requested: train-q1  train   cancelled" in capsys.readouterr().out
    queue = Queue(QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer)
    assert queue.count == 0
    running_job(redis_conn, "train-r1")
    assert main(["jobs", "cancel", "train-r1"]) == 0
    assert "train-r1  train   running" in capsys.readouterr().out  # the worker stops it
    assert records.cancel_requested(redis_conn, "train-r1")


def test_a_training_job_cannot_be_resumed(redis_conn, capsys):
    running_job(redis_conn)
    assert main(["jobs", "resume", "train-abc1"]) == 2
    assert "cannot be resumed" in capsys.readouterr().err


def test_an_unknown_id_is_still_a_clear_error(redis_conn, capsys):
    assert main(["jobs", "status", "train-nothere"]) == 2
    assert "no job 'train-nothere'" in capsys.readouterr().err
