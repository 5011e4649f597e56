"""The training job: run ``rexlabel finetune`` for a project, report its
progress, publish the run when it succeeds.

``rexlabel worker --train`` runs :func:`run_training` (``common.queues.RUN_TRAINING``)
from the ``rexlabel:train`` queue. The fine-tuning itself runs in a child
process (:data:`FINETUNE_ARGV` plus ``--project ID --out DIR --progress json``
and the job's options), with the worker's environment: it reads the project's
annotations from LABEL_STUDIO_URL with LABEL_STUDIO_API_KEY and starts from
REXLABEL_MODEL. A child keeps the worker's process free of the training's
memory, and its exit code says how it ended:

- 0: DIR holds a model card: the project's ``current`` pointer moves to it
  (``common.model_store.publish``); serving workers pick it up before their
  next chunk (``worker.jobs``);
- 130: interrupted by SIGINT (a cancel, or the worker shutting down); the
  child keeps a checkpoint in ``DIR/checkpoint``;
- 3: out of memory; anything else: failed.

The child prints one JSON object a line on stdout (``examples``, ``step``,
``checkpoint``, ``done``, ``error`` events); they are written into the job's
record (``common.training_jobs``) at most every :data:`PROGRESS_WRITE_S`.
Other lines are ignored; the last :data:`STDERR_LINES_KEPT` stderr lines give
a failure without an ``error`` event its reason. A failed run keeps its
directory, leaves the pointer as it was and raises, so RQ marks the job failed.

Cancel: ``rexlabel jobs cancel ID`` sets a Redis key; the job sends the child
SIGINT (it saves a checkpoint and exits 130), then SIGKILL after
:data:`INTERRUPT_GRACE_S`. A warm shutdown of the worker (SIGTERM, Ctrl-C)
interrupts the child the same way (:func:`interrupt_running`). The child runs
in its own session, so a terminal's Ctrl-C reaches it only through the worker;
if the worker is killed outright, the child's next progress line finds its
stdout closed and it ends there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from common import training_jobs as records
from common.model_store import (
    ModelStoreError,
    new_run_name,
    project_models_dir,
    publish,
    read_card,
)
from common.training_jobs import TrainingRequestError, parse_payload

log = logging.getLogger(__name__)

FINETUNE_ARGV: tuple[str, ...] = (sys.executable, "-m", "backend.cli", "finetune")
"""The command a training job runs, before ``--project ID --out DIR --progress
json`` and the options (``rexlabel finetune``, in this interpreter)."""
EXIT_DONE = 0
"""``rexlabel finetune`` finished: DIR holds the model card."""
EXIT_INTERRUPTED = 130
"""Interrupted by SIGINT; a checkpoint is kept in ``DIR/checkpoint``."""
EXIT_OUT_OF_MEMORY = 3
"""The GPU (or host) ran out of memory."""
OOM_MESSAGE = "out of memory: try a smaller --batch-size or --method lora"
"""A run that ran out of memory fails with this (the project's ``finetune``
extra param takes ``batch_size`` and ``method``)."""
CHECKPOINT_DIR = "checkpoint"
"""Where an interrupted run keeps its checkpoint, inside its directory."""
INTERRUPT_GRACE_S = 300.0
"""Seconds an interrupted child has to write its checkpoint and exit before
SIGKILL: a full 3B-parameter checkpoint is ~7 GB, a minute or two on a slow
disk; a LoRA adapter takes a second."""
POLL_S = 1.0
"""How often the job looks for a cancel request while the child runs."""
PROGRESS_WRITE_S = 2.0
"""Longest gap between a step and its record update; steps in between are
folded into the next write (a fast run prints many a second)."""
STDERR_LINES_KEPT = 20
"""Lines of the child's stderr kept for a failure's reason."""
MAX_LINE_CHARS = 1_000_000
"""A stdout line longer than this is not a progress event; it is skipped."""
ERROR_CHARS = 2_000
"""Longest error text kept in the record (the tail of a traceback)."""
CANCELLED_BY_REQUEST = "cancel requested"
"""Why a cancelled run's child got SIGINT (``rexlabel jobs cancel``)."""

_EOF = object()
_active: dict[str, _Child] = {}
_active_lock = threading.RLock()
"""Re-entrant: :func:`interrupt_running` runs in a signal handler, on the
main thread, which may hold it at that moment."""


class TrainingFailed(RuntimeError):
    """The training run failed; the message is the reason in the job's record."""


def finetune_argv(project: int, out: Path, options: Mapping[str, Any]) -> list[str]:
    """The child's command line (:data:`FINETUNE_ARGV` plus the run's arguments).

    The run starts from the original base of ``REXLABEL_MODEL``
    (``common.model_store.original_base``), not from what it serves now: a
    shared trainer whose ``REXLABEL_MODEL`` is one project's models directory
    must not start another project from that project's run, and runs must not
    stack adapter on adapter."""
    from common import settings
    from common.model_store import original_base

    base = original_base(settings.get("REXLABEL_MODEL"))
    return [
        *FINETUNE_ARGV,
        f"--base={base}",
        "--project",
        str(project),
        "--out",
        str(out),
        "--progress",
        "json",
        *records.option_arguments(options),
    ]


def run_training(payload: dict[str, Any]) -> dict[str, Any]:
    """RQ's entry point: :func:`train` with the current job's id and Redis."""
    from rq import get_current_job

    job = get_current_job()
    if job is None:
        raise TrainingFailed(
            "run_training runs as an RQ job on a `rexlabel worker --train`"
        )
    return train(payload, job.connection, job.id)


def train(payload: Any, connection: Any, job_id: str) -> dict[str, Any]:
    """Validate ``payload``, run the child, record its progress, publish on success.

    Returns ``{"job", "project", "state", "run", "out", "metrics"}`` for a
    finished or cancelled run; raises :class:`TrainingFailed` (the record says
    the same) for a failed one and TrainingRequestError for a bad payload.
    """
    record = records.read_record(connection, job_id)
    try:
        request = parse_payload(payload)
    except TrainingRequestError as exc:
        log.error("training job %s refused: %s", job_id, exc)
        if record is not None:
            _save(connection, {**record, "state": records.FAILED, "error": str(exc)})
        raise
    if record is None:  # enqueued without the backend's record (rq's own client)
        record = records.new_record(job_id, request.project, request.options, "queue")
    models_dir = project_models_dir(request.project)
    models_dir.mkdir(parents=True, exist_ok=True)
    run = new_run_name(job_id.removeprefix(records.JOB_ID_PREFIX)[:8])
    out = models_dir / run
    record.update(
        state=records.RUNNING,
        out=str(out),
        run=run,
        started=time.time(),
        error="",
    )
    if records.cancel_requested(connection, job_id):
        log.info("training job %s: cancelled before it started", job_id)
        _save(connection, {**record, "state": records.CANCELLED, "ended": time.time()})
        return _result(record, records.CANCELLED)
    _save(connection, record)
    try:
        argv = finetune_argv(request.project, out, request.options)
    except ModelStoreError as exc:
        reason = f"REXLABEL_MODEL cannot be trained from: {exc}"
        log.error("training job %s: %s", job_id, reason)
        _save(
            connection,
            {**record, "state": records.FAILED, "error": reason, "ended": time.time()},
        )
        raise TrainingFailed(reason) from None
    log.info(
        "training job %s: project %s -> %s: %s", job_id, request.project, out, argv
    )
    child = _Child(argv)
    with _active_lock:
        _active[job_id] = child
    try:
        outcome = _follow(child, connection, job_id, record)
    except BaseException as exc:  # job timeout, cold shutdown, Redis gone
        child.stop(f"the job stopped: {type(exc).__name__}")
        reason = _stopped_reason(exc, out)
        log.error("training job %s: %s", job_id, reason)
        _save(
            connection,
            {**record, "state": records.FAILED, "error": reason, "ended": time.time()},
        )
        raise
    finally:
        with _active_lock:
            _active.pop(job_id, None)
    return _finish(connection, job_id, record, child, outcome, models_dir)


def interrupt_running(reason: str) -> int:
    """Send SIGINT to every running training child (the worker's warm
    shutdown): each saves a checkpoint and exits, SIGKILL after
    :data:`INTERRUPT_GRACE_S`. Returns how many were interrupted."""
    with _active_lock:
        children = list(_active.values())
    for child in children:
        child.interrupt(reason)
    return len(children)


class _Child:
    """``rexlabel finetune`` running, its stdout events queued, its stderr's
    tail kept."""

    def __init__(self, argv: list[str]) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # progress lines at once
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env=env,
            start_new_session=True,  # a terminal's Ctrl-C goes through the worker
        )
        self.events: queue.Queue = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_LINES_KEPT)
        self.interrupted: str = ""
        """Why SIGINT was sent ("" while it was not)."""
        self.kill_at: float | None = None
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event = parse_event(line)
            if event is not None:
                self.events.put(event)
        self.events.put(_EOF)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_tail.append(line.rstrip()[:ERROR_CHARS])

    def interrupt(self, reason: str) -> None:
        """SIGINT once (the child checkpoints), SIGKILL at the grace's end."""
        if self.interrupted or self.process.poll() is not None:
            return
        self.interrupted = reason
        self.kill_at = time.monotonic() + INTERRUPT_GRACE_S
        log.info("training child %s: SIGINT (%s)", self.process.pid, reason)
        self._signal(signal.SIGINT)

    def kill_if_overdue(self) -> None:
        if self.kill_at is not None and time.monotonic() >= self.kill_at:
            log.warning(
                "training child %s did not exit %.0f s after SIGINT: SIGKILL",
                self.process.pid,
                INTERRUPT_GRACE_S,
            )
            self.kill_at = None
            self._signal(signal.SIGKILL)

    def stop(self, reason: str) -> None:
        """Interrupt and wait for the exit (SIGKILL when overdue or when the
        wait itself is interrupted)."""
        self.interrupt(reason)
        try:
            while self.process.poll() is None:
                self.kill_if_overdue()
                time.sleep(0.1)
        except BaseException:
            self._signal(signal.SIGKILL)
            raise
        finally:
            self.join_readers()

    def join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)

    def _signal(self, signum: int) -> None:
        try:
            self.process.send_signal(signum)
        except ProcessLookupError:  # exited meanwhile
            pass

    def stderr_text(self) -> str:
        return "\n".join(line for line in self.stderr_tail if line.strip())


def parse_event(line: str) -> dict[str, Any] | None:
    """A progress event from one stdout line; None for anything else."""
    text = line.strip()
    if not text.startswith("{") or len(text) > MAX_LINE_CHARS:
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        return None
    return event


class _Outcome:
    """What the child reported, and how it ended."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.error: str = ""
        self.checkpoint: str = ""
        self.returncode: int | None = None


def _follow(
    child: _Child, connection: Any, job_id: str, record: dict[str, Any]
) -> _Outcome:
    """Read the child's events into ``record`` until it exits."""
    outcome = _Outcome()
    last_write = time.monotonic()
    dirty = False
    eof = False
    while True:
        event = None
        if eof:  # stdout closed: the child is exiting
            try:
                child.process.wait(timeout=POLL_S)
            except subprocess.TimeoutExpired:
                pass
        else:
            try:
                event = child.events.get(timeout=POLL_S)
            except queue.Empty:
                pass
        if event is _EOF:
            eof = True
        elif event is not None:
            dirty |= _apply(event, record, outcome, job_id)
            if event["event"] in ("prepared", "done", "error"):
                last_write = 0.0  # write these at once
        if dirty and time.monotonic() - last_write >= PROGRESS_WRITE_S:
            _save(connection, record)
            last_write, dirty = time.monotonic(), False
        if not child.interrupted and _cancel_requested(connection, job_id):
            child.interrupt(CANCELLED_BY_REQUEST)
        child.kill_if_overdue()
        if eof and child.process.poll() is not None:
            break
    child.join_readers()
    outcome.returncode = child.process.returncode
    return outcome


def _apply(
    event: dict[str, Any], record: dict[str, Any], outcome: _Outcome, job_id: str
) -> bool:
    """Fold one event into the record; True when the record changed."""
    kind = event["event"]
    if kind == "prepared":  # the run's examples per split, and what it skipped
        skipped = event.get("skipped")
        fields = {**event, **(skipped if isinstance(skipped, dict) else {})}
        record["examples"] = {
            k: v for k, v in fields.items() if k != "event" and _number(v) is not None
        }
        log.info("training job %s: examples %s", job_id, record["examples"])
        return True
    if kind == "step":
        step, steps = _number(event.get("step")), _number(event.get("steps"))
        record.update(
            step=int(step) if step is not None else record.get("step"),
            steps=int(steps) if steps is not None else record.get("steps"),
            loss=_number(event.get("loss")),
            eta_s=_number(event.get("eta_s")),
        )
        return True
    if kind == "checkpoint":
        outcome.checkpoint = str(event.get("path") or "")[:ERROR_CHARS]
        log.info("training job %s: checkpoint at step %s", job_id, event.get("step"))
        return False
    if kind == "done":
        metrics = event.get("metrics")
        outcome.metrics = metrics if isinstance(metrics, dict) else {}
        record.update(metrics=outcome.metrics, eta_s=0.0)
        return True
    if kind == "error":
        outcome.error = str(event.get("message") or "")[:ERROR_CHARS]
        return False
    return False


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _finish(
    connection: Any,
    job_id: str,
    record: dict[str, Any],
    child: _Child,
    outcome: _Outcome,
    models_dir: Path,
) -> dict[str, Any]:
    """Publish a finished run, or record why it did not finish."""
    out, run, code = Path(record["out"]), record["run"], outcome.returncode
    record["ended"] = time.time()
    if code == EXIT_DONE and child.interrupted != CANCELLED_BY_REQUEST:
        try:
            if read_card(out) is None:
                raise ModelStoreError(
                    f"rexlabel finetune exited 0 but {out} has no model card"
                )
            publish(models_dir, run)
        except ModelStoreError as exc:
            return _fail(connection, record, str(exc))
        record.update(state=records.FINISHED, error="")
        _save(connection, record)
        log.info("training job %s: finished; %s/current -> %s", job_id, models_dir, run)
        return _result(record, records.FINISHED)
    kept = _checkpoint_note(out)
    if child.interrupted == CANCELLED_BY_REQUEST:
        record.update(state=records.CANCELLED, error=f"cancelled{kept}")
        _save(connection, record)
        log.info("training job %s: cancelled%s", job_id, kept)
        return _result(record, records.CANCELLED)
    if code == EXIT_INTERRUPTED or child.interrupted:
        why = child.interrupted or "SIGINT from outside the worker"
        return _fail(connection, record, f"interrupted ({why}){kept}")
    if code == EXIT_OUT_OF_MEMORY:
        detail = outcome.error or _last_line(child.stderr_text())
        return _fail(
            connection, record, OOM_MESSAGE + (f" ({detail})" if detail else "")
        )
    if code is not None and code < 0:
        how = f"was killed by {signal.Signals(-code).name}"
    else:
        how = f"exited with {code}"
    detail = outcome.error or child.stderr_text() or "no error message"
    return _fail(
        connection, record, f"rexlabel finetune {how}: {detail}"[-ERROR_CHARS:]
    )


def _fail(connection: Any, record: dict[str, Any], reason: str) -> NoReturn:
    record.update(state=records.FAILED, error=reason)
    _save(connection, record)
    log.error("training job %s failed: %s", record["id"], reason)
    raise TrainingFailed(reason)


def _checkpoint_note(out: Path) -> str:
    checkpoint = out / CHECKPOINT_DIR
    return f"; checkpoint kept in {checkpoint}" if checkpoint.exists() else ""


def _stopped_reason(exc: BaseException, out: Path) -> str:
    from rq.timeouts import JobTimeoutException

    if isinstance(exc, JobTimeoutException):
        what = f"ran past the job timeout ({records.TRAIN_JOB_TIMEOUT_S} s)"
    elif isinstance(exc, (SystemExit, KeyboardInterrupt)):
        what = "stopped: the worker shut down"
    else:
        what = f"stopped: {type(exc).__name__}: {exc}"
    return f"training {what}{_checkpoint_note(out)}"


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _result(record: Mapping[str, Any], state: str) -> dict[str, Any]:
    return {
        "job": record["id"],
        "project": record["project"],
        "state": state,
        "run": record["run"],
        "out": record["out"],
        "metrics": record.get("metrics") or {},
    }


def _save(connection: Any, record: Mapping[str, Any]) -> None:
    """Write the record; a Redis error is logged, never ends the training."""
    try:
        records.save_record(connection, record)
    except Exception as exc:  # Redis away for a moment: the next write retries
        log.warning("training job %s: record not written: %s", record.get("id"), exc)


def _cancel_requested(connection: Any, job_id: str) -> bool:
    try:
        return records.cancel_requested(connection, job_id)
    except Exception as exc:  # Redis away: asked again in POLL_S
        log.warning("training job %s: cancel key unreadable: %s", job_id, exc)
        return False
