"""worker.training_job: a training job runs a real child process (a stand-in
with ``rexlabel finetune``'s contract, tests/worker/finetune_child.py) and
reports to a real Redis; a real RexWorker runs it from the train queue."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import pytest
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer

from common import training_jobs as records
from common.model_store import read_pointer, write_card
from common.queues import QUEUE_TRAIN
from common.training_jobs import TrainingRequest, TrainingRequestError
from tests.worker.rq_helpers import empty_db, redis_or_skip, wait_for
from worker import training_job
from worker.process import build_worker
from worker.training_job import TrainingFailed, train

CHILD = Path(__file__).with_name("finetune_child.py")
WAIT_S = 30
"""A child on this stand-in reports within a second; CI can be slow."""


@pytest.fixture
def redis_conn():
    connection = redis_or_skip()
    yield connection
    empty_db(connection)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    """Record writes and cancel checks every 50 ms (seconds in production)."""
    monkeypatch.setattr(training_job, "PROGRESS_WRITE_S", 0.05)
    monkeypatch.setattr(training_job, "POLL_S", 0.05)


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    root = tmp_path / "models"
    monkeypatch.setenv("REXLABEL_MODELS_DIR", str(root))
    return root


def use_child(monkeypatch, mode: str) -> None:
    """Run the stand-in in ``mode`` instead of ``rexlabel finetune``."""
    monkeypatch.setattr(
        training_job, "FINETUNE_ARGV", (sys.executable, str(CHILD), mode)
    )


def queued(connection, job_id: str, project: int = 7, options=None) -> None:
    record = records.new_record(job_id, project, options or {}, "test")
    records.save_record(connection, record)


def published_run(root: Path, project: int, name: str) -> None:
    """A finished run ``name`` the project's pointer names."""
    run = root / f"project-{project}" / name
    run.mkdir(parents=True)
    write_card(run, {"method": "full"})
    (run.parent / "current").write_text(name + "\n")


def test_a_finished_run_is_published_and_its_progress_recorded(
    redis_conn, models_root, monkeypatch
):
    use_child(monkeypatch, "ok")
    queued(redis_conn, "train-ok1", options={"steps": 4, "batch_size": 2})
    result = train(
        {"project": 7, "options": {"steps": 4, "batch_size": 2}},
        redis_conn,
        "train-ok1",
    )
    record = records.read_record(redis_conn, "train-ok1")
    models_dir = models_root / "project-7"
    assert result["state"] == record["state"] == "finished"
    assert record["run"] == result["run"] and record["run"].endswith("-ok1")
    assert record["out"] == str(models_dir / record["run"])
    assert read_pointer(models_dir) == record["run"]
    assert (record["step"], record["steps"]) == (4, 4)
    assert record["loss"] == pytest.approx(0.25)
    assert record["examples"] == {
        "train": 40,
        "val": 4,
        "replay": 0,
        "replay_requests": 44,
        "skipped_no_annotation": 40,
        "skipped_no_image": 0,
    }
    assert record["metrics"] == {"val_loss": 0.25} == result["metrics"]
    assert record["ended"] >= record["started"] >= record["created"]
    argv = json.loads((models_dir / record["run"] / "argv.json").read_text())
    assert argv == [
        "--base=IDEA-Research/Rex-Omni",  # REXLABEL_MODEL's default
        "--project",
        "7",
        "--out",
        record["out"],
        "--progress",
        "json",
        "--steps=4",
        "--batch-size=2",
    ]


def test_runs_start_from_the_original_base_never_from_a_served_run(
    tmp_path, monkeypatch
):
    """A trainer whose REXLABEL_MODEL is project 3's models directory starts
    every project (3 included) from the weights no run made: runs never stack
    and project 3's run never seeds project 5's."""
    from common.model_store import publish, write_card
    from worker.training_job import finetune_argv

    project_3 = tmp_path / "project-3"
    first = project_3 / "run-a"
    second = project_3 / "run-b"
    for run, base in ((first, "hub/rex"), (second, str(first))):
        run.mkdir(parents=True)
        write_card(run, {"method": "lora", "base": base, "weights_sha256": run.name})
    publish(project_3, "run-b")
    monkeypatch.setenv("REXLABEL_MODEL", str(project_3))
    argv = finetune_argv(5, tmp_path / "out", {})
    assert "--base=hub/rex" in argv


def test_a_failed_run_keeps_the_old_pointer_and_records_the_error(
    redis_conn, models_root, monkeypatch
):
    published_run(models_root, 7, "run-old")
    use_child(monkeypatch, "fail")
    queued(redis_conn, "train-fail1")
    with pytest.raises(TrainingFailed, match="exited with 1: project 7 has no ann"):
        train({"project": 7, "options": {}}, redis_conn, "train-fail1")
    record = records.read_record(redis_conn, "train-fail1")
    assert record["state"] == "failed"
    assert record["error"] == (
        "rexlabel finetune exited with 1: project 7 has no annotations"
    )
    assert read_pointer(models_root / "project-7") == "run-old"
    assert Path(record["out"]).is_dir()  # the run's directory is kept


def test_without_an_error_event_the_stderr_tail_is_the_reason(
    redis_conn, models_root, monkeypatch
):
    use_child(monkeypatch, "quiet-fail")
    queued(redis_conn, "train-quiet1")
    with pytest.raises(TrainingFailed):
        train({"project": 7}, redis_conn, "train-quiet1")
    error = records.read_record(redis_conn, "train-quiet1")["error"]
    assert error.startswith("rexlabel finetune exited with 2: warming up")
    assert error.endswith("RuntimeError: the data loader died")


def test_out_of_memory_says_what_to_change(redis_conn, models_root, monkeypatch):
    use_child(monkeypatch, "oom")
    queued(redis_conn, "train-oom1")
    with pytest.raises(TrainingFailed, match="out of memory"):
        train({"project": 7}, redis_conn, "train-oom1")
    assert records.read_record(redis_conn, "train-oom1")["error"] == (
        "out of memory: try a smaller --batch-size or --method lora "
        "(torch.OutOfMemoryError: CUDA out of memory)"
    )


def test_exit_zero_without_a_card_is_a_failure(redis_conn, models_root, monkeypatch):
    published_run(models_root, 7, "run-old")
    use_child(monkeypatch, "nocard")
    queued(redis_conn, "train-nocard1")
    with pytest.raises(TrainingFailed, match=r"exited 0 but .* has no model card"):
        train({"project": 7}, redis_conn, "train-nocard1")
    assert read_pointer(models_root / "project-7") == "run-old"


def test_a_bad_payload_is_refused_naming_the_field(redis_conn, models_root):
    queued(redis_conn, "train-bad1")
    with pytest.raises(TrainingRequestError, match=r"options\.steps"):
        train({"project": 7, "options": {"steps": 0}}, redis_conn, "train-bad1")
    record = records.read_record(redis_conn, "train-bad1")
    assert record["state"] == "failed" and "options.steps" in record["error"]
    with pytest.raises(TrainingRequestError, match="project must be a positive"):
        train({"project": "7; rm -rf /"}, redis_conn, "train-bad2")
    assert not models_root.exists()


def _start(redis_conn, job_id: str) -> tuple[threading.Thread, dict]:
    """``train`` in a thread; returns it and where its outcome lands."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["result"] = train({"project": 7}, redis_conn, job_id)
        except Exception as exc:  # the assertion reads it
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    wait_for(
        lambda: (records.read_record(redis_conn, job_id) or {}).get("step"),
        WAIT_S,
        "the first step in the record",
    )
    return thread, outcome


def test_cancel_interrupts_the_child_which_keeps_a_checkpoint(
    redis_conn, models_root, monkeypatch
):
    published_run(models_root, 7, "run-old")
    use_child(monkeypatch, "slow")
    queued(redis_conn, "train-cancel1")
    thread, outcome = _start(redis_conn, "train-cancel1")
    assert records.read_record(redis_conn, "train-cancel1")["state"] == "running"
    records.cancel_training(redis_conn, "train-cancel1")
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert outcome["result"]["state"] == "cancelled"
    record = records.read_record(redis_conn, "train-cancel1")
    assert record["state"] == "cancelled"
    assert (
        record["error"] == f"cancelled; checkpoint kept in {record['out']}/checkpoint"
    )
    assert (Path(record["out"]) / "checkpoint").is_dir()  # written on SIGINT
    assert read_pointer(models_root / "project-7") == "run-old"


def test_a_child_that_ignores_sigint_is_killed_after_the_grace(
    redis_conn, models_root, monkeypatch
):
    use_child(monkeypatch, "stubborn")
    monkeypatch.setattr(training_job, "INTERRUPT_GRACE_S", 0.5)
    queued(redis_conn, "train-kill1")
    thread, outcome = _start(redis_conn, "train-kill1")
    records.request_cancel(redis_conn, "train-kill1")
    thread.join(WAIT_S)
    assert not thread.is_alive()
    assert outcome["result"]["state"] == "cancelled"
    assert not (
        models_root / "project-7" / outcome["result"]["run"] / "checkpoint"
    ).exists()


def test_a_warm_shutdown_interrupts_the_training(redis_conn, models_root, monkeypatch):
    use_child(monkeypatch, "slow")
    queued(redis_conn, "train-stop1")
    thread, outcome = _start(redis_conn, "train-stop1")
    assert training_job.interrupt_running("the worker is shutting down") == 1
    thread.join(WAIT_S)
    assert isinstance(outcome["error"], TrainingFailed)
    record = records.read_record(redis_conn, "train-stop1")
    assert record["state"] == "failed"
    assert record["error"].startswith("interrupted (the worker is shutting down)")
    assert record["error"].endswith("/checkpoint")
    assert training_job.interrupt_running("again") == 0


def test_a_cancel_before_the_start_runs_nothing(redis_conn, models_root, monkeypatch):
    use_child(monkeypatch, "ok")
    queued(redis_conn, "train-early1")
    records.request_cancel(redis_conn, "train-early1")
    result = train({"project": 7}, redis_conn, "train-early1")
    assert result["state"] == "cancelled"
    assert not (models_root / "project-7" / result["run"]).exists()


# Through RQ: a training worker ---------------------------------------------------
@pytest.fixture
def restore_signals():
    """RQ's work loop installs SIGINT/SIGTERM handlers: put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _train_worker(connection, **kwargs):
    return build_worker(
        connection,
        [QUEUE_TRAIN],
        heartbeat_interval=0.5,
        execution_ttl=3,
        **kwargs,
    )


def test_a_training_worker_runs_the_queued_job(
    redis_conn, models_root, monkeypatch, restore_signals
):
    use_child(monkeypatch, "ok")
    records.enqueue_training(
        redis_conn, "train-rq1", TrainingRequest(7, {"steps": 2}), "test"
    )
    _train_worker(redis_conn, trains=True, serves=False).work(burst=True)
    job = Queue(
        QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer
    ).fetch_job("train-rq1")
    assert job.get_status() == JobStatus.FINISHED
    assert job.return_value()["state"] == "finished"
    record = records.read_record(redis_conn, "train-rq1")
    assert read_pointer(models_root / "project-7") == record["run"]


def test_a_failed_training_fails_its_rq_job(
    redis_conn, models_root, monkeypatch, restore_signals
):
    use_child(monkeypatch, "oom")
    records.enqueue_training(redis_conn, "train-rq2", TrainingRequest(7, {}), "test")
    _train_worker(redis_conn, trains=True, serves=False).work(burst=True)
    job = Queue(
        QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer
    ).fetch_job("train-rq2")
    assert job.get_status() == JobStatus.FAILED
    assert "out of memory" in job.latest_result().exc_string
    assert records.reconciled(redis_conn, records.read_record(redis_conn, "train-rq2"))[
        "error"
    ].startswith("out of memory")


def test_a_worker_without_train_refuses_a_training_job(
    redis_conn, models_root, monkeypatch, restore_signals, caplog
):
    use_child(monkeypatch, "ok")
    records.enqueue_training(redis_conn, "train-rq3", TrainingRequest(7, {}), "test")
    with caplog.at_level("ERROR", logger="worker.process"):
        _train_worker(redis_conn).work(burst=True)  # listens there, no --train
    job = Queue(
        QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer
    ).fetch_job("train-rq3")
    assert job.get_status() == JobStatus.FAILED
    assert "run only on a worker started with --train" in job.latest_result().exc_string
    assert "refused job 'train-rq3'" in caplog.text
    assert not models_root.exists()  # nothing ran
    record = records.reconciled(
        redis_conn, records.read_record(redis_conn, "train-rq3")
    )
    assert record["state"] == "failed" and "--train" in record["error"]


def test_a_training_only_worker_refuses_chunks(redis_conn, restore_signals):
    from common.queues import RUN_CHUNK

    queue = Queue(QUEUE_TRAIN, connection=redis_conn, serializer=JSONSerializer)
    job = queue.enqueue(RUN_CHUNK, {"images": []})
    _train_worker(redis_conn, trains=True, serves=False).work(burst=True)
    assert job.get_status(refresh=True) == JobStatus.FAILED
    assert "holds no serving model" in job.latest_result().exc_string


# A real `rexlabel worker --train` process ------------------------------------------
def test_sigterm_interrupts_the_training_of_a_train_worker(
    redis_conn, models_root, tmp_path
):
    """``--train`` alone loads no model (REXLABEL_MODEL names nothing here), and
    a warm shutdown interrupts the running training instead of waiting for it."""
    from tests.worker.rq_helpers import start_worker, stop_worker, worker_env

    records.enqueue_training(redis_conn, "train-term1", TrainingRequest(7, {}), "test")
    env = worker_env(tmp_path / "no-model-here", REXLABEL_MODELS_DIR=str(models_root))
    log_path = tmp_path / "worker.log"
    process = start_worker(
        redis_conn,
        env,
        "--train",
        name="trainer",
        entry="tests.worker.train_worker",
        log_path=log_path,
    )
    wait_for(
        lambda: (records.read_record(redis_conn, "train-term1") or {}).get("step"),
        WAIT_S,
        "the training's first step",
    )
    assert stop_worker(process, timeout=WAIT_S) == 0, log_path.read_text()
    record = records.read_record(redis_conn, "train-term1")
    assert record["state"] == "failed", log_path.read_text()
    assert record["error"].startswith("interrupted (the worker is shutting down)")
    assert (Path(record["out"]) / "checkpoint").is_dir()


def test_a_killed_train_worker_frees_the_slot_and_its_child_ends(
    redis_conn, models_root, tmp_path
):
    """kill -9 of the worker: its child ends at its next progress line (stdout
    closed), and once the execution expired the job reads as failed, so the
    project may train again."""
    import os

    from tests.worker.rq_helpers import FAST_WORKER, start_worker, worker_env

    records.enqueue_training(redis_conn, "train-kill9", TrainingRequest(7, {}), "test")
    env = worker_env(tmp_path / "no-model-here", REXLABEL_MODELS_DIR=str(models_root))
    log_path = tmp_path / "worker.log"
    process = start_worker(
        redis_conn,
        env,
        "--train",
        *FAST_WORKER,
        name="doomed",
        entry="tests.worker.train_worker",
        log_path=log_path,
    )
    wait_for(
        lambda: (records.read_record(redis_conn, "train-kill9") or {}).get("step"),
        WAIT_S,
        "the training's first step",
    )
    out = Path(records.read_record(redis_conn, "train-kill9")["out"])
    child = int((out / "pid").read_text())
    process.kill()
    process.wait()

    def child_gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{child}/stat") as stat:  # a zombie until init reaps it
            return stat.read().split()[2] == "Z"

    wait_for(child_gone, WAIT_S, "the orphaned child to end")

    def failed() -> bool:
        records.clean_abandoned(redis_conn)  # what a start does first
        record = records.read_record(redis_conn, "train-kill9")
        return records.reconciled(redis_conn, record)["state"] == "failed"

    wait_for(failed, WAIT_S, "the dead worker's job to read as failed", 0.5)
