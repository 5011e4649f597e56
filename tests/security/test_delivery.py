"""Each task gets one prediction per model version, however delivery goes wrong.

Against the shared fake Label Studio (tests/fake_label_studio.py), with the
model answered by FakeChat through the real openai engine, so the real bulk
path runs: a POST that Label Studio stored but answered with an error, a
``--retry-failed`` over a task that has its prediction already, a Redis error
after a chunk was delivered (real Redis, real ``rexlabel worker``), and a
``/predict`` asked again after its background job failed some tasks (a real
``rexlabel serve``).
"""

from __future__ import annotations

import os

import pytest
import redis

from backend.bulk import runner
from backend.bulk.orchestration import start_for_tasks
from backend.bulk.store import JobStore
from backend.cli import main
from backend.model_version import model_version
from common.images import loader as image_loader
from common.labelstudio.api import LabelStudioAPIError, LabelStudioClient
from tests.backend.bulk_helpers import redis_or_skip, redis_url, wait_for
from tests.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio
from tests.security.conftest import FakeChat, png_bytes, serve
from tests.worker.rq_helpers import start_worker, stop_worker
from worker import jobs
from worker.engines.registry import create_engine
from worker.jobs import WorkerRuntime

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="shape"/>'
    "</RectangleLabels></View>"
)
PROJECT = 7
TASKS = (1, 2, 3, 4)
RESULT = [
    {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": 1, "y": 2, "width": 3, "height": 4, "rectanglelabels": ["a"]},
    }
]
JOB_WAIT_S = 120.0
"""Generous bound for a background job of four images on a fake model."""


def _image_name(task_id: int) -> str:
    return f"{PROJECT}/t{task_id}.png"


def _task(task_id: int) -> dict:
    return {"id": task_id, "data": {"image": f"/data/upload/{_image_name(task_id)}"}}


def _counts(ls: FakeLabelStudio) -> dict[int, int]:
    """Predictions per task (every one in these tests is rexlabel's)."""
    return {t: len(ls.predictions_of(t)) for t in TASKS}


def _post_count(ls: FakeLabelStudio) -> int:
    """Prediction POSTs Label Studio received."""
    return ls.paths_requested("POST").count("/api/predictions/")


def _start(ls: FakeLabelStudio, tasks=TASKS, **kwargs) -> str:
    """``start_for_tasks`` over ``tasks`` as a large /predict starts it (tasks
    used as sent), run in this thread; returns the job id."""
    kwargs.setdefault("source", "predict")
    return start_for_tasks(
        [_task(t) for t in tasks],
        project=str(PROJECT),
        label_config=CONFIG,
        extra_params={},
        model_version=ls.version,
        background=False,
        **kwargs,
    )


@pytest.fixture
def ls(tmp_path, monkeypatch):
    """The fake Label Studio with TASKS, LABEL_STUDIO_* set to it, and the
    in-process model answered by FakeChat."""
    with FakeChat() as chat, FakeLabelStudio() as server:
        server.add_project(PROJECT, CONFIG)
        for task_id in TASKS:
            server.files[_image_name(task_id)] = png_bytes()
            server.add_task(PROJECT, task_id, _task(task_id)["data"])
        server.chat = chat
        monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.pat)
        monkeypatch.setenv("REXLABEL_JOBS_DIR", str(tmp_path / "jobs"))
        monkeypatch.setenv("REXLABEL_ENGINE", "openai")
        monkeypatch.setenv("REXLABEL_OPENAI_URL", chat.api_url)
        for name in ("REDIS_URL", "SAM_CHECKPOINT", "REXLABEL_MODEL"):
            monkeypatch.delenv(name, raising=False)
        image_loader.default_loader.cache_clear()  # it read the old URL/token
        previous = jobs.install_runtime(WorkerRuntime(engine=create_engine()))
        server.version = model_version(CONFIG, {})  # the CLI's, in this environment
        yield server
        jobs.install_runtime(previous)
        image_loader.default_loader.cache_clear()


# 6a: a POST is never repeated blindly ------------------------------------------


@pytest.mark.parametrize("answer", [500, 502, None], ids=["500", "502", "dropped"])
def test_a_prediction_stored_despite_an_error_is_not_posted_again(ls, answer):
    ls.fail_after_store = 10  # every POST is stored, then answered badly
    ls.fail_after_store_with = answer
    client = LabelStudioClient(ls.url, ls.pat)
    created = client.create_prediction(1, RESULT, score=0.5, model_version=ls.version)
    assert len(ls.predictions_of(1)) == 1
    assert created["id"] == ls.predictions_of(1)[0]["id"]
    assert _post_count(ls) == 1


def test_a_post_refused_before_storing_is_posted_once_more(ls):
    ls.fail_next = 1  # the POST answers 503 and stores nothing
    client = LabelStudioClient(ls.url, LEGACY_TOKEN)
    client.create_prediction(2, RESULT, score=None, model_version=ls.version)
    assert len(ls.predictions_of(2)) == 1
    assert "/api/predictions/?task=2" in ls.paths_requested("GET")  # checked first


def test_a_post_failing_for_good_is_reported_after_checking(ls):
    ls.fail_next = 100
    client = LabelStudioClient(ls.url, LEGACY_TOKEN, retries=2)
    with pytest.raises(LabelStudioAPIError, match="HTTP 503"):
        client.create_prediction(3, RESULT, score=None, model_version=ls.version)
    assert ls.predictions_of(3) == []


# 6b: --retry-failed skips tasks that hold the prediction ----------------------


def test_retry_failed_posts_only_the_missing_predictions(ls):
    missing = ls.files.pop(_image_name(2))
    args = ["prelabel", "--project", str(PROJECT), "--inline", "--quiet"]
    assert main([*args, "--chunk-size", "2"]) == 3  # task 2 failed
    assert _counts(ls) == {1: 1, 2: 0, 3: 1, 4: 1}
    # meanwhile task 2 got this model version's prediction (another run, or a
    # POST stored after its answer was lost), and task 2's image is back
    ls.add_prediction(2, RESULT, ls.version)
    ls.files[_image_name(2)] = missing
    posts = _post_count(ls)
    assert main([*args, "--retry-failed"]) == 0
    assert _counts(ls) == {1: 1, 2: 1, 3: 1, 4: 1}
    assert _post_count(ls) == posts  # nothing posted again


# 6c: a Redis error after delivery delivers nothing twice -----------------------


def test_a_redis_error_after_delivery_posts_each_task_once(ls, tmp_path, monkeypatch):
    connection = redis_or_skip()
    env = {
        "REDIS_URL": redis_url(),
        "LOG_LEVEL": "WARNING",
        "REXLABEL_WORKER_METRICS_PORT": "0",
    }
    monkeypatch.setenv("REDIS_URL", redis_url())
    worker = start_worker(
        connection,
        {**os.environ, **env},
        name="delivery-worker",
        log_path=tmp_path / "worker.log",
    )
    store = JobStore(tmp_path / "jobs", connection)
    real_save = JobStore.save_record
    failures = []

    def save_record(self, job, record):
        """Redis drops the connection once, right after the first delivery."""
        if job.done_chunks() and not failures:
            failures.append(record.chunks_done)
            raise redis.ConnectionError("Connection reset by peer")
        return real_save(self, job, record)

    monkeypatch.setattr(JobStore, "save_record", save_record)
    monkeypatch.setattr(runner, "RECORD_INTERVAL_S", 0.0)  # save after each chunk
    try:
        job_id = _start(ls, store=store)
    finally:
        stop_worker(worker)
    assert failures, "the simulated Redis error never happened"
    assert _counts(ls) == {t: 1 for t in TASKS}
    record = store.record(job_id)
    assert record.status == "done"
    assert record.done == record.total == len(TASKS) and record.failed == 0
    assert LabelStudioClient(ls.url, ls.pat).has_prediction(1, ls.version)


# 7: a repeated /predict retries the failed tasks, and only those --------------


def test_a_repeated_predict_retries_the_tasks_its_job_failed(ls, tmp_path):
    jobs_dir = tmp_path / "served-jobs"
    env = {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.pat,
        "REXLABEL_ENGINE": "openai",
        "REXLABEL_OPENAI_URL": ls.chat.api_url,
        "REXLABEL_SYNC_TASK_LIMIT": "1",
        "REXLABEL_JOBS_DIR": str(jobs_dir),
        "BASIC_AUTH_USER": "labeler",
        "BASIC_AUTH_PASS": "a-long-test-password",
    }
    body = {"tasks": [_task(t) for t in TASKS], "label_config": CONFIG}
    missing = ls.files.pop(_image_name(3))  # 404 the first time
    store = JobStore(jobs_dir)

    def finished(job_id: str, failed: int):
        def check():
            try:
                record = store.record(job_id)
            except Exception:
                return None
            return record.status == "done" and record.failed == failed and record

        return check

    with serve(tmp_path, env) as served:
        auth = ("labeler", "a-long-test-password")
        first = served.post("/predict", body, auth=auth)
        assert first.status_code == 200, first.text
        job_id = first.json()["background_job"]
        wait_for(finished(job_id, 1), JOB_WAIT_S, "the first run", 0.1)
        assert _counts(ls) == {1: 1, 2: 1, 3: 0, 4: 1}
        assert _post_count(ls) == 3

        ls.files[_image_name(3)] = missing
        again = served.post("/predict", body, auth=auth)
        assert again.json()["background_job"] == job_id
        wait_for(finished(job_id, 0), JOB_WAIT_S, "the retry", 0.1)
    assert _counts(ls) == {t: 1 for t in TASKS}
    assert _post_count(ls) == 4  # only task 3 was posted again
    assert store.record(job_id).done == len(TASKS)


def test_a_repeat_of_a_clean_or_running_job_runs_nothing(ls, tmp_path):
    job_id = _start(ls)
    assert _counts(ls) == {t: 1 for t in TASKS}
    requests_before = len(ls.requests)
    assert _start(ls) == job_id  # finished cleanly: nothing new
    job = JobStore(tmp_path / "jobs").get(job_id)
    job.acquire()  # another runner holds the job
    try:
        assert _start(ls) == job_id  # running: no second runner
    finally:
        job.release()
    assert len(ls.requests) == requests_before


def test_overlapping_jobs_post_each_task_once(ls, tmp_path):
    first = _start(ls, tasks=(1, 2))
    second = _start(ls)  # other inputs, so another job, over tasks 1 and 2 again
    assert first != second
    assert _counts(ls) == {t: 1 for t in TASKS}
    record = JobStore(tmp_path / "jobs").record(second)
    assert (record.done, record.skipped, record.failed) == (2, 2, 0)
