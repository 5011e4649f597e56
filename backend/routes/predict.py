"""``POST /predict``: Label Studio's tasks in, one prediction per task out.

One item per task, in order, always with ``model_version``. A task that fails
or misses the deadline gets an item without ``result`` (``{"model_version":
..., "error": "..."}``), which Label Studio skips, so it stays without a
prediction and is asked for again later; its reason is in the logs and in
``errors`` (``[{"task": id, "error": "..."}]``). It never takes other tasks
down. Interactive requests (``params.context.result``) reply ``{"results":
[{"result": [...], ...}]}``, with ``"result": []`` for a failure (nothing is
stored from them). More than ``REXLABEL_SYNC_TASK_LIMIT`` tasks become a
background bulk job (:mod:`backend.routes.background`); the reply then has no
results and says which job took over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.config import BackendConfig
from backend.instrumentation import annotate_request
from backend.planner import (
    ContextError,
    Plan,
    PlanError,
    plan_config,
    plan_interactive,
    task_id_of,
)
from backend.predictions import (
    RegionIds,
    TaskPrediction,
    empty_prediction,
    failed_prediction,
    task_prediction,
)
from backend.queue import ChunkRunner
from backend.replies import scrub_reply
from backend.routes import background
from backend.routes.bodies import BadRequest
from backend.state import StateError, StateStore, project_id
from common.jobspec import ImageResult
from common.loglines import summarize_results, summary_fields

log = logging.getLogger(__name__)

PREDICT_BACKGROUND_JOBS = 4
"""Background jobs started by /predict pending or running at once (each a
thread posting to Label Studio, all sharing the workers): Label Studio asks
for one selection at a time per user, so more is a flood; beyond it 503."""


class NoBackgroundJobs(RuntimeError):
    """A /predict too large to answer in time, and no bulk jobs to take it."""


@dataclass
class Predictions:
    """What ``/predict`` answers; ``version_for(label_config, extra)`` is the
    app's model version (listed in /versions)."""

    config: BackendConfig
    runner: ChunkRunner
    store: StateStore
    version_for: Callable[[str | None, Mapping[str, Any]], str]
    _jobs: list[str] = field(default_factory=list, init=False)
    """/predict's background jobs that held a slot when last counted."""
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def extra_params(self, project: Any) -> dict[str, Any]:
        """The extra params /setup stored for ``project`` (none: ``{}``)."""
        if project is None:
            return {}
        try:
            return self.store.extra_params(project)
        except StateError:
            return {}

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
        """A bulk job for a /predict (:func:`background.start_bulk_job`), at most
        :data:`PREDICT_BACKGROUND_JOBS` at once. Its tasks are used as sent:
        the caller passed basic auth, it is Label Studio itself (a webhook's
        tasks are fetched from Label Studio instead, ``backend.bulk``).

        Raises:
            RuntimeError: that many run already, or jobs are unavailable.
        """
        with self._jobs_lock:
            active = background.active_jobs(self._jobs)
            if len(active) >= PREDICT_BACKGROUND_JOBS:
                raise RuntimeError(
                    f"{len(active)} background jobs of /predict are still running "
                    "(PREDICT_BACKGROUND_JOBS); ask again when one has finished"
                )
            job = background.start_bulk_job(**kwargs)
            self._jobs = active if job in active else [*active, job]
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
