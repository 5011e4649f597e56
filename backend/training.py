"""Start training jobs: Label Studio's "Start Training" (the ``START_TRAINING``
webhook) and ``POST /train`` (scripts; Label Studio's older ``/train`` call).

A start puts one job on ``rexlabel:train`` (``common.training_jobs``) for a
``rexlabel worker --train``. Webhooks may come from anyone who can reach the
backend, so a start is decided by rules, each decision logged:

- the project must be one this backend was set up for (``/setup`` stored its
  state), else it is ignored;
- at most one queued or running training job per project: another start
  answers that job's id instead of queueing a second;
- :data:`TRAIN_COOLDOWN_S` must pass after a project's last run ended;
- the run's options come only from the project's extra param
  :data:`FINETUNE_PARAM` (validated against
  ``common.training_jobs.TRAINING_OPTIONS``), never from the request.

Training needs Redis (``REDIS_URL``): without it a start is refused with a
message saying so. No torch, no worker imports: the job is enqueued by name.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from backend.planner import shown
from backend.state import StateError, StateStore, project_id
from common import training_jobs as records
from common.queues import QUEUE_TRAIN
from common.training_jobs import TrainingRequest, TrainingRequestError

log = logging.getLogger(__name__)

FINETUNE_PARAM = "finetune"
"""The project's extra param holding the run's options, e.g.
``{"finetune": {"steps": 300, "method": "lora", "batch_size": 4}}``."""
TRAIN_COOLDOWN_S = 600
"""Seconds after a project's last training run ended before another may start:
each click costs GPU time and webhooks need no login, so a burst of them gets
at most one run per ten minutes a project (a person retries a failed run
after fixing its cause, which takes longer)."""

NEEDS_REDIS = (
    "training needs Redis (set REDIS_URL on the backend) and a training worker "
    "(`rexlabel worker --train`)"
)
"""The answer to a start when this backend has no Redis."""


@dataclass(frozen=True)
class TrainingStart:
    """What a start decided: ``status`` is ``queued`` (a new job), ``existing``
    (the project's active job), ``ignored`` (unknown project), ``cooldown``,
    ``busy`` (another start of the project is being decided), ``refused`` (bad
    options or project id) or ``unavailable`` (no Redis, Redis down)."""

    status: str
    message: str
    http_status: int
    job: str | None = None
    project: int | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "message": self.message}
        if self.job:
            body["job"] = self.job
        if self.project is not None:
            body["project"] = self.project
        return body


class TrainingStarter:
    """Decides and enqueues training starts for the app's routes."""

    def __init__(
        self,
        store: StateStore,
        connection: Any = None,
        cooldown_s: float = TRAIN_COOLDOWN_S,
    ) -> None:
        self.store = store
        self.connection = connection
        self.cooldown_s = cooldown_s

    def start(self, project: Any, source: str) -> TrainingStart:
        """Start (or find) the training job of ``project`` (an id, ``"id.ts"``
        or Label Studio's project object); ``source`` names the caller in the
        log and the record (``webhook``, ``api``)."""
        decision = self._decide(project, source)
        level = (
            logging.INFO
            if decision.status in ("queued", "existing")
            else logging.WARNING
        )
        log.log(level, "training start (%s): %s", source, decision.message)
        return decision

    def _decide(self, project: Any, source: str) -> TrainingStart:
        try:
            pid = training_project(project)
        except StateError as exc:
            return TrainingStart("refused", str(exc), 400)
        state = self._state(pid)
        if state is None:
            return TrainingStart(
                "ignored",
                f"project {pid} is not set up on this backend (connect the model "
                "in the project's settings first); not training",
                404,
                project=pid,
            )
        if self.connection is None:
            return TrainingStart("unavailable", NEEDS_REDIS, 503, project=pid)
        try:
            options = records.validate_options(
                state.extra_params.get(FINETUNE_PARAM), where=FINETUNE_PARAM
            )
        except TrainingRequestError as exc:
            return TrainingStart(
                "refused",
                f"project {pid}: extra params: {exc}",
                400,
                project=pid,
            )
        try:
            return self._enqueue_once(pid, options, source)
        except Exception as exc:  # Redis down or refusing
            log.warning("training start for project %s failed", pid, exc_info=True)
            return TrainingStart(
                "unavailable",
                f"project {pid}: could not reach Redis to start training: "
                f"{type(exc).__name__}",
                503,
                project=pid,
            )

    def _state(self, pid: int) -> Any:
        try:
            state = self.store.get(str(pid))
        except StateError:
            return None
        return state if state is not None and state.label_config else None

    def _enqueue_once(
        self, pid: int, options: dict[str, Any], source: str
    ) -> TrainingStart:
        """Enqueue unless the project has an active job or is cooling down,
        under a short Redis lock (two backend processes decide one at a time)."""
        connection = self.connection
        try:
            records.clean_abandoned(connection)  # a dead worker's job holds no slot
        except Exception:  # best effort: the RQ state is read again below
            log.debug("cleaning the training queue failed", exc_info=True)
        lock = records.START_LOCK_PREFIX + str(pid)
        token = uuid.uuid4().hex
        if not connection.set(lock, token, nx=True, ex=records.START_LOCK_TTL_S):
            return TrainingStart(
                "busy",
                f"project {pid}: another training start is being decided; try again",
                409,
                project=pid,
            )
        try:
            known = [
                records.reconciled(connection, r)
                for r in records.list_records(connection, project=pid)
            ]
            active = [r for r in known if r["state"] in records.ACTIVE_STATES]
            if active:
                job = active[0]
                return TrainingStart(
                    "existing",
                    f"project {pid} already has training job {job['id']} "
                    f"({job['state']}); not starting another",
                    200,
                    job=job["id"],
                    project=pid,
                )
            wait = self._cooldown_left(known)
            if wait > 0:
                return TrainingStart(
                    "cooldown",
                    f"project {pid}: its last training run ended less than "
                    f"{self.cooldown_s:.0f} s ago; try again in {wait:.0f} s",
                    429,
                    project=pid,
                )
            job_id = records.new_job_id()
            records.enqueue_training(
                connection, job_id, TrainingRequest(pid, options), source
            )
        finally:
            if connection.get(lock) in (token, token.encode()):
                connection.delete(lock)
        return TrainingStart(
            "queued",
            f"project {pid}: training job {job_id} queued on {QUEUE_TRAIN} with "
            f"options {options or '(defaults)'}{self._worker_note()}",
            200,
            job=job_id,
            project=pid,
        )

    def _cooldown_left(self, known: list[dict[str, Any]]) -> float:
        ends = [
            float(r.get("ended") or r.get("updated") or 0)
            for r in known
            if r["state"] not in records.ACTIVE_STATES
        ]
        if not ends:
            return 0.0
        return max(ends) + self.cooldown_s - time.time()

    def _worker_note(self) -> str:
        """A warning when no worker listens on the training queue."""
        try:
            from rq import Queue, Worker

            queue = Queue(QUEUE_TRAIN, connection=self.connection)
            if Worker.count(connection=self.connection, queue=queue):
                return ""
        except Exception:  # the count is advice; the job is queued anyway
            return ""
        return (
            f"; no worker listens on {QUEUE_TRAIN} yet: start `rexlabel worker "
            "--train` (the job waits in the queue)"
        )


MAX_PROJECT_TEXT = 40
"""Longest project value read: ``<id>.<timestamp>`` is about 20 characters;
a longer one is refused before int() parses thousands of digits."""


def training_project(raw: Any) -> int:
    """The project id of a start: Label Studio's project object (``{"id": 3,
    ...}``), ``3``, ``"3"`` or ``"3.1795697856"``; StateError otherwise."""
    value = raw.get("id") if isinstance(raw, Mapping) else raw
    if isinstance(value, float) or not isinstance(value, (int, str)):
        raise StateError(f"'project' must be a project id, got {shown(value)}")
    text = str(value)
    if len(text) > MAX_PROJECT_TEXT or not text.replace(".", "").isascii():
        raise StateError(f"'project' must be a project id, got {shown(value)}")
    try:
        pid = int(project_id(value))
    except (StateError, ValueError):
        raise StateError(
            f"'project' must be a project id or '<id>.<timestamp>', got {shown(value)}"
        ) from None
    if pid < 1:
        raise StateError(f"'project' must be a positive project id, got {shown(value)}")
    return pid
