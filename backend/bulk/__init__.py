"""Bulk pre-labeling jobs: chunked, resumable, cancellable (see ``api``).

The backend's large ``/predict`` and ``TASKS_CREATED`` call :func:`start_for_tasks`;
the CLI and the ``/jobs`` routes use the rest.
"""

from backend.bulk.api import (
    CHUNK_SIZE,
    cancel_job,
    create_files_job,
    create_project_job,
    job_status,
    list_jobs,
    resume_job,
    run_job,
    start_for_tasks,
)
from backend.bulk.store import (
    JobBusyError,
    JobError,
    JobRecord,
    JobSpec,
    JobStore,
    NothingToDo,
)

__all__ = [
    "CHUNK_SIZE",
    "JobBusyError",
    "JobError",
    "JobRecord",
    "JobSpec",
    "JobStore",
    "NothingToDo",
    "cancel_job",
    "create_files_job",
    "create_project_job",
    "job_status",
    "list_jobs",
    "resume_job",
    "run_job",
    "start_for_tasks",
]
