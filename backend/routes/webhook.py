"""``POST /webhook``: Label Studio's events, answered at once, worked on in
the background.

``TASKS_CREATED`` starts pre-annotation (a bulk job, :mod:`backend.bulk`)
when the project's extra params say ``"prelabel_on_import": true``, with the
label config and extra params ``/setup`` stored for the project, never the
event's own. ``START_TRAINING`` (Label Studio's "Start Training" button posts
``{"action": "START_TRAINING", "project": {"id": ...}}``) starts a training
job under :mod:`backend.training`'s rules and answers its decision at once,
always 200 (an error status would mark the model as failed in Label Studio
and stop its predictions): ``{"status", "message", "job"?}``; Label Studio
keeps ``job``. Every other event is accepted and ignored.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backend.planner import is_id, shown
from backend.routes import background
from backend.routes.bodies import BadRequest
from backend.state import StateError, StateStore, project_id
from backend.training import TrainingStarter

log = logging.getLogger(__name__)

WEBHOOK_THREADS = 2
"""Background threads for webhook work: events are rare and their work
(starting a bulk job) is short."""

PRELABEL_PARAM = "prelabel_on_import"
"""Extra param that makes TASKS_CREATED start background pre-annotation."""

WEBHOOK_MAX_TASKS = 10_000
"""Tasks one TASKS_CREATED event may pre-annotate; the rest are logged and
left to ``rexlabel prelabel`` (a bound on the work one request can start)."""

WEBHOOK_PENDING_LIMIT = 32
"""TASKS_CREATED events waiting for the webhook threads; beyond it one is
answered 503 and logged (Label Studio sends one per import: a backlog this
long is a flood)."""

WEBHOOK_JOBS_PER_PROJECT = 2
"""Webhook-started jobs pending or running at once per project: imports
arrive one at a time; more is a flood, and its events are logged and skipped."""


class WebhookBacklog(RuntimeError):
    """Too many TASKS_CREATED events wait already; answered 503."""


class Webhooks:
    """What ``/webhook`` does with an event; ``version_for(label_config,
    extra)`` is the app's model version (listed in /versions)."""

    def __init__(
        self,
        store: StateStore,
        version_for: Callable[[str, dict[str, Any]], str],
        trainer: TrainingStarter | None = None,
    ) -> None:
        self.store = store
        self.version_for = version_for
        self.trainer = trainer or TrainingStarter(store)
        self.background = ThreadPoolExecutor(
            max_workers=WEBHOOK_THREADS, thread_name_prefix="rexlabel-webhook"
        )
        self._jobs: dict[str, list[str]] = {}
        self._jobs_lock = threading.Lock()  # per-project webhook jobs
        self._pending = 0
        self._pending_lock = threading.Lock()

    def accept(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Accept an event at once; its work runs in the background.

        ``TASKS_CREATED`` is checked here (project id, integer task ids), so a
        malformed one is answered 400 naming the bad part.
        """
        action = body.get("action")
        if action is not None and not isinstance(action, str):
            raise BadRequest("'action' must be a string")
        action = action or ""
        if action == "TASKS_CREATED":
            pid, tasks = created_tasks(body)
            with self._pending_lock:
                if self._pending >= WEBHOOK_PENDING_LIMIT:
                    raise WebhookBacklog(
                        f"{self._pending} TASKS_CREATED events are waiting "
                        f"(WEBHOOK_PENDING_LIMIT); project {pid}'s is dropped, "
                        "pre-annotate it with `rexlabel prelabel`"
                    )
                self._pending += 1
            self.background.submit(self._tasks_created_work, pid, tasks)
        elif action == "START_TRAINING":
            decision = self.trainer.start(body.get("project"), source="webhook")
            return {**decision.to_dict(), "action": action}
        else:
            log.debug("webhook %s ignored", shown(action))
        return {"status": "accepted", "action": action}

    def _tasks_created_work(self, pid: str, tasks: list) -> None:
        try:
            self._on_tasks_created(pid, tasks)
        except Exception:
            log.exception("webhook TASKS_CREATED for project %s failed", pid)
        finally:
            with self._pending_lock:
                self._pending -= 1

    def _on_tasks_created(self, pid: str, tasks: list[Mapping[str, Any]]) -> None:
        """Pre-annotate ``tasks`` with what ``/setup`` stored for the project
        (its label config and extra params, never the event's own)."""
        try:
            state = self.store.get(pid)
        except StateError:
            state = None
        if state is None or not state.label_config:
            log.info(
                "TASKS_CREATED for project %s ignored: it was never set up "
                "(connect the model in Label Studio first)",
                pid,
            )
            return
        extra = dict(state.extra_params)
        if not extra.get(PRELABEL_PARAM):
            log.debug("TASKS_CREATED for project %s: %s is off", pid, PRELABEL_PARAM)
            return
        if len(tasks) > WEBHOOK_MAX_TASKS:
            log.warning(
                "TASKS_CREATED for project %s: %d tasks, pre-annotating the first "
                "%d (WEBHOOK_MAX_TASKS); run `rexlabel prelabel` for the rest",
                pid,
                len(tasks),
                WEBHOOK_MAX_TASKS,
            )
            tasks = tasks[:WEBHOOK_MAX_TASKS]
        version = self.version_for(state.label_config, extra)
        with self._jobs_lock:
            active = background.active_jobs(self._jobs.get(pid, []))
            if len(active) >= WEBHOOK_JOBS_PER_PROJECT:
                log.warning(
                    "TASKS_CREATED for project %s: %d tasks not pre-annotated: "
                    "%d webhook jobs are still running (WEBHOOK_JOBS_PER_PROJECT); "
                    "run `rexlabel prelabel` for them",
                    pid,
                    len(tasks),
                    len(active),
                )
                return
            try:
                job = background.start_bulk_job(
                    tasks=tasks,
                    project=pid,
                    label_config=state.label_config,
                    extra_params=extra,
                    model_version=version,
                    source="webhook",
                )
            except RuntimeError as exc:
                log.warning(
                    "TASKS_CREATED for project %s: not pre-annotated: %s", pid, exc
                )
                return
            self._jobs[pid] = [*active, job]
        log.info(
            "TASKS_CREATED: %d tasks of project %s -> job %s", len(tasks), pid, job
        )


def created_tasks(body: Mapping[str, Any]) -> tuple[str, list[Mapping[str, Any]]]:
    """``(project id, tasks)`` of a TASKS_CREATED event; BadRequest naming the
    bad part (a project that is no id, a task whose ``id`` is not an integer)."""
    project = body.get("project")
    raw = project.get("id") if isinstance(project, Mapping) else project
    try:
        if not (is_id(raw) or isinstance(raw, str)):
            raise StateError(f"project id {shown(raw)} is not an integer")
        pid = project_id(raw)
    except StateError:
        raise BadRequest(f"webhook 'project' has no project id: {shown(raw)}") from None
    tasks = body.get("tasks")
    if not isinstance(tasks, list):
        raise BadRequest("webhook 'tasks' must be a list of task objects")
    for index, item in enumerate(tasks):
        if not isinstance(item, Mapping) or not is_id(item.get("id")):
            got = item.get("id") if isinstance(item, Mapping) else item
            raise BadRequest(
                f"webhook tasks[{index}].id must be an integer task id, "
                f"got {shown(got)}"
            )
    return pid, tasks
