"""RQ jobs read safely: only rexlabel's own run, and none is trusted on its word.

RQ imports and calls whatever dotted name a job in Redis holds, imports its
callbacks by name and posts its webhooks to any URL. Anyone who can write to
Redis could so run code on the GPU boxes or on the backend. The worker
(``worker.process.RexWorker``) asks :func:`refusal` before it runs a job and
fails a refused one with :func:`disarm`; whoever cleans RQ's registries (every
worker's maintenance, the backend's bulk executor) does it through
:func:`clean_queue`, which reads jobs as :class:`RexJob`.
"""

from __future__ import annotations

from typing import Any

from rq import Queue
from rq.job import Job

from common.queues import JOB_FUNCTIONS

CLEANUP_LOCK_TTL_S = 30
"""One cleaner per queue at a time (two would re-enqueue an abandoned chunk
twice). RQ's own lock lives 15 minutes if its holder is killed mid-cleanup;
ours lives 30 s, far longer than a cleanup takes."""
CLEANUP_LOCK_PREFIX = "rexlabel:cleanup:"
"""Redis key of a queue's cleanup lock is this prefix plus the queue name."""
REFUSED_PREFIX = "JobRefused: "
"""Starts the failure text of a refused job (the last line the backend shows)."""


def refusal(job: Job, allowed: frozenset[str] = JOB_FUNCTIONS) -> str | None:
    """Why the worker must not run ``job``, or None when it may.

    Reads only the job's stored fields: nothing it names is imported. Refused
    are a function outside ``allowed``, one bound to an instance, and any
    callback or webhook (RQ imports callbacks by name and posts webhooks to any
    URL; rexlabel's jobs have neither).
    """
    try:
        name, instance = job.func_name, job.instance
    except Exception as exc:  # RQ's DeserializationError, a malformed payload
        return f"unreadable job payload ({type(exc).__name__})"
    if not isinstance(name, str) or name not in allowed:
        return f"function {name!r} is not a rexlabel job function"
    if instance is not None:
        return f"function {name!r} is bound to an instance"
    callbacks = [
        callback
        for callback in (
            job._success_callback_name,
            job._failure_callback_name,
            job._stopped_callback_name,
        )
        if callback
    ]
    if callbacks:
        return f"function {name!r} has callbacks {callbacks!r}"
    if job.webhooks:
        urls = [getattr(webhook, "url", "?") for webhook in job.webhooks]
        return f"function {name!r} has webhooks {urls!r}"
    return None


def disarm(job: Job) -> None:
    """Drop what RQ would run or send when it fails ``job``: its callbacks,
    webhooks and retries (in memory; RQ saves the job as it fails it). An
    unreadable payload gets a placeholder function name, which RQ's bookkeeping
    reads (it would raise again, and an exception there stops the worker)."""
    try:
        job.func_name  # decodes the payload, or raises
    except Exception:
        job._func_name, job._instance = "<unreadable job payload>", None
        job._args, job._kwargs = (), {}
    job._success_callback_name = job._failure_callback_name = None
    job._stopped_callback_name = None
    job._success_callback = job._failure_callback = job._stopped_callback = None
    job.webhooks = []
    job.retries_left = 0


class RexJob(Job):
    """RQ's job, without what RQ would import, call or post on a job's word.

    rexlabel's jobs carry no callbacks and no webhooks. RQ resolves a job's
    callback names with ``import_attribute`` and posts its webhooks not only
    in the worker (:func:`refusal` guards that) but also while it cleans the
    registries of abandoned jobs -- in every worker's maintenance and in the
    backend's bulk executor. Here a callback is never resolved (None) and no
    webhook is sent, whatever a job written into Redis names.
    """

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, *args: Any, **kwargs: Any) -> None:
        return None


def clean_queue(queue: Queue, exception_handlers: list | None = None) -> bool:
    """Re-enqueue a queue's abandoned jobs (retries left) or fail them, and tidy
    RQ's other registries; skipped (False) while another process cleans it.
    Jobs are read as :class:`RexJob`, whoever built ``queue``."""
    from rq.registry import clean_registries

    queue.job_class = RexJob
    key = CLEANUP_LOCK_PREFIX + queue.name
    if not queue.connection.set(key, 1, nx=True, ex=CLEANUP_LOCK_TTL_S):
        return False
    try:
        clean_registries(queue, exception_handlers)
    finally:
        queue.connection.delete(key)
    return True
