"""Background bulk jobs started by the routes (a webhook's ``TASKS_CREATED``,
a ``/predict`` too large to answer in time), and whether they still run.

The bulk helper is reached by name (:data:`BULK_MODULE`), so a build without
it answers that background jobs are not available instead of failing to start.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

log = logging.getLogger(__name__)

BULK_MODULE = "backend.bulk"
BULK_FUNCTION = "start_for_tasks"
"""The bulk helper's entry point: ``start_for_tasks(tasks, *, project,
label_config, extra_params, model_version, source)`` -> job id. It posts to
LABEL_STUDIO_URL only: /setup's ``hostname`` is stored, never used for a request."""

BULK_STATUS_FUNCTION = "job_status"
"""The bulk helper's ``job_status(job_id)`` -> ``{"status": ...}``."""

BULK_ACTIVE_STATUSES = ("pending", "running")
"""Job statuses that hold a slot (``backend.bulk.JobStatus`` values): of the
webhook jobs per project, of /predict's background jobs."""


def start_bulk_job(**kwargs: Any) -> Any:
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


def active_jobs(job_ids: list[str]) -> list[str]:
    """Those of ``job_ids`` still pending or running."""
    return [j for j in job_ids if job_active(j)]


def job_active(job_id: str) -> bool:
    """True while a bulk job is pending or running; False once it ended or
    when its status cannot be read (a job that vanished holds no slot)."""
    try:
        module = importlib.import_module(BULK_MODULE)
        status = getattr(module, BULK_STATUS_FUNCTION)(job_id).get("status")
    except Exception as exc:  # any failure: the job holds no slot
        log.debug("bulk job %s: status unknown: %s", job_id, exc)
        return False
    return status in BULK_ACTIVE_STATUSES
