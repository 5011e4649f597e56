"""Starting, running, listing, cancelling and resuming bulk jobs.

What the CLI (``rexlabel prelabel`` / ``rexlabel jobs``) and the backend (a
``/predict`` too large to answer in time, a ``TASKS_CREATED`` webhook) call;
jobs are made by :mod:`backend.bulk.creation`.

With a Redis connection chunks go to ``rexlabel:bulk`` workers; without one
(``--inline``, or no ``REDIS_URL``) the same chunk function runs in this
process, loading the model on first use.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from backend.bulk.creation import ProjectTarget, create_tasks_job
from backend.bulk.executors import InlineExecutor, RQExecutor
from backend.bulk.records import JobBusyError, JobError, JobRecord, JobSpec, JobStatus
from backend.bulk.runner import JobRun, failures
from backend.bulk.store import JobDir, JobStore, open_store, redis_connection
from backend.bulk.writers import FilesSink, LabelStudioSink
from common import settings

log = logging.getLogger(__name__)


TRUSTED_SOURCES = frozenset({"predict"})
"""Sources whose tasks are used as sent: a ``/predict`` comes from Label
Studio itself, with basic auth. Every other source's tasks (a webhook's body
is trusted no further than its token) are fetched from Label Studio first."""

DROPPED_IDS_LOGGED = 20
"""Task ids a log line names when tasks are dropped; the rest are counted."""


def _checked_tasks(
    client: Any, project: Any, tasks: list[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Label Studio's copy of each of ``tasks`` that is a task of ``project``
    (its ``data``, never the request's), once per id; the others are dropped
    and logged.

    Raises:
        RuntimeError: none of them is.
    """
    ids = list(dict.fromkeys(t.get("id") for t in tasks if isinstance(t, Mapping)))
    try:
        found, dropped = client.project_tasks(int(project), ids)
    except (TypeError, ValueError):
        raise RuntimeError(f"project {project!r} is no project id") from None
    if dropped:
        log.warning(
            "project %s: %d task(s) dropped, not tasks of this project in Label "
            "Studio: %s%s",
            project,
            len(dropped),
            dropped[:DROPPED_IDS_LOGGED],
            " ..." if len(dropped) > DROPPED_IDS_LOGGED else "",
        )
    if not found:
        raise RuntimeError(
            f"none of the {len(ids)} task(s) is a task of project {project} in "
            "Label Studio"
        )
    return found


def start_for_tasks(
    tasks: list[Mapping[str, Any]],
    *,
    project: Any,
    label_config: str,
    extra_params: Mapping[str, Any] | None,
    model_version: str,
    source: str = "",
    store: JobStore | None = None,
    background: bool = True,
) -> str:
    """Pre-label these Label Studio tasks in the background; returns the job id.

    The backend calls this for a ``/predict`` too large to answer in time and
    for ``TASKS_CREATED`` webhooks. Predictions are posted to LABEL_STUDIO_URL
    (never to a host a request named) with LABEL_STUDIO_API_KEY as chunks
    finish. For a ``source`` not in :data:`TRUSTED_SOURCES` (a webhook) each
    task is fetched from Label Studio first: only tasks of ``project`` are
    labelled, with Label Studio's data. A ``/predict``'s tasks are used as
    sent: its caller passed basic auth, and it is Label Studio itself.

    Raises:
        RuntimeError: Label Studio's URL or token is not configured, or no
        task of a checked source belongs to ``project``.
    """
    from common.labelstudio.api import LabelStudioAPIError, LabelStudioClient

    url = settings.get("LABEL_STUDIO_URL")
    try:
        client = LabelStudioClient(url, settings.get("LABEL_STUDIO_API_KEY"))
    except LabelStudioAPIError as exc:
        raise RuntimeError(f"background jobs post predictions to Label Studio: {exc}")
    if source not in TRUSTED_SOURCES:
        tasks = _checked_tasks(client, project, tasks)
    connection = redis_connection()
    store = store or open_store(connection)
    extra = dict(extra_params or {})
    target = ProjectTarget(project, label_config, extra, model_version, client.url)
    job = create_tasks_job(store, target, tasks, source=source)
    action = repeat_action(job)
    if action is None:
        log.info("job %s: running, or done without failures; nothing new", job.id)
    elif background:
        _start_thread(job, store, connection, client, retry=action == "retry")
    else:
        run_job(
            job,
            store,
            connection=connection,
            client=client,
            retry_failed=action == "retry",
        )
    return job.id


def repeat_action(job: JobDir) -> str | None:
    """What a request naming an existing ``job`` should run.

    ``"run"``: it is new or stopped before its end (run what is left);
    ``"retry"``: it finished with failed images (run those, only those;
    tasks already posted are skipped by the sink); None: it is running now
    (one runner per job) or finished without failures (nothing to add).
    """
    if job.is_running():
        return None
    record = job.read_status()
    if record is None or record.status != JobStatus.DONE:
        return "run"
    return "retry" if record.failed else None


def _start_thread(
    job: JobDir, store: JobStore, connection: Any, client: Any, *, retry: bool
) -> None:
    threading.Thread(
        target=_run_quietly,
        args=(job, store, connection, client, retry),
        name=f"rexlabel-job-{job.id}",
        daemon=True,
    ).start()


def _run_quietly(
    job: JobDir, store: JobStore, connection: Any, client: Any, retry: bool
) -> None:
    try:
        run_job(job, store, connection=connection, client=client, retry_failed=retry)
    except JobBusyError as exc:
        log.info("background job: %s", exc)  # a repeat request raced the runner
    except Exception:
        log.exception("background job %s failed", job.id)


# Running -------------------------------------------------------------------------


def sink_for(spec: JobSpec, job: JobDir, client: Any = None) -> Any:
    if spec.kind == "files":
        return FilesSink()
    if spec.kind == "project":
        if client is None:
            from common.labelstudio.api import LabelStudioClient

            client = LabelStudioClient(
                spec.project.get("url") or settings.get("LABEL_STUDIO_URL"),
                settings.get("LABEL_STUDIO_API_KEY"),
            )
        return LabelStudioSink(client, job)
    raise JobError(f"job {spec.id}: unknown kind {spec.kind!r}")


def executor_for(connection: Any) -> Any:
    return RQExecutor(connection) if connection is not None else InlineExecutor()


def run_job(
    job: JobDir,
    store: JobStore,
    *,
    connection: Any = None,
    executor: Any = None,
    client: Any = None,
    on_progress: Callable[[JobRecord], None] | None = None,
    retry_failed: bool = False,
) -> JobRecord:
    """Run what is left of ``job`` (or its failed images) to the end.

    Chunks go to RQ workers when ``connection`` is given, else run in this
    process. A pending cancel is cleared first: running a job resumes it.
    """
    spec = job.read_spec()
    store.clear_cancel(spec.id)
    run = JobRun(
        job,
        store,
        executor or executor_for(connection),
        sink_for(spec, job, client),
        on_progress=on_progress,
    )
    return run.run(retry_failed=retry_failed)


def list_jobs(store: JobStore | None = None) -> list[dict[str, Any]]:
    """Every known job's record (newest first), as plain dicts."""
    return [
        r.to_dict() for r in (store or open_store(redis_connection())).list_records()
    ]


def job_status(job_id: str, store: JobStore | None = None) -> dict[str, Any]:
    """A job's record plus its first failures (``failures``)."""
    store = store or open_store(redis_connection())
    record = store.record(job_id).to_dict()
    job = store.job_dir(job_id)
    record["failures"] = failures(job, limit=20) if job.exists() else []
    return record


def cancel_job(job_id: str, store: JobStore | None = None) -> dict[str, Any]:
    """Ask the process running the job to stop; queued chunks are withdrawn."""
    store = store or open_store(redis_connection())
    store.record(job_id)  # JobError for an unknown id
    store.request_cancel(job_id)
    job = store.job_dir(job_id)
    if job.exists() and not job.is_running():
        record = store.record(job_id)
        if record.status != JobStatus.DONE:
            record.status = JobStatus.CANCELLED
            record.message = "cancelled; jobs resume continues it"
            store.save_record(job, record)
    return store.record(job_id).to_dict()


def resume_job(
    job_id: str,
    store: JobStore | None = None,
    *,
    connection: Any = None,
    on_progress: Callable[[JobRecord], None] | None = None,
    retry_failed: bool = False,
    background: bool = False,
) -> dict[str, Any] | str:
    """Continue a stopped job here (``background``: in a thread; returns its id)."""
    store = store or open_store(connection)
    job = store.get(job_id)
    if background:
        _start_thread(job, store, connection, None, retry=retry_failed)
        return job_id
    return run_job(
        job,
        store,
        connection=connection,
        on_progress=on_progress,
        retry_failed=retry_failed,
    ).to_dict()
