"""common.metrics: /metrics on a Flask app and on a worker, queue depth from Redis."""

from __future__ import annotations

import io
import json
import logging
import socket
import uuid

import pytest
import requests
from flask import Flask, abort, jsonify
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from backend import instrumentation
from common import logs, metrics
from common.jobspec import CallResult, ImageResult
from converters.tasks import Task
from worker import metrics_server

REDIS_URL = "redis://127.0.0.1:6379/0"


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_conn():
    conn = Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except Exception as exc:  # pragma: no cover - CI starts Redis
        pytest.skip(f"Redis at {REDIS_URL} is not running: {exc}")
    yield conn
    conn.close()


@pytest.fixture
def unwatch():
    yield
    metrics.QUEUES_COLLECTOR.watch(None, ())


def _app(**kwargs) -> Flask:
    app = Flask("metrics-test")

    @app.post("/predict")
    def predict():
        return jsonify({"results": []})

    @app.get("/boom")
    def boom():
        raise RuntimeError("model crashed")

    @app.before_request
    def basic_auth():  # answers early, like the backend's basic auth
        from flask import request

        if request.path == "/secret":
            abort(401)

    @app.get("/secret")
    def secret():  # pragma: no cover - never reached
        return "no"

    instrumentation.instrument_flask(app, **kwargs)
    return app


def _scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    families = text_string_to_metric_families(response.get_data(as_text=True))
    return {family.name: family.samples for family in families}


def test_requests_errors_and_durations_are_counted(redis_conn, unwatch):
    queues = [
        f"rexlabel-test:{uuid.uuid4().hex}:a",
        f"rexlabel-test:{uuid.uuid4().hex}:b",
    ]
    app = _app(connection=lambda: redis_conn, queues=queues)
    client = app.test_client()
    before = {
        "predict": _value(
            "rexlabel_requests_total", endpoint="/predict", method="POST", status="200"
        ),
        "errors": _value("rexlabel_request_errors_total", endpoint="/boom"),
        "auth": _value(
            "rexlabel_requests_total", endpoint="/secret", method="GET", status="401"
        ),
        "unmatched": _value(
            "rexlabel_requests_total",
            endpoint="<unmatched>",
            method="GET",
            status="404",
        ),
        "timed": _value("rexlabel_request_duration_seconds_count", endpoint="/predict"),
    }
    for _ in range(3):
        assert client.post("/predict", json={"tasks": [{"id": 1}]}).status_code == 200
    assert client.get("/boom").status_code == 500
    assert client.get("/secret").status_code == 401
    assert client.get("/no/such/path/123").status_code == 404

    samples = _scrape(client)
    requests_total = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in samples["rexlabel_requests"]
    }
    assert requests_total[("/predict", "200")] == before["predict"] + 3
    assert requests_total[("/secret", "401")] == before["auth"] + 1
    assert requests_total[("<unmatched>", "404")] == before["unmatched"] + 1
    errors = {s.labels["endpoint"]: s.value for s in samples["rexlabel_request_errors"]}
    assert errors["/boom"] == before["errors"] + 1
    assert (
        _value("rexlabel_request_duration_seconds_count", endpoint="/predict")
        == before["timed"] + 3
    )
    # queue depth and workers came from Redis during the scrape
    assert {s.labels["queue"] for s in samples["rexlabel_queue_depth"]} == set(queues)
    assert [s.value for s in samples["rexlabel_redis_up"]] == [1.0]


def test_an_unhandled_exception_that_propagates_still_counts(unwatch):
    app = _app(connection=None, queues=())
    app.config["PROPAGATE_EXCEPTIONS"] = True
    before = _value("rexlabel_request_errors_total", endpoint="/boom")
    with pytest.raises(RuntimeError, match="model crashed"):
        app.test_client().get("/boom")
    assert _value("rexlabel_request_errors_total", endpoint="/boom") == before + 1


def test_queue_depth_counts_enqueued_jobs(redis_conn, unwatch):
    name = f"rexlabel-test:{uuid.uuid4().hex}"
    queue = Queue(name, connection=redis_conn, serializer=JSONSerializer)
    try:
        for i in range(3):
            queue.enqueue(
                "worker.jobs.run_chunk",
                {"images": []},
                job_id=f"rexlabel-test-{uuid.uuid4().hex}",
            )
        metrics.watch_queues(lambda: redis_conn, [name])
        assert _value("rexlabel_queue_depth", queue=name) == 3
        assert _value("rexlabel_workers", queue=name) == 0
        assert _value("rexlabel_redis_up") == 1
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)


def test_redis_down_reports_redis_up_zero_and_scrape_still_works(unwatch):
    port = _free_port()  # nothing listens there
    app = _app(
        connection=lambda: Redis(host="127.0.0.1", port=port, socket_connect_timeout=1),
        queues=["rexlabel:interactive"],
    )
    samples = _scrape(app.test_client())
    assert [s.value for s in samples["rexlabel_redis_up"]] == [0.0]
    assert "rexlabel_queue_depth" not in samples


def test_default_connection_comes_from_redis_url(monkeypatch, unwatch):
    monkeypatch.setenv("REDIS_URL", REDIS_URL)
    factory = metrics.redis_from_settings()
    assert factory is not None and factory() is factory()
    monkeypatch.setenv("REDIS_URL", "")
    assert metrics.redis_from_settings() is None


def test_each_request_logs_one_line_with_task_ids(unwatch):
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        logs.configure_logging(stream=stream, environ={"LOG_FORMAT": "json"})
        client = _app(connection=None, queues=()).test_client()
        client.post("/predict", json={"tasks": [{"id": 11}, {"id": 12}]})
        client.get("/metrics")  # scrapes are not logged
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (entry,) = [e for e in lines if e.get("event") == "request"]
    assert entry["path"] == "/predict" and entry["status"] == 200
    assert entry["task_ids"] == [11, 12]
    assert entry["duration_s"] >= 0


def test_a_view_adds_its_work_to_the_request_line(unwatch):
    app = Flask("metrics-annotate-test")

    @app.post("/predict")
    def predict():
        instrumentation.annotate_request(images=2, generate_s=0.5)
        instrumentation.annotate_request(output_tokens=40)  # later calls add fields
        return jsonify({"results": []})

    instrumentation.instrument_flask(app, connection=None, queues=())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        logs.configure_logging(stream=stream, environ={"LOG_FORMAT": "json"})
        client = app.test_client()
        client.post("/predict", json={"tasks": [{"id": 3}]})
        client.post("/predict-missing", json={})  # a later request starts clean
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    first, second = [
        json.loads(line)
        for line in stream.getvalue().splitlines()
        if json.loads(line).get("event") == "request"
    ]
    assert (first["images"], first["generate_s"], first["output_tokens"]) == (
        2,
        0.5,
        40,
    )
    assert first["task_ids"] == [3]
    assert second["status"] == 404 and "images" not in second
    instrumentation.annotate_request(images=1)  # outside a request: nothing, no error


MAX_BODY_BYTES = 1024
"""Body limit of the 413 tests' app; their oversized bodies are ~10 KB."""


def _oversized_body() -> dict:
    return {"tasks": [{"id": i, "data": {"image": "x" * 64}} for i in range(100)]}


def _limited_app() -> Flask:
    """An app with MAX_CONTENT_LENGTH whose /predict reads the body, as the
    backend's does, and whose basic auth answers before any view reads it."""
    from flask import request

    app = Flask("metrics-413-test")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES

    @app.post("/predict")
    def predict():
        return jsonify({"results": [None] * len(request.get_json()["tasks"])})

    @app.before_request
    def basic_auth():
        if request.path == "/secret":
            abort(401)

    @app.post("/secret")
    def secret():  # pragma: no cover - never reached
        return "no"

    instrumentation.instrument_flask(app, connection=None, queues=())
    return app


def test_an_oversized_body_stays_413_and_is_counted_as_413(unwatch):
    client = _limited_app().test_client()
    labels = {"endpoint": "/predict", "method": "POST"}
    before = {
        "413": _value("rexlabel_requests_total", **labels, status="413"),
        "500": _value("rexlabel_requests_total", **labels, status="500"),
        "errors": _value("rexlabel_request_errors_total", endpoint="/predict"),
    }
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    try:
        logs.configure_logging(stream=stream, environ={"LOG_FORMAT": "json"})
        response = client.post("/predict", json=_oversized_body())
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert response.status_code == 413
    assert "exceeds the capacity limit" in response.get_data(as_text=True)
    assert _value("rexlabel_requests_total", **labels, status="413") == (
        before["413"] + 1
    )
    assert _value("rexlabel_requests_total", **labels, status="500") == before["500"]
    assert (
        _value("rexlabel_request_errors_total", endpoint="/predict") == before["errors"]
    )
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    (entry,) = [e for e in lines if e.get("event") == "request"]
    assert entry["status"] == 413 and entry["task_ids"] == []
    # Bodies within the limit are answered as before.
    assert client.post("/predict", json={"tasks": [{"id": 5}]}).status_code == 200


def test_an_early_answer_to_an_oversized_body_keeps_its_status(unwatch):
    before = _value(
        "rexlabel_requests_total", endpoint="/secret", method="POST", status="401"
    )
    response = _limited_app().test_client().post("/secret", json=_oversized_body())
    assert response.status_code == 401
    assert (
        _value(
            "rexlabel_requests_total", endpoint="/secret", method="POST", status="401"
        )
        == before + 1
    )


def _chunk() -> list[ImageResult]:
    call = CallResult(
        key="k",
        task=Task.DETECTION,
        predictions=[],
        prompt_tokens=200,
        output_tokens=50,
        truncated=True,
        timings={"generate": 1.5},
    )
    return [
        ImageResult(id="1", task_id=1, calls=[call]),
        ImageResult(id="2", task_id=2, error="cannot decode image"),
    ]


def test_observe_job_counts_images_tokens_generation_and_truncation():
    before = {
        "jobs": _value("rexlabel_jobs_total", queue="q-test", status="done"),
        "ok": _value("rexlabel_images_total", status="ok"),
        "failed": _value("rexlabel_images_total", status="failed"),
        "prompt": _value("rexlabel_tokens_total", kind="prompt"),
        "output": _value("rexlabel_tokens_total", kind="output"),
        "gen": _value("rexlabel_generation_seconds_count"),
        "gen_sum": _value("rexlabel_generation_seconds_sum"),
        "trunc": _value("rexlabel_truncated_generations_total"),
        "job_s": _value("rexlabel_job_duration_seconds_count", queue="q-test"),
    }
    summary = metrics.observe_job("q-test", 2.0, _chunk())
    assert summary["images"] == 2 and summary["failed"] == 1
    assert (
        _value("rexlabel_jobs_total", queue="q-test", status="done")
        == before["jobs"] + 1
    )
    assert _value("rexlabel_images_total", status="ok") == before["ok"] + 1
    assert _value("rexlabel_images_total", status="failed") == before["failed"] + 1
    assert _value("rexlabel_tokens_total", kind="prompt") == before["prompt"] + 200
    assert _value("rexlabel_tokens_total", kind="output") == before["output"] + 50
    assert _value("rexlabel_generation_seconds_count") == before["gen"] + 1
    assert _value("rexlabel_generation_seconds_sum") == before["gen_sum"] + 1.5
    assert _value("rexlabel_truncated_generations_total") == before["trunc"] + 1
    assert (
        _value("rexlabel_job_duration_seconds_count", queue="q-test")
        == before["job_s"] + 1
    )


def test_worker_endpoint_serves_metrics_and_the_healthcheck_passes():
    port = metrics_server.start_worker_metrics_server(
        port=_free_port(), addr="127.0.0.1"
    )
    assert port
    metrics.observe_job("q-http", 0.5, _chunk())
    body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'rexlabel_jobs_total{queue="q-http",status="done"}' in body
    assert (
        metrics_server.check_metrics_endpoint(f"http://127.0.0.1:{port}/metrics")
        is None
    )
    assert metrics_server.main(["--check", "--port", str(port)]) == 0


def test_a_taken_port_is_a_warning_not_a_crash(caplog):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="worker.metrics_server"):
            assert (
                metrics_server.start_worker_metrics_server(port=port, addr="127.0.0.1")
                is None
            )
    assert "REXLABEL_WORKER_METRICS_PORT" in caplog.text


def test_port_zero_disables_and_the_healthcheck_fails_without_a_server(monkeypatch):
    monkeypatch.setenv("REXLABEL_WORKER_METRICS_PORT", "0")
    assert metrics_server.start_worker_metrics_server() is None
    assert metrics_server.main(["--check"]) == 1
    closed = _free_port()
    assert "not reachable" in metrics_server.check_metrics_endpoint(
        f"http://127.0.0.1:{closed}/metrics", timeout=1
    )
    assert metrics_server.main(["--check", "--port", str(closed)]) == 1


def chunk_job(payload: dict) -> dict:
    """Run by a real RQ worker in the test below (importable by dotted path)."""
    return metrics.record_chunk(payload, _chunk(), 0.25)


def test_record_chunk_outside_rq_logs_one_line_and_counts(caplog):
    before = _value("rexlabel_jobs_total", queue="in-process", status="done")
    with caplog.at_level(logging.INFO, logger="common.metrics"):
        summary = metrics.record_chunk({"job": "j1", "chunk": 3}, _chunk(), 1.5)
    assert summary["images"] == 2
    assert _value("rexlabel_jobs_total", queue="in-process", status="done") == (
        before + 1
    )
    (record,) = [r for r in caplog.records if getattr(r, "event", "") == "job"]
    assert record.job_id == "j1-3" and record.queue == "in-process"
    assert record.task_ids == [1, 2] and record.failed_images == 1
    assert record.generate_s == 1.5 and record.prompt_tokens == 200


def test_record_chunk_inside_an_rq_job_uses_its_queue_and_id(redis_conn):
    from rq import SimpleWorker

    name = f"rexlabel-test-{uuid.uuid4().hex}"
    queue = Queue(name, connection=redis_conn, serializer=JSONSerializer)
    before = _value("rexlabel_jobs_total", queue=name, status="done")
    try:
        job = queue.enqueue(
            "tests.common.test_metrics.chunk_job", {"job": "x"}, job_id=name
        )
        worker = SimpleWorker([queue], connection=redis_conn, serializer=JSONSerializer)
        assert worker.work(burst=True)
        job.refresh()
        assert job.is_finished, job.latest_result()
        assert job.return_value()["images"] == 2
    finally:
        queue.empty()
        queue.delete(delete_jobs=True)
    assert _value("rexlabel_jobs_total", queue=name, status="done") == before + 1


def _label_sets(name: str) -> set[tuple]:
    """Every label set of metric family ``name`` in the default registry."""
    return {
        tuple(sorted(sample.labels.items()))
        for family in REGISTRY.collect()
        if family.name == name
        for sample in family.samples
    }


def test_random_methods_and_paths_add_no_label_sets(unwatch):
    """Whatever method and path a client sends (before any auth), the
    request metrics keep a fixed set of label values: a route rule or
    ``<unmatched>``, a known method or ``other``."""
    client = _app(log_requests=False).test_client()

    def noise() -> None:
        token = uuid.uuid4().hex
        client.open(f"/{token}", method=token.upper())
        client.open("/predict", method=token[:12].upper())
        client.open(f"/secret/{token}", method="DELETE")
        client.open("/secret", method=token.lower())

    names = ("rexlabel_requests", "rexlabel_request_duration_seconds")
    noise()  # each kind of request once: its label sets exist from now on
    before = {name: _label_sets(name) for name in names}
    for _ in range(300):
        noise()
    for name in names:
        assert _label_sets(name) == before[name], name
    methods = {dict(s).get("method") for s in before["rexlabel_requests"]}
    assert methods <= instrumentation.METHOD_LABELS | {
        instrumentation.OTHER_METHOD,
        None,
    }
