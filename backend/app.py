"""The Flask app Label Studio talks to (the ML-backend protocol).

Routes (``label-studio-protocol.md`` section 1):

- ``GET /health`` (and ``/``): fast JSON, with whether the queue and a worker
  are up; 503 when Redis is unreachable.
- ``POST /setup``: stores the project's ``extra_params`` and answers the
  ``model_version`` (a pure function of model, engine, prompts, settings,
  label config and extra params; see :mod:`backend.model_version`).
- ``GET /versions``: ``{"versions": [...]}``, newest first.
- ``POST /predict``: one item per task, in order, always with
  ``model_version``. A task that fails or misses the deadline gets an item
  without ``result`` (``{"model_version": ..., "error": "..."}``), which
  Label Studio skips, so it stays without a prediction and is asked for
  again later; its reason is in the logs and in ``errors`` (``[{"task": id,
  "error": "..."}]``). It never takes other tasks down. Interactive requests
  (``params.context.result``) reply ``{"results": [{"result": [...], ...}]}``,
  with ``"result": []`` for a failure (nothing is stored from them).
- ``GET /metrics``: Prometheus metrics (``backend.instrumentation``), behind basic auth.
- ``POST /webhook``: answers at once, works in the background
  (``TASKS_CREATED`` starts pre-annotation when the project's extra params
  say ``"prelabel_on_import": true``).

Queues: all work someone waits for goes to ``rexlabel:interactive`` (a click
with Auto-Annotation at the front); a ``/predict`` with more than
``REXLABEL_SYNC_TASK_LIMIT`` tasks becomes a background bulk job on
``rexlabel:bulk`` (``backend.bulk``) that posts predictions to Label Studio's
API as chunks finish; the reply then has no results (Label Studio stores
nothing and logs it) and says which job took over.

Auth: basic auth (``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``) on every route;
``/webhook`` also takes ``?token=`` (``REXLABEL_WEBHOOK_TOKEN``); see
:mod:`backend.auth`. Credentials are checked before anything reads the body;
bodies over :data:`MAX_BODY_BYTES` get 413 unread; a chunked body (no
Content-Length) is read up to the limit and then refused. Replies never carry a
traceback, a local path or an internal URL (:mod:`backend.replies`); an
unexpected error answers ``internal error`` with an id that is in the log.

Production::

    gunicorn -k gthread -w 1 --threads 8 -b 0.0.0.0:9090 'backend.app:create_app()'

(threads, not processes, unless ``REDIS_URL`` or ``REXLABEL_STATE_PATH`` is
set: without them project state lives in the process's memory).
"""

from __future__ import annotations

import importlib
import io
import logging
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from backend.auth import (
    WEBHOOK_TOKEN_HEADER,
    WEBHOOK_TOKEN_PARAM,
    AuthConfig,
    credentials_problem,
)
from backend.instrumentation import annotate_request, instrument_flask
from backend.model_version import model_version
from backend.planner import (
    ContextError,
    Plan,
    PlanError,
    is_id,
    plan_config,
    plan_interactive,
    shown,
    task_id_of,
)
from backend.predictions import (
    RegionIds,
    TaskPrediction,
    empty_prediction,
    failed_prediction,
    task_prediction,
)
from backend.queue import ChunkRunner, create_runner
from backend.replies import scrub_reply, scrub_text
from backend.state import StateError, StateStore, make_state, open_store, project_id
from common import settings
from common.jobspec import ImageResult
from common.loglines import summarize_results, summary_fields

log = logging.getLogger(__name__)

MODEL_CLASS = "RexOmni"
"""Reported by /health as Label Studio's own backends do (``model_class``)."""

WEBHOOK_THREADS = 2
"""Background threads for webhook work: events are rare and their work
(starting a bulk job) is short."""

PRELABEL_PARAM = "prelabel_on_import"
"""Extra param that makes TASKS_CREATED start background pre-annotation."""

VERSIONS_KEPT = 32
"""Versions /versions lists (newest first): a few months of config edits."""

BULK_MODULE = "backend.bulk"
BULK_FUNCTION = "start_for_tasks"
"""The bulk helper's entry point: ``start_for_tasks(tasks, *, project,
label_config, extra_params, model_version, source)`` -> job id. It posts to
LABEL_STUDIO_URL only: /setup's ``hostname`` is stored, never used for a request."""

BULK_STATUS_FUNCTION = "job_status"
"""The bulk helper's ``job_status(job_id)`` -> ``{"status": ...}``."""

BULK_ACTIVE_STATUSES = ("pending", "running")
"""Job statuses that count against :data:`WEBHOOK_JOBS_PER_PROJECT`."""

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest request body (Flask's MAX_CONTENT_LENGTH; a larger one gets 413
before a byte of it is read, a chunked one once the limit is passed). A task
in Label Studio's /predict or TASKS_CREATED is 0.5-1 KB of JSON (the task
serializer's fields plus the data URLs), so 32 MiB holds a "Retrieve
predictions" or an import of ~30,000 tasks; bigger selections go through
``rexlabel prelabel``."""

UNSIZED_READ_BYTES = 1024 * 1024
"""Bytes per read while buffering a body sent without Content-Length: few
reads for a large body, little memory beyond the body itself."""

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

PREDICT_BACKGROUND_JOBS = 4
"""Background jobs started by /predict pending or running at once (each a
thread posting to Label Studio, all sharing the workers): Label Studio asks
for one selection at a time per user, so more is a flood; beyond it 503."""


@dataclass(frozen=True)
class BackendConfig:
    """What the app reads from the environment (``common.settings``)."""

    auth: AuthConfig
    redis_url: str = ""
    state_path: str = ""
    predict_timeout: float = 90.0
    sync_task_limit: int = 16
    chunk_size: int = 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BackendConfig:
        def get(name: str) -> Any:
            return settings.get(name, environ)

        return cls(
            auth=AuthConfig.from_env(environ),
            redis_url=get("REDIS_URL"),
            state_path=get("REXLABEL_STATE_PATH"),
            predict_timeout=get("REXLABEL_PREDICT_TIMEOUT"),
            sync_task_limit=get("REXLABEL_SYNC_TASK_LIMIT"),
            chunk_size=get("REXLABEL_PREDICT_CHUNK_SIZE"),
        )


HEALTH_STATUS = {
    "ready": "UP",
    "loading": "LOADING",
    "failed": "FAILED",
    "no_workers": "NO_WORKERS",
    "down": "DOWN",
}
"""/health's ``status`` per model state (Label Studio's backends say ``UP``)."""

HEALTH_PHRASES = {
    "loading": "Model still loading",
    "failed": "Model failed to load",
    "no_workers": "No rexlabel worker running",
    "down": "Queue (Redis) unreachable",
}
"""Reason phrase of /health's 503 per state: Label Studio's "Connect model"
shows ``503 Server Error: <phrase> for url: ...`` and nothing of the body."""


def _readiness_message(
    state: str, model: Mapping[str, Any], queue: Mapping[str, Any]
) -> str:
    """Why /health is not UP, in words a user can act on."""
    in_process = queue.get("mode") == "in-process"
    if state == "down":
        return f"the queue is unreachable: {queue.get('error') or 'no reason given'}"
    if state == "loading":
        who = "the model" if in_process else f"{model.get('loading')} worker(s)"
        return (
            f"{who} loading (a first start downloads the weights); Label Studio "
            "connects once /health answers 200"
        )
    if state == "failed":
        if in_process:
            return (
                f"the model failed to load: {model.get('reason')}; it is tried "
                "again when asked a minute later (or fix the settings and restart)"
            )
        return (
            f"no worker is ready: the last one failed to load the model: "
            f"{model.get('reason')}; see its log, fix the settings and restart it"
        )
    return "no rexlabel worker serves the interactive queue: start `rexlabel worker`"


def _scrub_health(health: dict[str, Any]) -> dict[str, Any]:
    """/health without internal URLs or local paths in its reasons (a model
    server's URL, a weights path, Redis' host): the log has them."""
    for part, key in (
        (health, "message"),
        (health.get("model") or {}, "reason"),
        (health.get("queue") or {}, "error"),
    ):
        if isinstance(part.get(key), str):
            part[key] = scrub_text(part[key])
    return health


class BadRequest(ValueError):
    """The request body is unusable; answered 400 with the message."""


def _start_bulk_job(**kwargs: Any) -> Any:
    """Hand tasks to the bulk helper; RuntimeError when it is not installed."""
    try:
        module = importlib.import_module(BULK_MODULE)
    except ModuleNotFoundError as exc:
        raise RuntimeError(f"background jobs are not available: {exc}") from None
    start = getattr(module, BULK_FUNCTION, None)
    if start is None:
        raise RuntimeError(
            f"background jobs are not available: {BULK_MODULE}.{BULK_FUNCTION} "
            "does not exist in this build"
        )
    return start(**kwargs)


class Backend:
    """The routes' logic, separate from Flask so it can be called directly."""

    def __init__(
        self,
        config: BackendConfig,
        runner: ChunkRunner,
        store: StateStore,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.runner = runner
        self.store = store
        self.environ = environ
        self.background = ThreadPoolExecutor(
            max_workers=WEBHOOK_THREADS, thread_name_prefix="rexlabel-webhook"
        )
        self.versions: list[str] = []
        self._versions_lock = threading.Lock()
        self._webhook_jobs: dict[str, list[str]] = {}
        self._webhook_lock = threading.Lock()  # per-project webhook jobs
        self._webhook_pending = 0
        self._pending_lock = threading.Lock()
        self._predict_jobs: list[str] = []
        self._predict_lock = threading.Lock()  # /predict's background jobs

    # -- helpers ---------------------------------------------------------------
    def version_for(
        self, label_config: str | None, extra: Mapping[str, Any], record: bool = True
    ) -> str:
        """The model_version; ``record`` lists it in /versions (served ones only)."""
        version = model_version(label_config, extra, self.environ)
        if record and version not in self.versions:
            with self._versions_lock:
                if version not in self.versions:
                    self.versions.insert(0, version)
                    del self.versions[VERSIONS_KEPT:]
        return version

    def extra_params(self, project: Any) -> dict[str, Any]:
        if project is None:
            return {}
        try:
            return self.store.extra_params(project)
        except StateError:
            return {}

    # -- routes ----------------------------------------------------------------
    def health(self) -> tuple[dict[str, Any], str]:
        """The /health body and HTTP status line: ``200 OK`` only when a model
        can serve; else 503 whose reason phrase says why (Label Studio shows
        only ``503 Server Error: <phrase>``), and ``message`` says more."""
        queue = self.runner.status()
        up = bool(queue.get("queue_up"))
        model = queue.get("model") or {"state": "ready" if up else "unknown"}
        state = str(model.get("state")) if up else "down"
        body: dict[str, Any] = {
            "status": HEALTH_STATUS.get(state, state.upper()),
            "model_class": MODEL_CLASS,
            "model_version": self.version_for(None, {}, record=False),
            "model": model,
            "queue": queue,
            "workers_up": bool(queue.get("workers")),
        }
        if state == "ready":
            return body, "200 OK"
        body["message"] = _readiness_message(state, model, queue)
        return body, f"503 {HEALTH_PHRASES.get(state, 'Service Unavailable')}"

    def setup(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            state = make_state(
                body.get("project"),
                body.get("extra_params"),
                hostname=body.get("hostname"),
                label_config=body.get("schema"),
            )
        except StateError as exc:
            raise BadRequest(str(exc)) from None
        self.store.put(state)
        version = self.version_for(state.label_config, state.extra_params)
        log.info("setup: project %s -> %s", state.project, version)
        return {"model_version": version}

    def webhook(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Accept an event at once; its work runs in the background.

        ``TASKS_CREATED`` is checked here (project id, integer task ids), so a
        malformed one is answered 400 naming the bad part.
        """
        action = body.get("action")
        if action is not None and not isinstance(action, str):
            raise BadRequest("'action' must be a string")
        action = action or ""
        if action == "TASKS_CREATED":
            pid, tasks = _created_tasks(body)
            with self._pending_lock:
                if self._webhook_pending >= WEBHOOK_PENDING_LIMIT:
                    raise WebhookBacklog(
                        f"{self._webhook_pending} TASKS_CREATED events are waiting "
                        f"(WEBHOOK_PENDING_LIMIT); project {pid}'s is dropped, "
                        "pre-annotate it with `rexlabel prelabel`"
                    )
                self._webhook_pending += 1
            self.background.submit(self._tasks_created_work, pid, tasks)
        elif action == "START_TRAINING":
            log.info("webhook START_TRAINING ignored: rexlabel does not train")
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
                self._webhook_pending -= 1

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
        with self._webhook_lock:
            active = _active_jobs(self._webhook_jobs.get(pid, []))
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
                job = _start_bulk_job(
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
            self._webhook_jobs[pid] = [*active, job]
        log.info(
            "TASKS_CREATED: %d tasks of project %s -> job %s", len(tasks), pid, job
        )

    def predict(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The /predict reply, scrubbed (:func:`backend.replies.scrub_reply`):
        of the tasks it quotes only the image references the plan read."""
        reply, images = self._predict(body)
        return scrub_reply(reply, images)

    def _predict(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The reply unscrubbed, and the image references the plan read."""
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' must be a list of task objects")
        if not tasks:
            raise BadRequest("'tasks' is empty")
        params = body.get("params") or {}
        if not isinstance(params, Mapping):
            raise BadRequest("'params' must be an object")
        project = body.get("project")
        extra = self.extra_params(project)
        label_config = body.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            raise BadRequest("'label_config' must be a string (the XML config)")
        if not label_config and project is not None:
            try:
                state = self.store.get(project)
            except StateError:
                state = None
            label_config = state.label_config if state else ""
        version = self.version_for(label_config, extra)
        context = params.get("context")
        interactive = isinstance(context, Mapping) and bool(context.get("result"))

        try:
            plan = (
                plan_interactive(label_config or "", context, extra)
                if interactive
                else plan_config(label_config or "", extra)
            )
        except ContextError as exc:  # the request is malformed, not the config
            raise BadRequest(f"params.{exc}") from None
        except PlanError as exc:
            log.warning("predict: cannot plan project %s: %s", project, exc)
            annotate_request(interactive=interactive, failed_tasks=len(tasks))
            return self._all_failed(tasks, version, str(exc), interactive), []

        if not interactive and len(tasks) > self.config.sync_task_limit:
            reply = self._to_background(tasks, project, label_config, extra, version)
            return reply, []

        outcomes, images = self._run(
            plan, tasks, version, urgent=interactive, context=context
        )
        results = [
            failed_prediction(version, "; ".join(o.errors))
            if o.failed and not interactive
            else o.prediction
            for o in outcomes
        ]
        errors = [
            {"task": task_id_of(t), "error": "; ".join(o.errors)}
            for t, o in zip(tasks, outcomes, strict=True)
            if o.errors
        ]
        warnings = [
            {"task": task_id_of(t), "warning": w}
            for t, o in zip(tasks, outcomes, strict=True)
            for w in o.warnings
        ]
        for item in errors:
            log.warning("predict: task %s: %s", item["task"], item["error"])
        for item in warnings:
            log.info("predict: task %s: %s", item["task"], item["warning"])
        # the request's one log line (backend.instrumentation) carries the rest
        annotate_request(interactive=interactive, failed_tasks=len(errors))
        reply: dict[str, Any] = {"results": results, "model_version": version}
        if errors:
            reply["errors"] = errors
        if warnings:
            reply["warnings"] = warnings
        if plan.notes:
            reply["notes"] = list(plan.notes)
        return reply, images

    def _all_failed(
        self, tasks: list, version: str, error: str, interactive: bool
    ) -> dict[str, Any]:
        return {
            "results": [
                empty_prediction(version)
                if interactive
                else failed_prediction(version, error)
                for _ in tasks
            ],
            "model_version": version,
            "errors": [{"task": task_id_of(t), "error": error} for t in tasks],
        }

    def _to_background(
        self,
        tasks: list,
        project: Any,
        label_config: str,
        extra: dict[str, Any],
        version: str,
    ) -> dict[str, Any]:
        limit = self.config.sync_task_limit
        reason = (
            f"{len(tasks)} tasks are more than REXLABEL_SYNC_TASK_LIMIT={limit} "
            "can answer within Label Studio's timeout"
        )
        try:
            pid = project_id(project)
        except StateError:
            pid = None
        try:
            job = self._start_predict_job(
                tasks=list(tasks),
                project=pid,
                label_config=label_config,
                extra_params=extra,
                model_version=version,
                source="predict",
            )
        except RuntimeError as exc:
            log.warning("predict: %s, and %s", reason, exc)
            raise NoBackgroundJobs(f"{reason}, and {exc}") from None
        log.info("predict: %s: background job %s", reason, job)
        annotate_request(background_job=job)
        return {
            "results": [],
            "model_version": version,
            "background_job": job,
            "message": (
                f"{reason}: background job {job} posts the predictions to Label "
                "Studio as they finish"
            ),
        }

    def _start_predict_job(self, **kwargs: Any) -> str:
        """A bulk job for a /predict (see :func:`_start_bulk_job`), at most
        :data:`PREDICT_BACKGROUND_JOBS` at once. Its tasks are used as sent:
        the caller passed basic auth, it is Label Studio itself (a webhook's
        tasks are fetched from Label Studio instead, ``backend.bulk``).

        Raises:
            RuntimeError: that many run already, or jobs are unavailable.
        """
        with self._predict_lock:
            active = _active_jobs(self._predict_jobs)
            if len(active) >= PREDICT_BACKGROUND_JOBS:
                raise RuntimeError(
                    f"{len(active)} background jobs of /predict are still running "
                    "(PREDICT_BACKGROUND_JOBS); ask again when one has finished"
                )
            job = _start_bulk_job(**kwargs)
            self._predict_jobs = active if job in active else [*active, job]
            return job

    def _run(
        self,
        plan: Plan,
        tasks: list,
        version: str,
        *,
        urgent: bool,
        context: Mapping[str, Any] | None = None,
    ) -> tuple[list[TaskPrediction], list[str]]:
        """Plan, queue and convert: one TaskPrediction per task, in order, and
        the image references the plan read (``ImageJob.image``: of the tasks'
        data, the only values a reply may quote). ``context``: the interactive
        context (its answer gets ids of its own)."""
        errors: dict[int, str] = {}
        image_ids: dict[int, list[str]] = {}
        images: list[dict[str, Any]] = []
        for index, task in enumerate(tasks):
            if not isinstance(task, Mapping):
                errors[index] = f"task {index} is not an object"
                continue
            try:
                jobs = plan.image_jobs(task)
            except PlanError as exc:
                errors[index] = str(exc)
                continue
            image_ids[index] = []
            for job in jobs:
                # Unique per request even if two tasks share an id.
                job.id = f"{index}:{job.id}"
                image_ids[index].append(job.id)
                images.append(job.to_dict())

        size = self.config.chunk_size
        payloads = [
            {"images": images[i : i + size]} for i in range(0, len(images), size)
        ]
        found: dict[str, ImageResult] = {}
        for outcome in self.runner.run_many(
            payloads, timeout=self.config.predict_timeout, urgent=urgent
        ):
            if outcome.error is not None:
                for image in outcome.payload["images"]:
                    found[image["id"]] = ImageResult(
                        id=image["id"], error=outcome.error
                    )
                continue
            for item in (outcome.result or {}).get("images") or []:
                try:
                    result = ImageResult.from_dict(item)
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("predict: unreadable image result: %s", exc)
                    continue
                found[result.id] = result

        annotate_request(**summary_fields(summarize_results(found.values())))
        out: list[TaskPrediction] = []
        for index, task in enumerate(tasks):
            if index in errors:
                out.append(TaskPrediction(empty_prediction(version), [errors[index]]))
                continue
            results = [
                found.get(i) or ImageResult(id=i, error="the worker returned no result")
                for i in image_ids[index]
            ]
            for result in results:
                result.id = result.id.split(":", 1)[1]
            ids = RegionIds.for_task(task, version, context if urgent else None)
            out.append(task_prediction(plan, results, version, ids))
        return out, [image["image"] for image in images]


class NoBackgroundJobs(RuntimeError):
    """A /predict too large to answer in time, and no bulk jobs to take it."""


class WebhookBacklog(RuntimeError):
    """Too many TASKS_CREATED events wait already; answered 503."""


def _json_body() -> dict[str, Any]:
    """The request's JSON object; BadRequest when it is not one. A body nested
    deeper than Python's recursion limit is a bad request too, not a 500."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadRequest("the request body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def _created_tasks(body: Mapping[str, Any]) -> tuple[str, list[Mapping[str, Any]]]:
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


def _active_jobs(job_ids: list[str]) -> list[str]:
    """Those of ``job_ids`` still pending or running."""
    return [j for j in job_ids if _job_active(j)]


def _job_active(job_id: str) -> bool:
    """True while a bulk job is pending or running; False once it ended or
    when its status cannot be read (a job that vanished holds no slot)."""
    try:
        module = importlib.import_module(BULK_MODULE)
        status = getattr(module, BULK_STATUS_FUNCTION)(job_id).get("status")
    except Exception as exc:  # any failure: the job holds no slot
        log.debug("bulk job %s: status unknown: %s", job_id, exc)
        return False
    return status in BULK_ACTIVE_STATUSES


def _body_too_large() -> str:
    """The 413 message, with the limit this app enforces."""
    from flask import current_app

    limit = current_app.config.get("MAX_CONTENT_LENGTH") or MAX_BODY_BYTES
    return (
        f"the request body exceeds the capacity limit of {limit} bytes; "
        "send fewer tasks per request (or use `rexlabel prelabel`)"
    )


def _buffer_unsized_body() -> None:
    """Read a body sent without Content-Length (``Transfer-Encoding:
    chunked``) now, up to MAX_CONTENT_LENGTH + 1 bytes: over the limit it is
    answered 413 (werkzeug alone cuts such a body at the limit without a word
    and the prefix would be parsed); within it, the request reads it from
    memory afterwards. Only after the credentials passed; a server that does
    not frame such bodies (no ``wsgi.input_terminated``) gives an empty one."""
    from flask import current_app

    environ = request.environ
    if request.content_length is not None or not environ.get("wsgi.input_terminated"):
        return
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or MAX_BODY_BYTES
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(min(UNSIZED_READ_BYTES, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(b"".join(parts))


def create_app(
    environ: Mapping[str, str] | None = None,
    *,
    runner: ChunkRunner | None = None,
    store: StateStore | None = None,
    load_model: bool = True,
) -> Flask:
    """The app; settings come from ``environ`` (default: ``os.environ``).

    ``runner`` and ``store`` default to Redis when ``REDIS_URL`` is set, else
    in-process jobs and in-memory (or ``REXLABEL_STATE_PATH``) state. Every
    setting is read first, so a bad value anywhere (a worker-side one too: the
    model may run in this process) stops start-up with SettingsError naming it.

    A runner made here from the process environment (``environ`` None: what
    the model load reads) starts loading the model in the background at once
    (in-process; /health says ``loading`` meanwhile) unless ``load_model`` is
    False: a server that forks after this call (``rexlabel serve``'s gunicorn)
    starts it in the child (``runner.start()``); else the first request does.
    """
    settings.read_all(environ)
    config = BackendConfig.from_env(environ)
    problem = credentials_problem(config.auth)
    if problem:
        raise settings.SettingsError(problem)
    if runner is None:
        runner = create_runner(
            config.redis_url, settings.get("REXLABEL_ENGINE", environ)
        )
        if load_model and environ is None:
            runner.start()
    if store is None:
        redis_connection = getattr(runner, "connection", None)
        if redis_connection is None and config.redis_url:
            from common.redis_conn import redis_connection as connect

            redis_connection = connect(config.redis_url, purpose="state store")
        store = open_store(redis_connection, config.state_path)
    backend = Backend(config, runner, store, environ)

    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["rexlabel"] = backend
    health_connection = getattr(runner, "health_connection", None)
    instrument_flask(
        app, connection=(lambda: health_connection) if health_connection else None
    )

    @app.before_request
    def require_auth() -> Response | None:
        """The refusal of a request without valid credentials; once they pass,
        a body sent without Content-Length is read (up to the limit)."""
        refused = refusal()
        if refused is None:
            _buffer_unsized_body()
        return refused

    def refusal() -> Response | None:
        # Headers and query only: nothing reads the body before this passes.
        if not config.auth.host_allowed(request.host):
            return _error(
                "this backend has no basic auth (BASIC_AUTH_USER/BASIC_AUTH_PASS) "
                "and answers only requests addressed to 127.0.0.1 or localhost",
                403,
            )
        if request.path.rstrip("/") == "/webhook":
            token = request.args.get(WEBHOOK_TOKEN_PARAM) or request.headers.get(
                WEBHOOK_TOKEN_HEADER
            )
            if config.auth.check_webhook(token, request.headers.get("Authorization")):
                return None
            log.warning(
                "refused a /webhook without valid credentials: register the webhook "
                "in Label Studio as <backend>/webhook?%s=<REXLABEL_WEBHOOK_TOKEN> "
                "or give it an Authorization: Basic header",
                WEBHOOK_TOKEN_PARAM,
            )
            response = _error("webhook token or basic auth missing or wrong", 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="rexlabel"'
            return response
        if not config.auth.check_basic(request.headers.get("Authorization")):
            response = _error("authentication required", 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="rexlabel"'
            return response
        return None

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Response:
        return _error(str(exc), 400)

    @app.errorhandler(NoBackgroundJobs)
    def no_background(exc: NoBackgroundJobs) -> Response:
        return _error(scrub_text(str(exc)), 503)

    @app.errorhandler(WebhookBacklog)
    def webhook_backlog(exc: WebhookBacklog) -> Response:
        log.warning("webhook: %s", exc)
        return _error(str(exc), 503)

    @app.errorhandler(413)
    def too_large(_exc: Any) -> Response:
        return _error(_body_too_large(), 413)

    @app.errorhandler(404)
    def not_found(_exc: Any) -> Response:
        return _error(f"no route {request.method} {request.path}", 404)

    @app.errorhandler(405)
    def not_allowed(_exc: Any) -> Response:
        return _error(f"{request.method} is not allowed on {request.path}", 405)

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # 415, ...: werkzeug's own words
            return _error(exc.description or exc.name, exc.code or 500)
        # The reply names no exception, path or URL: the id finds it in the log.
        error_id = uuid.uuid4().hex[:12]
        log.exception(
            "unhandled error %s on %s %s", error_id, request.method, request.path
        )
        return _error(f"internal error (id {error_id}, in the backend's log)", 500)

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        body, status = backend.health()
        response = jsonify(_scrub_health(body))
        response.status = status
        return response

    @app.post("/setup")
    def setup() -> Response:
        return jsonify(backend.setup(_json_body()))

    @app.get("/versions")
    def versions() -> Response:
        default = [backend.version_for(None, {}, record=False)]
        return jsonify({"versions": list(backend.versions) or default})

    @app.post("/webhook")
    def webhook() -> Response:
        return jsonify(backend.webhook(_json_body()))

    @app.post("/predict")
    def predict() -> Response:
        body = _json_body()
        return jsonify(backend.predict(body))

    return app


def _error(message: str, status: int) -> Response:
    response = jsonify({"error": message, "status": status})
    response.status_code = status
    return response
