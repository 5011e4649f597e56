"""common.training_jobs: the training payload's whitelist, and the job
records on a real Redis."""

from __future__ import annotations

import json
import re

import pytest
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from common import training_jobs as records
from common.queues import QUEUE_TRAIN, RUN_TRAINING
from common.training_jobs import (
    TrainingRequest,
    TrainingRequestError,
    option_arguments,
    parse_payload,
    validate_options,
)
from tests.backend.redis_helpers import redis_or_skip


@pytest.fixture
def redis_conn():
    connection = redis_or_skip()
    yield connection
    connection.flushdb()


# The whitelist ------------------------------------------------------------------
def test_options_within_bounds_pass_with_their_types():
    options = validate_options(
        {"steps": 300, "lr": 1, "batch_size": 4, "method": "lora", "merge": True}
    )
    assert options == {
        "steps": 300,
        "lr": 1.0,
        "batch_size": 4,
        "method": "lora",
        "merge": True,
    }
    assert isinstance(options["lr"], float)
    assert validate_options({"epochs": 2}) == {"epochs": 2}
    with pytest.raises(TrainingRequestError, match="steps and epochs exclude"):
        validate_options({"steps": 300, "epochs": 2})
    with pytest.raises(TrainingRequestError, match="merge must be true or false"):
        validate_options({"merge": "yes"})
    assert option_arguments({"merge": True}) == ["--merge"]
    assert option_arguments({"merge": False}) == []
    assert validate_options(None) == {}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"steps": 0}, "options.steps must be an integer from 1 to 1000000, got 0"),
        ({"steps": 10**7}, "options.steps"),
        ({"steps": "300"}, "options.steps must be an integer"),
        ({"steps": 3.5}, "options.steps must be an integer"),
        ({"batch_size": True}, "options.batch_size"),
        ({"lr": float("nan")}, "options.lr must be a number"),
        ({"lr": 2.0}, "options.lr must be a number from 1e-08 to 1"),
        ({"method": "qlora"}, "options.method must be one of 'lora', 'full'"),
        ({"output_dir": "/etc"}, "unknown option 'output_dir'; allowed: steps"),
        ({"--steps": 3}, "unknown option '--steps'"),
    ],
)
def test_a_bad_option_is_refused_naming_it(options, named):
    with pytest.raises(TrainingRequestError, match=re.escape(named)) as err:
        validate_options(options)
    assert named in str(err.value)


def test_options_must_be_an_object_and_the_source_is_named():
    with pytest.raises(TrainingRequestError, match="finetune must be an object"):
        validate_options([["steps", 3]], where="finetune")
    with pytest.raises(TrainingRequestError, match=r"finetune\.steps"):
        validate_options({"steps": -1}, where="finetune")


@pytest.mark.parametrize("project", [0, -3, "3", 3.0, True, None, [3]])
def test_a_payload_without_a_positive_integer_project_is_refused(project):
    with pytest.raises(
        TrainingRequestError, match="project must be a positive integer"
    ):
        parse_payload({"project": project})


def test_a_payload_is_parsed_and_extra_fields_are_refused():
    request = parse_payload({"project": 3, "options": {"steps": 5}})
    assert request == TrainingRequest(3, {"steps": 5})
    assert request.to_payload() == {"project": 3, "options": {"steps": 5}}
    with pytest.raises(TrainingRequestError, match=r"unknown field.*command"):
        parse_payload({"project": 3, "command": "rm -rf /"})
    with pytest.raises(TrainingRequestError, match="payload must be an object"):
        parse_payload("project=3")


def test_options_become_finetune_arguments():
    argv = option_arguments({"batch_size": 4, "lr": 0.0002, "method": "full"})
    assert argv == ["--batch-size=4", "--lr=0.0002", "--method=full"]
    phrases = option_arguments({"replay_phrases": "--base /evil,cat"})
    assert phrases == ["--replay-phrases=--base /evil,cat"]  # one argument, a value
    with pytest.raises(TrainingRequestError):
        option_arguments({"steps": "1; rm"})


def test_job_ids_have_one_shape():
    job_id = records.new_job_id()
    assert records.is_job_id(job_id)
    for other in ("files-0000", "train-", "train-../x", "train-a b", 3, None):
        assert not records.is_job_id(other)


# Records on Redis ----------------------------------------------------------------
def test_records_are_written_listed_updated_and_dropped_when_expired(redis_conn):
    first = records.new_record("train-aaa1", 3, {"steps": 5}, "webhook")
    records.save_record(redis_conn, first)
    second = records.new_record("train-bbb2", 4, {}, "api")
    second["created"] = first["created"] + 1
    records.save_record(redis_conn, second)
    assert redis_conn.ttl(records.record_key("train-aaa1")) > 0
    assert [r["id"] for r in records.list_records(redis_conn)] == [
        "train-bbb2",
        "train-aaa1",
    ]
    assert [r["id"] for r in records.list_records(redis_conn, project=3)] == [
        "train-aaa1"
    ]
    updated = records.update_record(redis_conn, "train-aaa1", state="running", step=2)
    assert records.read_record(redis_conn, "train-aaa1") == updated
    assert updated["state"] == "running" and updated["step"] == 2
    with pytest.raises(KeyError, match="not record fields"):
        records.update_record(redis_conn, "train-aaa1", owner="me")
    redis_conn.delete(records.record_key("train-bbb2"))  # as if it expired
    assert [r["id"] for r in records.list_records(redis_conn)] == ["train-aaa1"]
    assert redis_conn.zscore(records.INDEX_KEY, "train-bbb2") is None


def test_a_forged_record_is_not_read(redis_conn):
    for job_id, body in (
        ("train-f1", "not json"),
        (
            "train-f2",
            json.dumps({"id": "train-other", "state": "running", "project": 1}),
        ),
        ("train-f3", json.dumps({"id": "train-f3", "state": "owned", "project": 1})),
        ("train-f4", json.dumps({"id": "train-f4", "state": "queued", "project": "1"})),
    ):
        redis_conn.set(records.record_key(job_id), body)
        redis_conn.zadd(records.INDEX_KEY, {job_id: 1})
        assert records.read_record(redis_conn, job_id) is None
    assert records.list_records(redis_conn) == []
    assert records.read_record(redis_conn, "../etc") is None


def test_enqueue_puts_the_job_on_the_train_queue_with_a_day_timeout(redis_conn):
    record = records.enqueue_training(
        redis_conn, "train-q1", TrainingRequest(5, {"steps": 3}), "api"
    )
    assert record["state"] == "queued" and record["source"] == "api"
    queue = Queue(QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer)
    (job,) = queue.jobs
    assert job.id == "train-q1" and job.func_name == RUN_TRAINING
    assert list(job.args) == [{"project": 5, "options": {"steps": 3}}]
    assert job.timeout == records.TRAIN_JOB_TIMEOUT_S == 86_400
    assert job.retries_left is None


def test_cancelling_a_queued_job_takes_it_off_the_queue(redis_conn):
    records.enqueue_training(redis_conn, "train-c1", TrainingRequest(5, {}), "api")
    record = records.cancel_training(redis_conn, "train-c1")
    assert record["state"] == "cancelled"
    assert records.cancel_requested(redis_conn, "train-c1")
    queue = Queue(QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer)
    assert queue.count == 0
    with pytest.raises(LookupError, match="no training job"):
        records.cancel_training(redis_conn, "train-none")


def test_an_active_record_whose_queue_job_ended_reads_as_failed(redis_conn):
    records.enqueue_training(redis_conn, "train-r1", TrainingRequest(5, {}), "api")
    record = records.read_record(redis_conn, "train-r1")
    assert records.reconciled(redis_conn, record)["state"] == "queued"
    queue = Queue(QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer)
    queue.fetch_job("train-r1").set_status(JobStatus.FAILED)
    failed = records.reconciled(redis_conn, record)
    assert failed["state"] == "failed" and failed["error"]
    redis_conn.delete(queue.fetch_job("train-r1").key)
    gone = records.reconciled(redis_conn, record)
    assert gone["state"] == "failed" and "gone from Redis" in gone["error"]
    assert records.read_record(redis_conn, "train-r1")["state"] == "queued"
