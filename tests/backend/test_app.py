"""Every endpoint and error path of the Flask app, through Flask's test client.

Most tests run the chunks with :func:`tests.backend.jobfuncs.planned_chunk`, a
stand-in worker that answers each call from its parameters, in-process or
through a real Redis and a real rexlabel worker process. The end-to-end tests
at the bottom run the real job function (``worker.jobs.run_chunk``) on the
tiny model, in-process and through Redis + ``rexlabel worker``.
"""

from __future__ import annotations

import base64
import logging
import os
import sys
import threading
import time

import pytest

from backend.app import create_app
from backend.queue import InProcessRunner, RQRunner
from backend.routes import background, predict, webhook
from backend.state import MemoryStore
from tests.backend.redis_helpers import (
    redis_or_skip,
    redis_url,
    start_worker,
    stop_worker,
    test_worker_command,
)

PLANNED = "tests.backend.jobfuncs.planned_chunk"
PROJECT = "3.1795697856"
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car" predicted_values="car,truck"/><Label value="Person"/>'
    "</RectangleLabels>"
    '<TextArea name="prompt" toName="image" editable="true"/>'
    "</View>"
)


OWN_STORE = object()
"""make_client's default: a fresh MemoryStore (None lets the app choose)."""


def make_client(env: dict | None = None, runner=None, store=OWN_STORE):
    app = create_app(
        {"REXLABEL_MODEL": "/models/test", **(env or {})},
        runner=runner or InProcessRunner(function=PLANNED),
        store=MemoryStore() if store is OWN_STORE else store,
    )
    app.testing = True
    return app.test_client()


def task(tid: int, url: str | None = "/data/upload/3/a.jpg") -> dict:
    data = {} if url is None else {"image": url}
    return {"id": tid, "data": data, "meta": {}, "project": 3}


def predict_body(tasks: list[dict], config: str = CONFIG, context=None) -> dict:
    return {
        "tasks": tasks,
        "project": PROJECT,
        "label_config": config,
        "params": {"login": None, "password": None, "context": context},
    }


def basic(user: str, password: str) -> dict:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def stored_by_label_studio(tasks: list, reply: dict) -> dict:
    """Task id -> the predictions Label Studio 1.23 stores from a /predict reply.

    Its rules (Label Studio's ``MLBackend.predict_tasks``):
    one item per task, in order, or nothing is stored; an item is one
    prediction or a list of them; a prediction without ``result`` is skipped.
    A task that gets nothing stored is predicted again by the next "Retrieve
    Predictions" (only tasks holding this ``model_version`` are left out).
    """
    results = reply.get("results") or []
    assert len(results) == len(tasks), "LS pairs items with tasks one to one"
    stored: dict = {}
    for task_, item in zip(tasks, results, strict=True):
        items = [item] if isinstance(item, dict) else item
        stored[task_["id"] if isinstance(task_, dict) else None] = [
            p for p in items if "result" in p
        ]
    return stored


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


# /health, /, errors ---------------------------------------------------------------
def test_health_and_root_answer_json() -> None:
    client = make_client()
    for path in ("/health", "/"):
        response = client.get(path)
        assert response.status_code == 200
        body = response.get_json()
        assert body["status"] == "UP"
        assert body["model_class"] == "RexOmni"
        assert body["queue"]["mode"] == "in-process"
        assert body["workers_up"] is True
        assert body["model_version"].startswith("rexlabel-")


def test_health_is_503_when_redis_is_down() -> None:
    client = make_client(runner=RQRunner.from_url("redis://127.0.0.1:1/0"))
    response = client.get("/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "DOWN"
    assert "Redis" in body["queue"]["error"]


def test_health_is_503_with_the_reason_until_the_model_is_ready() -> None:
    """Label Studio's "Connect model" needs a 2xx /health and shows only the
    status line of an error: the reason phrase says what is going on."""
    from tests.backend.jobfuncs import GatedLoad

    load = GatedLoad()
    client = make_client(
        {"REXLABEL_PREDICT_TIMEOUT": "1"},  # the /predict below waits this long
        runner=InProcessRunner(function=PLANNED, load=load),
    )
    response = client.get("/health")
    assert response.status == "503 Model still loading"
    body = response.get_json()
    assert (body["status"], body["model"]["state"]) == ("LOADING", "loading")
    assert "Label Studio connects once /health answers 200" in body["message"]
    reply = client.post("/predict", json=predict_body([task(1)])).get_json()
    assert "result" not in reply["results"][0]  # Label Studio asks again later
    assert "model still loading" in reply["errors"][0]["error"]
    load.release()
    wait_for(lambda: client.get("/health").status_code == 200)
    body = client.get("/health").get_json()
    assert (body["status"], body["model"]["state"]) == ("UP", "ready")

    load.error = OSError("weights not found: nowhere/rex")
    client = make_client(runner=InProcessRunner(function=PLANNED, load=load))
    wait_for(lambda: client.get("/health").get_json()["model"]["state"] == "failed")
    response = client.get("/health")
    assert response.status == "503 Model failed to load"
    body = response.get_json()
    assert body["status"] == "FAILED"
    assert body["model"]["reason"] == "OSError: weights not found: nowhere/rex"
    assert "failed to load: OSError: weights not found" in body["message"]


def test_health_through_redis_says_when_no_worker_serves() -> None:
    connection = redis_or_skip()
    from rq import Worker

    if Worker.count(connection=connection):
        pytest.skip("a worker is still registered on the test database")
    client = make_client(runner=RQRunner.from_url(redis_url()))
    response = client.get("/health")
    assert response.status == "503 No rexlabel worker running"
    body = response.get_json()
    assert (body["status"], body["model"]["state"]) == ("NO_WORKERS", "no_workers")
    assert "start `rexlabel worker`" in body["message"]


def test_unknown_route_and_method_are_json_errors() -> None:
    client = make_client()
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.get_json()["error"] == "no route GET /nope"
    response = client.get("/predict")
    assert response.status_code == 405
    assert "GET is not allowed" in response.get_json()["error"]


def test_metrics_endpoint_counts_requests() -> None:
    client = make_client()
    client.get("/health")
    text = client.get("/metrics").get_data(as_text=True)
    assert "rexlabel_requests_total" in text


BODY_LIMIT_BYTES = 2048
"""MAX_CONTENT_LENGTH a deployment might set; the test's body is ~20 KB."""


def test_a_body_over_max_content_length_is_a_json_413() -> None:
    from prometheus_client import REGISTRY

    labels = {"endpoint": "/predict", "method": "POST", "status": "413"}
    before = REGISTRY.get_sample_value("rexlabel_requests_total", labels) or 0.0
    client = make_client()
    client.application.config["MAX_CONTENT_LENGTH"] = BODY_LIMIT_BYTES
    body = predict_body([task(i) for i in range(200)])
    response = client.post("/predict", json=body)
    assert response.status_code == 413
    reply = response.get_json()
    assert reply["status"] == 413
    assert "exceeds the capacity limit" in reply["error"]
    assert REGISTRY.get_sample_value("rexlabel_requests_total", labels) == before + 1


# Auth -----------------------------------------------------------------------------
AUTH_ENV = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/health"),
        ("get", "/"),
        ("get", "/versions"),
        ("get", "/metrics"),
        ("post", "/setup"),
        ("post", "/predict"),
        ("post", "/train"),
    ],
)
def test_basic_auth_guards_every_route(method: str, path: str) -> None:
    client = make_client(AUTH_ENV)
    response = getattr(client, method)(path, json={})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    response = getattr(client, method)(path, json={}, headers=basic("ls", "nope"))
    assert response.status_code == 401
    response = getattr(client, method)(path, json={}, headers=basic("ls", "pw"))
    assert response.status_code != 401


def test_webhook_takes_basic_auth_or_its_token() -> None:
    """/webhook makes the backend act, so it needs credentials like /predict:
    basic auth, or the webhook token (Label Studio's own webhook has no basic
    auth; it gets ?token= or a header)."""

    def status(client, query: str = "", headers: dict | None = None) -> int:
        event = {"action": "PROJECT_UPDATED"}
        return client.post(f"/webhook{query}", json=event, headers=headers).status_code

    token = {"X-Rexlabel-Webhook-Token": "hook-secret"}
    client = make_client(AUTH_ENV)
    assert status(client) == 401
    assert status(client, headers=basic("ls", "no")) == 401
    assert status(client, headers=basic("ls", "pw")) == 200
    client = make_client({**AUTH_ENV, "REXLABEL_WEBHOOK_TOKEN": "hook-secret"})
    assert status(client) == 401
    assert status(client, "?token=wrong") == 401
    assert status(client, "?token=hook-secret") == 200
    assert status(client, headers=token) == 200
    assert status(client, headers=basic("ls", "pw")) == 200
    client = make_client({"REXLABEL_WEBHOOK_TOKEN": "hook-secret"})  # token only
    assert status(client) == 401
    assert status(client, "?token=hook-secret") == 200


# /setup and /versions -------------------------------------------------------------
def test_setup_stores_extra_params_and_returns_the_predict_version() -> None:
    store = MemoryStore()
    client = make_client(store=store)
    body = {
        "project": PROJECT,
        "schema": CONFIG,
        "hostname": "http://ls:8080",
        "access_token": "legacy",
        "extra_params": {"model_score_threshold": 0.5},
    }
    response = client.post("/setup", json=body)
    assert response.status_code == 200
    version = response.get_json()["model_version"]
    assert store.extra_params(3) == {"model_score_threshold": 0.5}
    assert store.get(3).hostname == "http://ls:8080"
    # The /predict that follows files its predictions under the same version.
    reply = client.post("/predict", json=predict_body([task(1)])).get_json()
    assert reply["model_version"] == version
    assert reply["results"][0]["model_version"] == version
    # Other extra params -> another version; /versions lists both.
    other = client.post("/setup", json={**body, "extra_params": None}).get_json()
    assert other["model_version"] != version
    versions = client.get("/versions").get_json()["versions"]
    assert versions[:2] == [other["model_version"], version]


def test_setup_is_fast() -> None:
    client = make_client()
    started = time.perf_counter()
    response = client.post("/setup", json={"project": PROJECT, "schema": CONFIG})
    assert response.status_code == 200
    assert time.perf_counter() - started < 3.0  # Label Studio's ML_TIMEOUT_SETUP


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"schema": CONFIG}, "project"),
        ({"project": "abc", "schema": CONFIG}, "project"),
        ({"project": PROJECT, "extra_params": "{bad"}, "extra_params"),
        ({"project": PROJECT, "extra_params": [1]}, "extra_params"),
    ],
)
def test_setup_errors_name_the_field(body: dict, message: str) -> None:
    response = make_client().post("/setup", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_non_json_bodies_are_400() -> None:
    client = make_client()
    for path in ("/setup", "/predict", "/webhook"):
        response = client.post(path, data="not json", content_type="text/plain")
        assert response.status_code == 400
        assert response.get_json()["error"] == "the request body must be a JSON object"


def test_versions_before_any_setup() -> None:
    client = make_client()
    versions = client.get("/versions").get_json()["versions"]
    assert len(versions) == 1
    assert versions[0].startswith("rexlabel-")
    # /health's version (no config) is not one predictions are filed under.
    client.get("/health")
    served = client.post("/setup", json={"project": PROJECT, "schema": CONFIG})
    assert client.get("/versions").get_json()["versions"] == [
        served.get_json()["model_version"]
    ]


# /webhook -------------------------------------------------------------------------
def created_event(tasks: list[dict]) -> dict:
    return {
        "action": "TASKS_CREATED",
        "tasks": tasks,
        "project": {"id": 3, "label_config": CONFIG},
    }


def test_tasks_created_starts_a_bulk_job_when_asked(monkeypatch) -> None:
    calls: list[dict] = []

    def fake_start(**kwargs):  # the bulk helper's entry point (backend.bulk)
        calls.append(kwargs)
        return "job-1"

    monkeypatch.setattr(background, "start_bulk_job", fake_start)
    store = MemoryStore()
    client = make_client(store=store)
    client.post("/setup", json={"project": PROJECT, "schema": CONFIG})
    started = time.perf_counter()
    response = client.post("/webhook", json=created_event([task(1), task(2)]))
    assert response.status_code == 200
    assert response.get_json() == {"status": "accepted", "action": "TASKS_CREATED"}
    assert time.perf_counter() - started < 1.0  # Label Studio's WEBHOOK_TIMEOUT
    time.sleep(0.3)
    assert calls == []  # prelabel_on_import is off

    setup = {
        "project": PROJECT,
        "schema": CONFIG,
        "extra_params": {"prelabel_on_import": True},
    }
    version = client.post("/setup", json=setup).get_json()["model_version"]
    client.post("/webhook", json=created_event([task(1), task(2)]))
    wait_for(lambda: calls)
    (call,) = calls
    assert [t["id"] for t in call["tasks"]] == [1, 2]
    assert call["project"] == "3"
    assert call["model_version"] == version
    assert call["label_config"] == CONFIG
    assert call["source"] == "webhook"


def _prelabel_client(monkeypatch, calls: list) -> object:
    """A client whose project 3 is set up with prelabel_on_import; bulk jobs
    are recorded in ``calls`` instead of started."""

    def fake_start(**kwargs):
        calls.append(kwargs)
        return f"job-{len(calls)}"

    monkeypatch.setattr(background, "start_bulk_job", fake_start)
    client = make_client()
    setup = {
        "project": PROJECT,
        "schema": CONFIG,
        "extra_params": {"prelabel_on_import": True},
    }
    assert client.post("/setup", json=setup).status_code == 200
    return client


FORGED = CONFIG.replace('name="label"', 'name="forged"')


def test_tasks_created_takes_the_config_setup_stored(monkeypatch) -> None:
    calls: list[dict] = []
    client = _prelabel_client(monkeypatch, calls)
    event = {**created_event([task(1)]), "project": {"id": 3, "label_config": FORGED}}
    assert client.post("/webhook", json=event).status_code == 200
    wait_for(lambda: calls)
    assert calls[0]["label_config"] == CONFIG


def test_tasks_created_for_a_project_never_set_up_does_nothing(
    monkeypatch, caplog
) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(background, "start_bulk_job", lambda **k: calls.append(k))
    caplog.set_level(logging.INFO, logger="backend.routes.webhook")
    client = make_client()
    assert client.post("/webhook", json=created_event([task(1)])).status_code == 200
    wait_for(lambda: "it was never set up" in caplog.text)
    assert calls == []


def test_webhook_jobs_are_limited_per_project(monkeypatch, caplog) -> None:
    calls: list[dict] = []
    client = _prelabel_client(monkeypatch, calls)
    monkeypatch.setattr(background, "job_active", lambda job_id: True)
    caplog.set_level(logging.WARNING, logger="backend.routes.webhook")
    for task_id in range(webhook.WEBHOOK_JOBS_PER_PROJECT + 1):
        client.post("/webhook", json=created_event([task(task_id + 1)]))
    wait_for(lambda: "WEBHOOK_JOBS_PER_PROJECT" in caplog.text)
    assert len(calls) == webhook.WEBHOOK_JOBS_PER_PROJECT
    # once they finish, the project gets jobs again
    monkeypatch.setattr(background, "job_active", lambda job_id: False)
    client.post("/webhook", json=created_event([task(9)]))
    wait_for(lambda: len(calls) == webhook.WEBHOOK_JOBS_PER_PROJECT + 1)


def test_one_event_pre_annotates_at_most_webhook_max_tasks(monkeypatch) -> None:
    calls: list[dict] = []
    client = _prelabel_client(monkeypatch, calls)
    monkeypatch.setattr(webhook, "WEBHOOK_MAX_TASKS", 2)
    client.post("/webhook", json=created_event([task(1), task(2), task(3)]))
    wait_for(lambda: calls)
    assert [t["id"] for t in calls[0]["tasks"]] == [1, 2]


def test_a_flood_of_tasks_created_is_refused_beyond_the_backlog(monkeypatch) -> None:
    release = threading.Event()
    calls: list[dict] = []
    client = _prelabel_client(monkeypatch, calls)
    monkeypatch.setattr(background, "start_bulk_job", lambda **k: release.wait())
    monkeypatch.setattr(webhook, "WEBHOOK_PENDING_LIMIT", 3)
    try:
        statuses = [
            client.post("/webhook", json=created_event([task(i)])).status_code
            for i in range(1, 5)
        ]
    finally:
        release.set()
    assert statuses == [200, 200, 200, 503]


def test_webhook_start_training_and_others_are_accepted() -> None:
    client = make_client()
    for action in ("START_TRAINING", "ANNOTATION_CREATED", "PROJECT_UPDATED"):
        response = client.post(
            "/webhook", json={"action": action, "project": {"id": 3}}
        )
        assert response.status_code == 200
        assert response.get_json()["action"] == action


# /predict -------------------------------------------------------------------------
def test_predict_one_result_per_task_in_order() -> None:
    client = make_client()
    tasks = [task(11), task(12, "/data/upload/3/zebra.jpg"), task(13)]
    reply = client.post("/predict", json=predict_body(tasks)).get_json()
    results = reply["results"]
    assert len(results) == 3
    for result in results:
        assert result["model_version"] == reply["model_version"]
        labels = sorted(r["value"]["rectanglelabels"][0] for r in result["result"])
        # car and truck both map to Car; the unmatched "zebra" is dropped.
        assert labels == ["Car", "Car", "Person"]
        assert result["score"] == pytest.approx(0.9)
    assert "errors" not in reply
    (warning,) = reply["warnings"]
    assert warning["task"] == 12
    assert "'zebra' match no label" in warning["warning"]


def test_a_failing_task_gets_no_prediction_and_an_error() -> None:
    client = make_client()
    tasks = [task(1), task(2, "/data/upload/3/unreadable.jpg"), task(3, None), "junk"]
    reply = client.post("/predict", json=predict_body(tasks)).get_json()
    results = reply["results"]
    version = reply["model_version"]
    assert len(results[0]["result"]) == 3
    # No result: Label Studio stores nothing, so it asks again next time.
    for item in results[1:]:
        assert "result" not in item
        assert item["model_version"] == version and item["error"]
    stored = stored_by_label_studio(tasks, reply)
    assert len(stored[1]) == 1 and stored[2] == stored[3] == stored[None] == []
    errors = {e["task"]: e["error"] for e in reply["errors"]}
    assert results[1]["error"] == errors[2]
    assert "not an image" in errors[2]
    assert "data['image']" in errors[3]
    assert "task 3 is not an object" in errors[None]


def test_unsupported_config_fails_every_task_with_the_tag_named() -> None:
    config = (
        '<View><Image name="image" value="$image"/>'
        '<EllipseLabels name="ell" toName="image"><Label value="A"/>'
        "</EllipseLabels></View>"
    )
    tasks = [task(1), task(2)]
    reply = make_client().post("/predict", json=predict_body(tasks, config)).get_json()
    assert stored_by_label_studio(tasks, reply) == {1: [], 2: []}
    assert all(r["model_version"] == reply["model_version"] for r in reply["results"])
    assert [e["task"] for e in reply["errors"]] == [1, 2]
    assert "EllipseLabels 'ell'" in reply["errors"][0]["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"project": PROJECT}, "'tasks' must be a list"),
        ({"tasks": {}, "project": PROJECT}, "'tasks' must be a list"),
        ({"tasks": [], "project": PROJECT}, "'tasks' is empty"),
        ({"tasks": [task(1)], "params": "x"}, "'params' must be an object"),
    ],
)
def test_predict_bad_bodies_are_400(body: dict, message: str) -> None:
    response = make_client().post("/predict", json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_predict_without_label_config_uses_the_one_from_setup() -> None:
    client = make_client()
    client.post("/setup", json={"project": PROJECT, "schema": CONFIG})
    body = predict_body([task(1)])
    del body["label_config"]
    reply = client.post("/predict", json=body).get_json()
    assert len(reply["results"][0]["result"]) == 3


def test_extra_params_apply_to_predict() -> None:
    client = make_client()
    setup = {
        "project": PROJECT,
        "schema": CONFIG,
        "extra_params": {"model_score_threshold": 0.95},
    }
    client.post("/setup", json=setup)
    reply = client.post("/predict", json=predict_body([task(1)])).get_json()
    assert reply["results"][0]["result"] == []  # every fake box scores 0.9


def test_label_thresholds_of_extra_params_apply_to_predict() -> None:
    client = make_client()
    setup = {
        "project": PROJECT,
        "schema": CONFIG,
        "extra_params": {
            "model_score_threshold": 0.95,
            "model_score_thresholds": {"Car": 0.5},
        },
    }
    version = client.post("/setup", json=setup).get_json()["model_version"]
    reply = client.post("/predict", json=predict_body([task(1)])).get_json()
    # every fake box scores 0.9: Car's (asked as car and truck) pass its 0.5,
    # Person's fail the project's 0.95
    regions = reply["results"][0]["result"]
    assert [r["value"]["rectanglelabels"] for r in regions] == [["Car"], ["Car"]]
    assert reply["model_version"] == version
    setup["extra_params"]["model_score_thresholds"] = {"Car": 0.95}
    assert client.post("/setup", json=setup).get_json()["model_version"] != version


def test_a_task_past_the_deadline_gets_no_prediction_and_is_retried() -> None:
    client = make_client(
        {"REXLABEL_PREDICT_TIMEOUT": "1", "REXLABEL_PREDICT_CHUNK_SIZE": "1"}
    )
    tasks = [task(1, "/data/upload/3/a.jpg?sleep=1.2"), task(2)]
    reply = client.post("/predict", json=predict_body(tasks)).get_json()
    assert len(reply["results"][0]["result"]) == 3  # finished, late but started
    assert "result" not in reply["results"][1]
    assert "deadline passed" in reply["results"][1]["error"]
    assert "deadline passed" in reply["errors"][0]["error"]
    stored = stored_by_label_studio(tasks, reply)
    assert len(stored[1]) == 1 and stored[2] == []
    # "Retrieve Predictions" sends the task without a prediction again.
    retried = client.post("/predict", json=predict_body([tasks[1]])).get_json()
    assert len(stored_by_label_studio([tasks[1]], retried)[2]) == 1


def test_too_many_tasks_without_bulk_jobs_is_a_clear_503(monkeypatch) -> None:
    monkeypatch.setattr(background, "BULK_FUNCTION", "no_such_function")
    client = make_client({"REXLABEL_SYNC_TASK_LIMIT": "2"})
    response = client.post("/predict", json=predict_body([task(i) for i in range(3)]))
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert "REXLABEL_SYNC_TASK_LIMIT=2" in error
    assert "background jobs are not available" in error


def test_too_many_tasks_become_a_background_job(monkeypatch) -> None:
    calls: list[dict] = []
    monkeypatch.setattr(
        background, "start_bulk_job", lambda **kw: calls.append(kw) or "job-7"
    )
    client = make_client({"REXLABEL_SYNC_TASK_LIMIT": "2"})
    reply = client.post(
        "/predict", json=predict_body([task(i) for i in range(3)])
    ).get_json()
    assert reply["results"] == []  # Label Studio stores nothing; the job posts them
    assert reply["background_job"] == "job-7"
    assert "job-7" in reply["message"]
    assert calls[0]["source"] == "predict"
    assert calls[0]["model_version"] == reply["model_version"]
    assert len(calls[0]["tasks"]) == 3


def test_background_jobs_of_predict_are_limited(monkeypatch) -> None:
    started: list[dict] = []

    def start(**kwargs):
        started.append(kwargs)
        return f"job-{len(started)}"

    monkeypatch.setattr(background, "start_bulk_job", start)
    monkeypatch.setattr(background, "job_active", lambda job_id: True)
    client = make_client({"REXLABEL_SYNC_TASK_LIMIT": "2"})
    limit = predict.PREDICT_BACKGROUND_JOBS
    for first in range(limit):
        body = predict_body([task(first * 10 + i) for i in range(3)])
        assert client.post("/predict", json=body).status_code == 200
    response = client.post("/predict", json=predict_body([task(i) for i in range(3)]))
    assert response.status_code == 503
    assert "PREDICT_BACKGROUND_JOBS" in response.get_json()["error"]
    assert len(started) == limit
    # once they finish, /predict starts jobs again
    monkeypatch.setattr(background, "job_active", lambda job_id: False)
    response = client.post("/predict", json=predict_body([task(i) for i in range(3)]))
    assert response.status_code == 200
    assert len(started) == limit + 1


# Interactive ------------------------------------------------------------------------
def rect(rid: str, x: float, label: str = "Car") -> dict:
    return {
        "id": rid,
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
        "original_width": 640,
        "original_height": 480,
        "image_rotation": 0,
        "value": {
            "x": x,
            "y": 10,
            "width": 20,
            "height": 20,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def test_interactive_drawn_box_finds_similar_objects() -> None:
    client = make_client()
    context = {"result": [rect("a", 10, "Person")]}
    reply = client.post(
        "/predict", json=predict_body([task(5)], context=context)
    ).get_json()
    (prediction,) = reply["results"]
    # The stand-in returns the drawn box (dropped) and one more, labelled like it.
    (region,) = prediction["result"]
    assert region["value"]["rectanglelabels"] == ["Person"]
    assert region["value"]["x"] == pytest.approx(500 / 640 * 100)
    assert prediction["model_version"] == reply["model_version"]


def typed(text: str) -> dict:
    """An interactive context holding ``text`` typed into the prompt TextArea."""
    prompt = {
        "id": "p",
        "from_name": "prompt",
        "to_name": "image",
        "type": "textarea",
        "value": {"text": [text]},
    }
    return {"result": [prompt]}


def test_interactive_text_prompt_detects_the_phrase() -> None:
    reply = (
        make_client()
        .post("/predict", json=predict_body([task(5)], context=typed("truck")))
        .get_json()
    )
    (region,) = reply["results"][0]["result"]
    assert region["value"]["rectanglelabels"] == ["Car"]


def test_an_accepted_suggestion_never_replaces_a_moved_box() -> None:
    """The user moved a pre-annotated box, typed a phrase and accepted the
    suggestion: Label Studio merges regions by id, so the answer must not
    carry the pre-annotated box's id (it did: ids hashed label and geometry)."""
    config = CONFIG.replace('<Label value="Person"/>', "").replace(
        ' predicted_values="car,truck"', ""
    )
    client = make_client()
    pre = client.post("/predict", json=predict_body([task(5)], config)).get_json()
    (pre_box,) = pre["results"][0]["result"]
    pre_ids = {pre_box["id"]}
    moved = {**pre_box, "value": {**pre_box["value"], "x": pre_box["value"]["x"] + 5}}
    (prompt,) = typed("Car")["result"]
    annotated = {**task(5), "annotations": [{"result": [moved]}]}
    body = predict_body([annotated], config, context={"result": [moved, prompt]})
    (answer,) = client.post("/predict", json=body).get_json()["results"][0]["result"]
    assert answer["value"] == pre_box["value"]  # the same region, found again
    assert answer["id"] not in pre_ids | {"p"}
    again = client.post("/predict", json=predict_body([task(5)], config)).get_json()
    assert {r["id"] for r in again["results"][0]["result"]} == pre_ids  # stable


def test_interactive_prompt_without_label_reports_the_error() -> None:
    reply = (
        make_client()
        .post("/predict", json=predict_body([task(5)], context=typed("zebra")))
        .get_json()
    )
    assert reply["results"] == [
        {"result": [], "score": 0, "model_version": reply["model_version"]}
    ]
    assert "prompt 'zebra' matches no label" in reply["errors"][0]["error"]


def test_a_free_phrase_is_asked_as_typed_and_labelled_by_the_label_it_names():
    """Issue 11 point 7: "red sports car" was refused ("matches no label");
    the model is now asked the phrase as typed and its box is a Car."""
    from tests.backend.jobfuncs import planned_chunk

    asked: list[list[str]] = []

    def recording_chunk(payload: dict) -> dict:
        for image in payload["images"]:
            asked.extend(call["categories"] for call in image["calls"])
        return planned_chunk(payload)

    client = make_client(runner=InProcessRunner(function=recording_chunk))
    body = predict_body([task(5)], context=typed("red sports car"))
    reply = client.post("/predict", json=body).get_json()
    assert asked == [["red sports car"]]
    (region,) = reply["results"][0]["result"]
    assert region["value"]["rectanglelabels"] == ["Car"]
    assert "errors" not in reply


def served_predict(tmp_path, answer: str, body: dict) -> tuple[dict, list[str]]:
    """``body`` POSTed to a real ``rexlabel serve`` whose openai engine talks to
    a fake model answering ``answer``; the image ``/data/upload/3/a.png`` comes
    from a fake Label Studio. Returns the reply and the model requests' bodies."""
    from tests.fake_label_studio import FakeLabelStudio
    from tests.security.conftest import FakeChat, png_bytes, serve

    with FakeChat(answer) as chat, FakeLabelStudio() as ls:
        ls.files["3/a.png"] = png_bytes()
        env = {
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.pat,
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
        }
        with serve(tmp_path, env) as served:
            reply = served.post("/predict", body).json()
        return reply, [r.body.decode() for r in chat.seen if r.method == "POST"]


def valid_for(config: str, prediction: dict) -> bool:
    """Label Studio SDK's validator accepts ``prediction`` for ``config``."""
    from label_studio_sdk.label_interface import LabelInterface

    return LabelInterface(config).validate_prediction(prediction) is True


README_DETECTION = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image" smart="true">'
    '<Label value="person"/><Label value="car" predicted_values="car,truck"/>'
    "</RectangleLabels>"
    '<TextArea name="prompt" toName="image" editable="true" '
    'showSubmitButton="true" maxSubmissions="1"/></View>'
)
"""The README's detection config with a text prompt."""


def test_a_free_phrase_through_rexlabel_serve_and_the_openai_engine(tmp_path):
    """The real path: ``rexlabel serve`` asks the (fake) model the typed phrase
    and labels its answer ``car``, which Label Studio's validator accepts."""
    phrase = "the red truck left of the person"
    answer = (
        f"<|object_ref_start|>{phrase}<|object_ref_end|>"
        "<|box_start|><100><100><400><400><|box_end|><|im_end|>"
    )
    body = predict_body(
        [task(5, "/data/upload/3/a.png")], README_DETECTION, context=typed(phrase)
    )
    reply, asked = served_predict(tmp_path, answer, body)
    assert len(asked) == 1 and phrase in asked[0], asked
    (region,) = reply["results"][0]["result"]
    assert region["value"]["rectanglelabels"] == ["car"]
    assert valid_for(README_DETECTION, reply["results"][0])


ANIMAL_POSE = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="box" toName="image">'
    '<Label value="Cat"/><Label value="Dog"/></RectangleLabels>'
    '<KeyPointLabels name="kp" toName="image">'
    '<Label value="nose"/><Label value="left_front_paw"/><Label value="Root of tail"/>'
    "</KeyPointLabels></View>"
)
"""Animal joints (spelt three ways) beside a rectangle of species."""


def test_animal_keypoints_through_rexlabel_serve_hang_under_species_boxes(tmp_path):
    """Issue 11 point 3 on the real path: without rex_categories the model is
    asked for the rectangle's species (it was asked for "animal" and the
    joints stood alone), and each animal's joints get its box as parent."""
    answer = (
        '```json\n{"cat1": {"bbox": "<10><10><400><400>", "keypoints": '
        '{"nose": "<100><100>", "left front paw": "<50><300>", '
        '"root of tail": "unvisible"}}, "dog1": {"bbox": "<500><10><990><400>", '
        '"keypoints": {"nose": "<600><100>", "root of tail": "<900><200>"}}}\n```'
    )
    body = predict_body([task(5, "/data/upload/3/a.png")], ANIMAL_POSE)
    reply, (asked,) = served_predict(tmp_path, answer, body)
    assert "Cat, Dog" in asked, asked
    prediction = reply["results"][0]
    results = prediction["result"]
    boxes = {
        r["id"]: r["value"]["rectanglelabels"]
        for r in results
        if r["type"] == "rectanglelabels"
    }
    joints = {
        r["value"]["keypointlabels"][0]: boxes[r["parentID"]]
        for r in results
        if r["type"] == "keypointlabels"
    }
    assert sorted(boxes.values()) == [["Cat"], ["Dog"]]
    assert len(results) == 2 + 4
    assert joints["left_front_paw"] == ["Cat"]
    assert joints["Root of tail"] == ["Dog"]
    assert valid_for(ANIMAL_POSE, prediction)


def test_a_free_phrase_naming_no_label_lists_the_labels() -> None:
    body = predict_body([task(5)], context=typed("striped zebra"))
    reply = make_client().post("/predict", json=body).get_json()
    assert reply["results"][0]["result"] == []
    error = reply["errors"][0]["error"]
    assert "prompt 'striped zebra' matches no label" in error
    assert "(labels: Car, Person)" in error


def test_interactive_keypoint_clicks_give_a_brush_mask() -> None:
    config = (
        '<View><Image name="image" value="$image"/>'
        '<KeyPointLabels name="tag2" toName="image" smart="true">'
        '<Label value="Car"/></KeyPointLabels>'
        '<BrushLabels name="brush" toName="image"><Label value="Car"/>'
        "</BrushLabels></View>"
    )
    click = {
        "id": "k",
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "original_width": 640,
        "original_height": 480,
        "is_positive": True,
        "value": {"x": 50, "y": 50, "width": 0.3, "keypointlabels": ["Car"]},
    }
    body = predict_body([task(5)], config, context={"result": [click]})
    (region,) = (
        make_client().post("/predict", json=body).get_json()["results"][0]["result"]
    )
    assert region["type"] == "brushlabels"
    assert region["from_name"] == "brush"
    assert region["value"]["brushlabels"] == ["Car"]
    from label_studio_sdk.converter.brush import decode_rle

    alpha = decode_rle(region["value"]["rle"]).reshape(480, 640, 4)[:, :, 3]
    assert alpha[240, 320] == 255 and alpha[0, 0] == 0


# Through Redis and a rexlabel worker process --------------------------------------
@pytest.fixture
def redis_worker():
    """A worker running test job functions, stopped after each test: a worker
    left listening would take the real-model tests' jobs."""
    connection = redis_or_skip()
    process = start_worker(
        # Unique per run: a worker killed earlier stays registered until its TTL.
        test_worker_command(f"app-test-worker-{os.getpid()}"),
        connection,
    )
    yield connection
    stop_worker(process)


def test_predict_through_redis_and_a_worker(redis_worker) -> None:
    runner = RQRunner.from_url(redis_url(), function=PLANNED)
    client = make_client(runner=runner, env={"REXLABEL_PREDICT_CHUNK_SIZE": "1"})
    health = client.get("/health").get_json()
    assert health["queue"]["mode"] == "redis"
    assert health["workers_up"] is True
    tasks = [task(1), task(2, "/data/upload/3/unreadable.jpg"), task(3)]
    reply = client.post("/predict", json=predict_body(tasks)).get_json()
    stored = stored_by_label_studio(tasks, reply)
    assert [len(p[0]["result"]) if p else None for p in stored.values()] == [
        3,
        None,
        3,
    ]
    assert [e["task"] for e in reply["errors"]] == [2]


def test_project_state_is_shared_through_redis(redis_worker) -> None:
    first = make_client(
        runner=RQRunner.from_url(redis_url(), function=PLANNED), store=None
    )
    second = make_client(
        runner=RQRunner.from_url(redis_url(), function=PLANNED), store=None
    )
    setup = {
        "project": PROJECT,
        "schema": CONFIG,
        "extra_params": {"model_score_threshold": 0.95},
    }
    version = first.post("/setup", json=setup).get_json()["model_version"]
    reply = second.post("/predict", json=predict_body([task(1)])).get_json()
    assert reply["model_version"] == version
    assert reply["results"][0]["result"] == []


def test_too_many_tasks_without_label_studio_access_is_a_clear_503(monkeypatch) -> None:
    # The real backend.bulk.start_for_tasks: it posts to Label Studio, so it
    # refuses to start without Label Studio's URL and token.
    for name in (
        "LABEL_STUDIO_URL",
        "LABEL_STUDIO_HOST",
        "LABEL_STUDIO_API_KEY",
        "LABEL_STUDIO_ACCESS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    client = make_client({"REXLABEL_SYNC_TASK_LIMIT": "1"})
    response = client.post("/predict", json=predict_body([task(1), task(2)]))
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error.startswith("2 tasks are more than REXLABEL_SYNC_TASK_LIMIT=1")
    assert "Label Studio" in error.split(", and ", 1)[1]


# The real job function on the trained tiny model -----------------------------------
REAL_SAMPLES = 4
"""Images per end-to-end /predict: one task each, one chunk of 4 (default size)."""


def shape_config(phrases: list[str]) -> str:
    """Labels ``Shape 0..n`` asking for the synthetic shapes' phrases."""
    labels = "".join(
        f'<Label value="Shape {i}" predicted_values="{p}"/>'
        for i, p in enumerate(phrases)
    )
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="label" toName="image">{labels}'
        "</RectangleLabels></View>"
    )


@pytest.fixture
def local_files(tmp_path, monkeypatch):
    """``tmp_path`` as LOCAL_FILES_DOCUMENT_ROOT of this process's image loader
    (a request over HTTP reads local files only there, via /data/local-files/)."""
    from common.images.loader import default_loader

    monkeypatch.setenv("LOCAL_FILES_DOCUMENT_ROOT", str(tmp_path))
    default_loader.cache_clear()
    yield tmp_path
    default_loader.cache_clear()


def local_file(name: str) -> str:
    """The task value of ``name`` under LOCAL_FILES_DOCUMENT_ROOT."""
    return f"/data/local-files/?d={name}"


def shape_tasks(tmp_path) -> tuple[list[dict], list, str]:
    """Held-out synthetic images of ONE phrase (the tiny model was trained on
    one-phrase prompts), one task each, and a config asking for that phrase.
    The images are saved in ``tmp_path``, the tasks name them as local files
    under LOCAL_FILES_DOCUMENT_ROOT=``tmp_path``."""
    from worker.training.synthetic import held_out_samples

    pool = held_out_samples(60, seed=7)
    phrase = max(
        dict.fromkeys(s.phrase for s in pool), key=[s.phrase for s in pool].count
    )
    samples = [s for s in pool if s.phrase == phrase][:REAL_SAMPLES]
    assert len(samples) == REAL_SAMPLES, "not enough samples of one phrase"
    tasks = []
    for i, sample in enumerate(samples):
        path = tmp_path / f"shape{i}.png"
        sample.image.save(path)
        tasks.append(task(100 + i, local_file(path.name)))
    return tasks, samples, shape_config([phrase])


def assert_found_the_shapes(reply: dict, samples: list, config: str) -> None:
    """Each task: regions labelled like its shape; most boxes on the shape."""
    from label_studio_sdk.label_interface import LabelInterface

    from worker.training.synthetic import box_iou

    assert "errors" not in reply, reply.get("errors")
    li = LabelInterface(config)
    labels = {
        p: f"Shape {i}" for i, p in enumerate(dict.fromkeys(s.phrase for s in samples))
    }
    hits = 0
    for prediction, sample in zip(reply["results"], samples, strict=True):
        assert prediction["model_version"] == reply["model_version"]
        assert li.validate_prediction(prediction) is True
        regions = prediction["result"]
        if not regions:
            continue
        region = max(regions, key=lambda r: r.get("score", 0))
        assert region["value"]["rectanglelabels"] == [labels[sample.phrase]]
        w, h = sample.image.size
        v = region["value"]
        found = (
            v["x"] * w / 100,
            v["y"] * h / 100,
            (v["x"] + v["width"]) * w / 100,
            (v["y"] + v["height"]) * h / 100,
        )
        hits += box_iou(found, sample.box) >= 0.5
    assert hits >= REAL_SAMPLES - 1, f"only {hits} of {REAL_SAMPLES} shapes found"


@pytest.mark.slow
def test_real_model_in_process(trained_engine, local_files, caplog) -> None:
    """The trained tiny model through /predict: each shape found and labelled
    through its <Label predicted_values> alias; the request's one log line
    says what the work cost."""
    from worker.jobs import WorkerRuntime, install_runtime

    caplog.set_level(logging.INFO, logger="rexlabel.requests")
    previous = install_runtime(WorkerRuntime(engine=trained_engine))
    try:
        client = make_client(runner=InProcessRunner())  # worker.jobs.run_chunk
        tasks, samples, config = shape_tasks(local_files)
        reply = client.post("/predict", json=predict_body(tasks, config)).get_json()
    finally:
        install_runtime(previous)
    assert_found_the_shapes(reply, samples, config)
    (line,) = [r for r in caplog.records if getattr(r, "path", "") == "/predict"]
    assert line.task_ids == [t["id"] for t in tasks]
    assert (line.images, line.failed_images, line.failed_tasks) == (len(tasks), 0, 0)
    assert line.interactive is False
    assert line.generate_s > 0 and line.preprocess_s > 0 and line.parse_s > 0
    assert line.prompt_tokens > 0 and line.output_tokens > 0


@pytest.mark.slow
def test_real_worker_through_redis(tiny_model_dir, tmp_path) -> None:
    """``rexlabel worker`` on the random tiny model: real plumbing end to end
    (what it finds is noise; the trained model's test above checks findings)."""
    from label_studio_sdk.label_interface import LabelInterface

    from tests.backend.redis_helpers import REPO_ROOT

    connection = redis_or_skip()
    env = {
        "REDIS_URL": redis_url(),
        "REXLABEL_MODEL": str(tiny_model_dir),
        "REXLABEL_ENGINE": "transformers",
        "REXLABEL_DEVICE": "cpu",
        "REXLABEL_MAX_NEW_TOKENS": "48",
        "HF_HUB_OFFLINE": "1",
        "SAM_CHECKPOINT": "",
        "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path),
    }
    rexlabel = REPO_ROOT / ".venv" / "bin" / "rexlabel"
    command = (
        [str(rexlabel), "worker"]
        if rexlabel.exists()
        else [sys.executable, "-m", "backend.cli", "worker"]
    )
    process = start_worker(command, connection, env=env)
    try:
        runner = RQRunner.from_url(redis_url())  # worker.jobs.run_chunk
        client = make_client(env=env, runner=runner, store=None)
        health = client.get("/health").get_json()
        assert health["workers_up"] is True
        tasks, _samples, config = shape_tasks(tmp_path)
        missing = task(999, local_file("missing.png"))
        body = predict_body([*tasks, missing], config)
        reply = client.post("/predict", json=body).get_json()
        drawn = rect("d", 10)
        drawn["original_width"] = drawn["original_height"] = 112
        drawn["value"]["rectanglelabels"] = ["Shape 0"]
        body = predict_body(tasks[:1], config, context={"result": [drawn]})
        clicked = client.post("/predict", json=body).get_json()
    finally:
        output = stop_worker(process)
    assert [e["task"] for e in reply.get("errors", [])] == [999], output[-3000:]
    assert "cannot load image" in reply["errors"][0]["error"]
    results = reply["results"]
    assert len(results) == REAL_SAMPLES + 1
    assert "result" not in results[-1]  # nothing stored: asked again later
    assert "cannot load image" in results[-1]["error"]
    li = LabelInterface(config)
    for prediction in results[:-1]:
        assert prediction["model_version"] == reply["model_version"]
        assert li.validate_prediction(prediction) is True
    assert "errors" not in clicked, clicked.get("errors")
    (interactive,) = clicked["results"]
    assert all(
        r["value"]["rectanglelabels"] == ["Shape 0"] for r in interactive["result"]
    )


@pytest.mark.slow
def test_real_sam_clicks_and_brush_config_in_process(tiny_engine, local_files) -> None:
    """Keypoint clicks -> the real pipeline's SAM point prompt (tiny random SAM)
    -> a brush mask; a text prompt -> detection then SAM box masks."""
    from label_studio_sdk.converter.brush import decode_rle
    from label_studio_sdk.label_interface import LabelInterface
    from PIL import Image

    from worker.jobs import WorkerRuntime, install_runtime
    from worker.sam import SamMasker, build_test_sam

    Image.new("RGB", (160, 120), (40, 90, 200)).save(local_files / "blue.png")
    config = (
        '<View><Image name="image" value="$image"/>'
        '<KeyPointLabels name="tag2" toName="image" smart="true" rex_skip="true">'
        '<Label value="Car"/></KeyPointLabels>'
        '<BrushLabels name="brush" toName="image"><Label value="Car"/></BrushLabels>'
        "</View>"
    )
    clicks = [
        {
            "id": f"k{i}",
            "from_name": "tag2",
            "to_name": "image",
            "type": "keypointlabels",
            "original_width": 160,
            "original_height": 120,
            "is_positive": positive,
            "value": {"x": x, "y": 50, "width": 0.5, "keypointlabels": ["Car"]},
        }
        for i, (x, positive) in enumerate([(40, True), (80, False)])
    ]
    masker = SamMasker(build_test_sam(), device="cpu")
    previous = install_runtime(WorkerRuntime(engine=tiny_engine, masker=masker))
    try:
        client = make_client(runner=InProcessRunner())
        # A random model writes until max_new_tokens: keep its answers short.
        setup = {"project": PROJECT, "schema": config}
        setup["extra_params"] = {"generation": {"max_new_tokens": 24}}
        client.post("/setup", json=setup)
        body = predict_body(
            [task(1, local_file("blue.png"))], config, {"result": clicks}
        )
        reply = client.post("/predict", json=body).get_json()
        plain = client.post(
            "/predict", json=predict_body(body["tasks"], config)
        ).get_json()
    finally:
        install_runtime(previous)
    assert "errors" not in reply, reply.get("errors")
    (region,) = reply["results"][0]["result"]
    assert (region["from_name"], region["type"]) == ("brush", "brushlabels")
    assert region["value"]["brushlabels"] == ["Car"]
    alpha = decode_rle(region["value"]["rle"]).reshape(120, 160, 4)[:, :, 3]
    assert set(np_unique(alpha)) <= {0, 255}
    assert LabelInterface(config).validate_prediction(reply["results"][0]) is True
    # Pre-annotation of the same config: detection + SAM box masks (possibly none
    # from a random model), never an error.
    assert "errors" not in plain, plain.get("errors")
    assert all(r["type"] == "brushlabels" for r in plain["results"][0]["result"])


def np_unique(array) -> list[int]:
    import numpy as np

    return [int(v) for v in np.unique(array)]
