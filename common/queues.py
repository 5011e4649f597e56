"""The job contract's names: which Redis queues exist and which function a job runs.

The backend enqueues :data:`RUN_CHUNK` by its dotted path, as text; a worker
(``worker.process.RexWorker``) runs nothing outside :data:`JOB_FUNCTIONS`. The
payload and result formats are in :mod:`common.jobspec`.
"""

from __future__ import annotations

QUEUE_INTERACTIVE = "rexlabel:interactive"
"""A human is waiting (Label Studio /predict): workers take these first."""
QUEUE_BULK = "rexlabel:bulk"
"""Pre-labeling jobs: taken when no interactive work waits."""
QUEUES = (QUEUE_INTERACTIVE, QUEUE_BULK)
"""The queues a worker listens on, highest priority first."""
RUN_CHUNK = "worker.jobs.run_chunk"
"""Dotted path of ``worker.jobs.run_chunk``, what the backend enqueues (as text:
the backend never imports the worker's job module)."""
JOB_FUNCTIONS = frozenset({RUN_CHUNK})
"""The only functions a rexlabel worker runs: RQ imports and calls whatever
dotted name a job in Redis holds, so anyone who can write to Redis could
otherwise run ``os.system`` on the GPU boxes."""
