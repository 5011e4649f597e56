"""The job contract's names: which Redis queues exist and which function a job runs.

The backend enqueues :data:`RUN_CHUNK` (and, for Label Studio's "Start
Training", :data:`RUN_TRAINING`) by its dotted path, as text; a worker
(``worker.process.RexWorker``) runs nothing outside :data:`JOB_FUNCTIONS`, and
a training job only when started with ``--train``. The payload and result
formats are in :mod:`common.jobspec` (chunks) and :mod:`common.training_jobs`
(training).
"""

from __future__ import annotations

QUEUE_INTERACTIVE = "rexlabel:interactive"
"""A human is waiting (Label Studio /predict): workers take these first."""
QUEUE_BULK = "rexlabel:bulk"
"""Pre-labeling jobs: taken when no interactive work waits."""
QUEUES = (QUEUE_INTERACTIVE, QUEUE_BULK)
"""The queues a serving worker listens on, highest priority first."""
QUEUE_TRAIN = "rexlabel:train"
"""Fine-tuning jobs: only workers started with ``rexlabel worker --train``
listen here (a training run holds its worker for hours)."""
RUN_CHUNK = "worker.jobs.run_chunk"
"""Dotted path of ``worker.jobs.run_chunk``, what the backend enqueues (as text:
the backend never imports the worker's job module)."""
RUN_TRAINING = "worker.training_job.run_training"
"""Dotted path of ``worker.training_job.run_training``: fine-tune a project's
model in a child process (``rexlabel finetune``) and publish the new run."""
JOB_FUNCTIONS = frozenset({RUN_CHUNK, RUN_TRAINING})
"""The only functions a rexlabel worker runs: RQ imports and calls whatever
dotted name a job in Redis holds, so anyone who can write to Redis could
otherwise run ``os.system`` on the GPU boxes."""
