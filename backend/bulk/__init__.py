"""Bulk pre-labeling jobs: chunked, resumable, cancellable.

A job is made by :mod:`~backend.bulk.creation` (image files, or Label Studio
tasks), kept by :mod:`~backend.bulk.store` (spec and progress record:
:mod:`~backend.bulk.records`) and run, listed, cancelled and resumed through
:mod:`~backend.bulk.orchestration`. The backend's large ``/predict`` and
``TASKS_CREATED`` call :func:`start_for_tasks`; the CLI uses the rest.
"""

from backend.bulk.creation import CHUNK_SIZE, create_files_job, create_project_job
from backend.bulk.orchestration import (
    cancel_job,
    job_status,
    list_jobs,
    resume_job,
    run_job,
    start_for_tasks,
)
from backend.bulk.records import (
    JobBusyError,
    JobError,
    JobRecord,
    JobSpec,
    JobStatus,
    NothingToDo,
)
from backend.bulk.store import JobStore

__all__ = [
    "CHUNK_SIZE",
    "JobBusyError",
    "JobError",
    "JobRecord",
    "JobSpec",
    "JobStatus",
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
