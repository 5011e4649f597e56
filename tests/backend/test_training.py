"""Starting training: Label Studio's START_TRAINING webhook and POST /train
(backend.training), through the Flask app, enqueueing on a real Redis."""

from __future__ import annotations

import logging
import time

import pytest
from rq import Queue
from rq.serializers import JSONSerializer

from backend.app import create_app
from backend.queue import InProcessRunner
from backend.state import MemoryStore
from backend.training import TRAIN_COOLDOWN_S, TrainingStarter, training_project
from common import training_jobs as records
from common.queues import QUEUE_TRAIN, RUN_TRAINING
from tests.backend.redis_helpers import redis_or_skip, redis_url

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="Car"/>'
    "</RectangleLabels></View>"
)
PLANNED = "tests.backend.jobfuncs.planned_chunk"
AUTH = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw"}


def basic(user: str, password: str) -> dict:
    import base64

    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@pytest.fixture
def redis_conn():
    connection = redis_or_skip()
    yield connection
    connection.flushdb()


def make_client(env: dict | None = None, with_redis: bool = True):
    env = {"REXLABEL_MODEL": "/models/test", **AUTH, **(env or {})}
    if with_redis:
        env["REDIS_URL"] = redis_url()
    app = create_app(env, runner=InProcessRunner(function=PLANNED), store=MemoryStore())
    app.testing = True
    client = app.test_client()
    client.auth = basic("ls", "pw")
    return client


def set_up(client, project: int = 3, extra: dict | None = None) -> None:
    body = {
        "project": f"{project}.1795697856",
        "schema": CONFIG,
        "extra_params": extra if extra is not None else {"finetune": {"steps": 5}},
    }
    assert client.post("/setup", json=body, headers=client.auth).status_code == 200


def start_training(client, project=3, **extra) -> dict:
    """Label Studio 1.23's Start Training: the project object, no options."""
    body = {"action": "START_TRAINING", "project": {"id": project, "title": "p"}}
    response = client.post("/webhook", json={**body, **extra}, headers=client.auth)
    assert response.status_code == 200  # always: an error would stop predictions
    return response.get_json()


def train_queue(connection) -> Queue:
    return Queue(QUEUE_TRAIN, connection=connection, serializer=JSONSerializer)


def test_start_training_queues_one_job_with_the_projects_options(redis_conn, caplog):
    client = make_client()
    set_up(client)
    with caplog.at_level(logging.INFO, logger="backend.training"):
        reply = start_training(client, options={"steps": 10**6}, finetune={"lr": 1})
    assert reply["status"] == "queued" and reply["action"] == "START_TRAINING"
    assert records.is_job_id(reply["job"]) and reply["project"] == 3
    assert "no worker listens on rexlabel:train" in reply["message"]
    (job,) = train_queue(redis_conn).jobs
    assert job.id == reply["job"] and job.func_name == RUN_TRAINING
    # the options are the extra param's; the webhook body's are never read
    assert list(job.args) == [{"project": 3, "options": {"steps": 5}}]
    record = records.read_record(redis_conn, reply["job"])
    assert record["state"] == "queued" and record["source"] == "webhook"
    assert f"training job {reply['job']} queued" in caplog.text


def test_a_second_click_answers_the_running_job(redis_conn):
    client = make_client()
    set_up(client)
    first = start_training(client)
    records.update_record(redis_conn, first["job"], state="running")
    again = start_training(client)
    assert again["status"] == "existing" and again["job"] == first["job"]
    assert train_queue(redis_conn).count == 1


def test_an_unknown_project_is_ignored(redis_conn, caplog):
    client = make_client()
    set_up(client, project=3)
    with caplog.at_level(logging.WARNING, logger="backend.training"):
        reply = start_training(client, project=99)
    assert reply["status"] == "ignored" and "job" not in reply
    assert "project 99 is not set up on this backend" in reply["message"]
    assert "project 99 is not set up" in caplog.text
    assert train_queue(redis_conn).count == 0
    for bad in ("../3", None, True, {"id": "3; DROP"}, 1.5, -2):
        reply = start_training(client, project=bad)
        assert reply["status"] == "refused", bad
    assert train_queue(redis_conn).count == 0


def test_a_new_run_waits_for_the_cooldown(redis_conn):
    client = make_client()
    set_up(client)
    first = start_training(client)
    records.update_record(redis_conn, first["job"], state="failed", ended=time.time())
    train_queue(redis_conn).fetch_job(first["job"]).delete()
    reply = start_training(client)
    assert reply["status"] == "cooldown" and "job" not in reply
    assert f"ended less than {TRAIN_COOLDOWN_S} s ago" in reply["message"]
    past = time.time() - TRAIN_COOLDOWN_S - 1
    records.update_record(redis_conn, first["job"], ended=past)
    assert start_training(client)["status"] == "queued"


def test_a_dead_workers_job_holds_no_slot(redis_conn):
    client = make_client()
    set_up(client)
    first = start_training(client)
    train_queue(redis_conn).fetch_job(first["job"]).delete()  # Redis lost it
    starter = client.application.extensions["rexlabel"].trainer
    starter.cooldown_s = 0
    reply = start_training(client)
    assert reply["status"] == "queued" and reply["job"] != first["job"]


def test_bad_finetune_options_are_refused_naming_them(redis_conn):
    client = make_client()
    set_up(client, extra={"finetune": {"steps": 5, "output_dir": "/etc"}})
    reply = start_training(client)
    assert reply["status"] == "refused"
    assert "finetune: unknown option 'output_dir'" in reply["message"]
    set_up(client, extra={"finetune": {"batch_size": 0}})
    assert "finetune.batch_size must be an integer" in start_training(client)["message"]
    assert train_queue(redis_conn).count == 0


def test_without_redis_training_says_what_it_needs(caplog):
    client = make_client(with_redis=False)
    set_up(client)
    with caplog.at_level(logging.WARNING, logger="backend.training"):
        reply = start_training(client)
    assert reply["status"] == "unavailable"
    assert "training needs Redis (set REDIS_URL" in reply["message"]
    assert "rexlabel worker --train" in reply["message"]
    assert "training needs Redis" in caplog.text
    response = client.post("/train", json={"project": 3}, headers=client.auth)
    assert response.status_code == 503


def test_post_train_needs_auth_and_answers_with_http_statuses(redis_conn):
    client = make_client()
    set_up(client)
    assert client.post("/train", json={"project": 3}).status_code == 401
    wrong = basic("ls", "nope")
    assert client.post("/train", json={"project": 3}, headers=wrong).status_code == 401
    # Label Studio's older /train call: "<id>.<ts>", annotations it sends ignored
    legacy = {"project": "3.1795697856", "annotations": [{"id": 1}], "params": {}}
    response = client.post("/train", json=legacy, headers=client.auth)
    assert response.status_code == 200
    job = response.get_json()["job"]
    assert records.read_record(redis_conn, job)["source"] == "api"
    again = client.post("/train", json={"project": 3}, headers=client.auth)
    assert again.status_code == 200 and again.get_json()["status"] == "existing"
    unknown = client.post("/train", json={"project": 4}, headers=client.auth)
    assert unknown.status_code == 404
    bad = client.post("/train", json={"project": "x"}, headers=client.auth)
    assert bad.status_code == 400 and "'project' must be" in bad.get_json()["message"]
    records.update_record(redis_conn, job, state="finished", ended=time.time())
    cooling = client.post("/train", json={"project": 3}, headers=client.auth)
    assert cooling.status_code == 429


def test_two_starts_at_once_queue_one_job(redis_conn):
    """The start lock: while one start decides, another is told to retry."""
    store = MemoryStore()
    from backend.state import make_state

    store.put(make_state(3, {}, label_config=CONFIG))
    starter = TrainingStarter(store, redis_conn)
    redis_conn.set(records.START_LOCK_PREFIX + "3", "other", ex=5)
    busy = starter.start(3, "webhook")
    assert (busy.status, busy.http_status) == ("busy", 409)
    redis_conn.delete(records.START_LOCK_PREFIX + "3")
    assert starter.start(3, "webhook").status == "queued"
    assert not redis_conn.exists(records.START_LOCK_PREFIX + "3")  # released


def test_project_references_label_studio_sends():
    assert training_project({"id": 3, "title": "x"}) == 3
    assert training_project("3.1795697856") == 3
    assert training_project(3) == training_project("3") == 3
