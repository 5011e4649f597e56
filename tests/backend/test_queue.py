"""The chunk runners: RQ through a real Redis and a real rexlabel worker
process, and the in-process runner."""

from __future__ import annotations

import threading
import time

import pytest

from backend.queue import (
    InProcessRunner,
    RQRunner,
    create_runner,
    in_process_problem,
)
from common.queues import QUEUE_INTERACTIVE, RUN_CHUNK
from common.settings import SettingsError
from tests.backend.redis_helpers import (
    redis_or_skip,
    redis_url,
    start_worker,
    stop_worker,
    test_worker_command,
)

ECHO = "tests.backend.jobfuncs.echo_chunk"
FAIL = "tests.backend.jobfuncs.fail_chunk"
SLOW = "tests.backend.jobfuncs.slow_chunk"
NOT_A_DICT = "tests.backend.jobfuncs.not_a_dict"


def chunk(*ids: str, **extra) -> dict:
    return {
        "images": [
            {"id": i, "image": f"{i}.jpg", "calls": [{"task": "detection"}]}
            for i in ids
        ],
        **extra,
    }


@pytest.fixture(scope="module")
def redis_conn():
    return redis_or_skip()


@pytest.fixture(scope="module")
def worker(redis_conn):
    process = start_worker(test_worker_command("queue-test-worker"), redis_conn)
    yield process
    stop_worker(process)


@pytest.fixture
def clean_queues(redis_conn):
    runner = RQRunner(redis_conn)
    for queue in runner.queues.values():
        queue.empty()
    return runner


def test_defaults_name_the_real_job_function() -> None:
    assert InProcessRunner().function == RUN_CHUNK
    assert isinstance(create_runner(""), InProcessRunner)
    runner = create_runner(redis_url())
    assert isinstance(runner, RQRunner)
    assert runner.function == RUN_CHUNK


def _without(monkeypatch, *packages: str) -> None:
    """Make ``packages`` look uninstalled to the registry's find_spec look-up."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in packages else real(name, *a),
    )


def test_in_process_needs_the_engine_installed_here(monkeypatch) -> None:
    assert in_process_problem("", "transformers") is None  # this venv has torch
    _without(monkeypatch, "torch")
    problem = in_process_problem("", "transformers")
    assert "REDIS_URL is empty" in problem
    assert "REXLABEL_ENGINE=transformers needs torch, which is not" in problem
    assert "pip install 'rexlabel[worker]'" in problem
    with pytest.raises(SettingsError, match="needs torch"):
        create_runner("", "transformers")
    # workers run the model elsewhere; an HTTP engine needs nothing here
    assert in_process_problem(redis_url(), "transformers") is None
    assert isinstance(create_runner("", "openai"), InProcessRunner)


def test_a_backend_without_torch_or_redis_refuses_to_start(monkeypatch) -> None:
    from backend.app import create_app

    _without(monkeypatch, "torch", "transformers")
    with pytest.raises(SettingsError, match="needs torch and transformers, which are"):
        create_app({"REXLABEL_ENGINE": "transformers"})
    assert create_app({"REXLABEL_ENGINE": "openai"}) is not None


def test_unserved_job_is_taken_off_the_queue_after_the_deadline(redis_conn) -> None:
    from rq import Worker

    if Worker.count(connection=redis_conn):
        pytest.skip("a worker is registered on the test database (runs first)")
    runner = RQRunner(redis_conn, function=ECHO)
    runner.queues[QUEUE_INTERACTIVE].empty()
    (outcome,) = runner.run_many([chunk("a")], timeout=0.3)
    assert "no worker finished the job" in outcome.error
    assert runner.queues[QUEUE_INTERACTIVE].count == 0


def test_results_come_back_in_order_through_the_worker(redis_conn, worker) -> None:
    runner = RQRunner(redis_conn, function=ECHO)
    payloads = [chunk("a", "b"), chunk("c"), chunk("d", step=3)]
    outcomes = runner.run_many(payloads, timeout=30)
    assert [o.error for o in outcomes] == [None, None, None]
    assert [[i["id"] for i in o.result["images"]] for o in outcomes] == [
        ["a", "b"],
        ["c"],
        ["d"],
    ]
    # The payload crossed Redis as JSON and came back unchanged.
    assert outcomes[2].result["echo"] == payloads[2]
    # It ran in the worker process, not here.
    assert outcomes[0].result["pid"] == worker.pid


def test_a_failing_job_reports_the_workers_error(redis_conn, worker) -> None:
    outcomes = RQRunner(redis_conn, function=FAIL).run_many(
        [chunk("a", "b")], timeout=30
    )
    assert outcomes[0].result is None
    assert "ValueError: boom on 2 image(s)" in outcomes[0].error


def test_a_result_that_is_not_an_object_is_an_error(redis_conn, worker) -> None:
    (outcome,) = RQRunner(redis_conn, function=NOT_A_DICT).run_many(
        [chunk("a")], timeout=30
    )
    assert "returned list" in outcome.error


def test_deadline_gives_up_on_a_slow_job(redis_conn, worker, clean_queues) -> None:
    runner = RQRunner(redis_conn, function=SLOW)
    started = time.monotonic()
    (outcome,) = runner.run_many([chunk("a", sleep=2)], timeout=0.5)
    elapsed = time.monotonic() - started
    assert outcome.result is None
    assert "within 0 s" in outcome.error or "within 1 s" in outcome.error
    assert elapsed < 3


def test_urgent_jobs_go_to_the_front(redis_conn, clean_queues) -> None:
    runner = clean_queues
    first = runner.enqueue(chunk("x"))
    second = runner.enqueue(chunk("y"))
    click = runner.enqueue(chunk("z"), urgent=True)
    ids = runner.queues[QUEUE_INTERACTIVE].get_job_ids()
    for job in (first, second, click):
        runner.cancel(job)
    assert ids == [click.id, first.id, second.id]
    assert runner.queues[QUEUE_INTERACTIVE].count == 0


def test_status_counts_workers(redis_conn, worker) -> None:
    status = RQRunner(redis_conn).status()
    assert status["mode"] == "redis"
    assert status["queue_up"] is True
    assert status["workers"] >= 1
    assert set(status["queued"]) == {"rexlabel:interactive", "rexlabel:bulk"}


def test_redis_down_is_reported_not_raised() -> None:
    runner = RQRunner.from_url("redis://127.0.0.1:1/0")
    status = runner.status()
    assert status["queue_up"] is False
    assert "Redis" in status["error"]
    (outcome,) = runner.run_many([chunk("a")], timeout=1)
    assert outcome.error.startswith("could not enqueue the job")


def test_in_process_runner_runs_the_function_here() -> None:
    runner = InProcessRunner(function=ECHO)
    outcomes = runner.run_many([chunk("a"), chunk("b")], timeout=10)
    assert [o.result["images"][0]["id"] for o in outcomes] == ["a", "b"]
    assert runner.status() == {
        "mode": "in-process",
        "queue_up": True,
        "workers": 1,
        "model": {"state": "ready"},  # nothing to load for a test function
    }


def test_in_process_runner_failures_and_deadline() -> None:
    (outcome,) = InProcessRunner(function=FAIL).run_many([chunk("a")], timeout=10)
    assert outcome.error == "the worker failed: ValueError: boom on 1 image(s)"
    slow = InProcessRunner(function=SLOW)
    outcomes = slow.run_many([chunk("a", sleep=0.3), chunk("b")], timeout=0.1)
    assert outcomes[0].error is None
    assert "deadline passed" in outcomes[1].error


GATED = "tests.backend.jobfuncs.gated_chunk"


@pytest.fixture
def gate():
    """tests.backend.jobfuncs' gate, closed; opened again after the test."""
    from tests.backend import jobfuncs

    jobfuncs.GATE.clear()
    jobfuncs.ENTERED.clear()
    yield jobfuncs
    jobfuncs.GATE.set()


def _in_background(work) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(work()), daemon=True)
    thread.start()
    return thread, out


def test_a_request_waits_for_a_busy_model_only_until_its_deadline(gate) -> None:
    runner = InProcessRunner(function=GATED)
    holder, held = _in_background(lambda: runner.run_many([chunk("a")], timeout=60))
    assert gate.ENTERED.wait(30)
    (late,) = runner.run_many([chunk("b")], timeout=0.2)
    assert late.result is None
    assert late.error == (
        "model busy: deadline passed (0 s) while other requests used the model"
    )
    assert holder.is_alive()  # the first request still holds the model
    gate.GATE.set()
    holder.join()
    assert held[0][0].error is None and held[0][0].result["images"][0]["id"] == "a"


def test_the_deadline_also_bounds_waiting_behind_an_in_process_bulk_job(gate) -> None:
    """A background job in this process (``--inline``, no Redis) runs
    ``worker.jobs.run_chunk`` directly, under the runtime's own lock: a
    request must not wait on that lock past its deadline either."""
    from common.jobspec import ImageResult
    from worker import jobs

    def gated_process(runtime, images, generation):
        gate.ENTERED.set()
        gate.GATE.wait(30)
        return [ImageResult(id=image.id) for image in images]

    previous = jobs.install_runtime(
        jobs.WorkerRuntime(engine=None, process=gated_process)
    )
    try:
        bulk, _ = _in_background(lambda: jobs.run_chunk(chunk("bulk")))
        assert gate.ENTERED.wait(30)
        (late,) = InProcessRunner().run_many([chunk("b")], timeout=0.2)
        assert late.error.startswith("model busy: deadline passed")
        assert bulk.is_alive()
        gate.GATE.set()
        bulk.join()
        (served,) = InProcessRunner().run_many([chunk("c")], timeout=30)
        assert served.error is None
    finally:
        jobs.install_runtime(previous)


def test_in_process_requests_while_the_model_loads_or_after_it_failed() -> None:
    from tests.backend.jobfuncs import GatedLoad

    load = GatedLoad()
    runner = InProcessRunner(function=ECHO, load=load)
    runner.start()
    assert runner.status()["model"]["state"] == "loading"
    (outcome,) = runner.run_many([chunk("a")], timeout=0.1)
    assert outcome.result is None
    assert outcome.error.startswith("model still loading (")
    load.release()
    (outcome,) = runner.run_many([chunk("a")], timeout=30)
    assert outcome.error is None
    assert runner.status()["model"]["state"] == "ready"

    load.error = OSError("weights not found: nowhere/rex")
    broken = InProcessRunner(function=ECHO, load=load)
    outcomes = broken.run_many([chunk("a"), chunk("b")], timeout=30)
    assert [o.error for o in outcomes] == [
        "model failed to load: OSError: weights not found: nowhere/rex"
    ] * 2
    model = broken.status()["model"]
    assert model["state"] == "failed"
    assert model["reason"] == "OSError: weights not found: nowhere/rex"


def test_status_reports_loading_and_failed_workers(redis_conn) -> None:
    """Registered workers (the module's test worker may be one) are ready ones;
    workers still loading, or whose load failed, are counted beside them."""
    from common.model_state import LoadReporter

    runner = RQRunner(redis_conn)
    ready = runner.status()["workers"]
    assert runner.status()["model"]["state"] == ("ready" if ready else "no_workers")
    with LoadReporter(redis_conn, "queue-test-loading"):
        model = runner.status()["model"]
        assert model["loading"] == 1
        assert model["state"] == ("ready" if ready else "loading")
    with pytest.raises(MemoryError), LoadReporter(redis_conn, "queue-test-failed"):
        raise MemoryError("CUDA out of memory")
    model = runner.status()["model"]
    assert (model["loading"], model["failed"]) == (0, 1)
    assert model["state"] == ("ready" if ready else "failed")
    assert model["reason"] == "MemoryError: CUDA out of memory"
