"""worker.jobs.run_chunk: in this process, and through Redis on ``rexlabel worker``
processes running the tiny model, including a worker killed mid-chunk."""

from __future__ import annotations

import os
import signal

import pytest
from PIL import Image
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from common.jobspec import ImageResult, JobSpecError
from common.queues import QUEUE_BULK, RUN_CHUNK
from tests.worker.rq_helpers import (
    FAST_WORKER,
    empty_db,
    redis_or_skip,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)
from worker import jobs
from worker.jobs import WorkerRuntime, run_chunk

CALL = {
    "task": "detection",
    "categories": ["red square", "blue circle"],
    "generation": {"max_new_tokens": 24},
}


def _images(folder, count, size=(112, 96)):
    paths = []
    for i in range(count):
        path = folder / f"img{i:03d}.png"
        Image.new("RGB", size, (40 * (i % 6), 90, 160)).save(path)
        paths.append(str(path))
    return paths


def _payload(paths, **extra):
    return {
        "images": [
            {
                "id": f"im{i}",
                "image": p,
                "task_id": 100 + i,
                "calls": [CALL],
                "local_paths": True,  # the command line's own files
            }
            for i, p in enumerate(paths)
        ],
        **extra,
    }


@pytest.fixture
def tiny_runtime(tiny_engine):
    previous = jobs.install_runtime(WorkerRuntime(engine=tiny_engine))
    yield
    jobs.install_runtime(previous)


def test_run_chunk_in_process_returns_one_result_per_image(tiny_runtime, tmp_path):
    paths = _images(tmp_path, 2)
    payload = _payload(
        [paths[0], str(tmp_path / "missing.png"), paths[1]], job="j1", chunk=3
    )
    out = run_chunk(payload)
    assert out["job"] == "j1" and out["chunk"] == 3
    results = [ImageResult.from_dict(r) for r in out["images"]]
    assert [r.id for r in results] == ["im0", "im1", "im2"]
    assert [r.task_id for r in results] == [100, 101, 102]
    assert results[1].error and "missing.png" in results[1].error
    for good in (results[0], results[2]):
        assert good.error is None
        assert (good.width, good.height) == (112, 96)
        assert len(good.calls) == 1
        call = good.calls[0]
        assert call.task.value == "detection" and call.raw_text
        assert call.output_tokens > 0
    # the payload is plain JSON both ways
    import json

    assert json.loads(json.dumps(out)) == out


def test_malformed_chunk_names_the_bad_field(tiny_runtime):
    with pytest.raises(JobSpecError, match="images"):
        run_chunk({"pictures": []})
    with pytest.raises(JobSpecError, match="calls"):
        run_chunk({"images": [{"id": "1", "image": "x.png", "calls": []}]})
    with pytest.raises(JobSpecError, match="unknown field"):
        run_chunk(
            {
                "images": [
                    {
                        "id": "1",
                        "image": "x.png",
                        "calls": [{"task": "detection", "colour": "red"}],
                    }
                ]
            }
        )


def test_runtime_is_loaded_once_from_the_settings(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("REXLABEL_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("REXLABEL_DEVICE", "cpu")
    monkeypatch.setenv("SAM_CHECKPOINT", "")
    previous = jobs.install_runtime(None)
    try:
        first = jobs.current_runtime()
        assert jobs.current_runtime() is first
        assert first.model_id == str(tiny_model_dir)
    finally:
        jobs.install_runtime(previous)
        first.close()


@pytest.fixture
def redis_conn():
    connection = redis_or_skip()
    yield connection
    empty_db(connection)


@pytest.mark.slow
def test_worker_process_runs_a_chunk_from_redis(redis_conn, tiny_model_dir, tmp_path):
    paths = _images(tmp_path, 3)
    queue = Queue(QUEUE_BULK, connection=redis_conn, serializer=JSONSerializer)
    job = queue.enqueue(RUN_CHUNK, _payload(paths, job="j", chunk=0), job_timeout=120)
    process = start_worker(
        redis_conn, worker_env(tiny_model_dir), name="w1", log_path=tmp_path / "w1.log"
    )
    try:
        wait_for(
            lambda: job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED),
            120,
            "the chunk to finish",
        )
        assert job.get_status() == JobStatus.FINISHED, job.latest_result().exc_string
        out = job.return_value()
        assert [r["id"] for r in out["images"]] == ["im0", "im1", "im2"]
        assert all(
            r["error"] is None and r["calls"][0]["raw_text"] for r in out["images"]
        )
        assert out["model"] == str(tiny_model_dir)
    finally:
        assert stop_worker(process) == 0


@pytest.mark.slow
def test_chunk_of_a_worker_killed_mid_chunk_runs_again_elsewhere(
    redis_conn, tiny_model_dir, tmp_path
):
    """kill -9 the worker while it runs a chunk: the chunk is re-run by a
    second worker and its results hold every image exactly once."""
    paths = _images(tmp_path, 24)
    queue = Queue(QUEUE_BULK, connection=redis_conn, serializer=JSONSerializer)
    payload = _payload(paths, job="kill", chunk=7)
    payload["images"][0]["calls"] = [{**CALL, "generation": {"max_new_tokens": 256}}]
    job = queue.enqueue(
        RUN_CHUNK,
        payload,
        job_id="rexlabel-kill-000007",
        retry=Retry(max=2),
        job_timeout=600,
    )
    env = worker_env(tiny_model_dir)
    first = start_worker(
        redis_conn, env, *FAST_WORKER, name="doomed", log_path=tmp_path / "doomed.log"
    )
    try:
        wait_for(
            lambda: job.get_status() == JobStatus.STARTED, 60, "the chunk to start"
        )
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
        assert job.get_status() == JobStatus.STARTED  # nobody knows yet
    finally:
        if first.poll() is None:
            first.kill()
    second = start_worker(
        redis_conn, env, *FAST_WORKER, name="rescuer", log_path=tmp_path / "rescuer.log"
    )
    try:
        wait_for(
            lambda: job.get_status() == JobStatus.FINISHED,
            180,
            "the chunk to finish on the second worker",
            0.1,
        )
        done = Job.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
        assert done.worker_name == "rescuer"
        assert done.retries_left == 1  # one retry spent on the abandoned run
        ids = [r["id"] for r in done.return_value()["images"]]
        assert ids == [f"im{i}" for i in range(24)]  # all, once, in order
        assert all(r["error"] is None for r in done.return_value()["images"])
    finally:
        assert stop_worker(second) == 0
