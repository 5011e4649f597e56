"""``rexlabel worker`` that also runs :data:`NOTE`, the worker tests' job function.

``python -m tests.worker.note_worker worker ARGS`` is ``rexlabel worker ARGS``
with ``tests.worker.rq_jobfuncs.note`` added to the functions the worker runs
(a real worker runs only ``common.queues.JOB_FUNCTIONS``).
"""

from __future__ import annotations

import sys

from backend.cli import main
from common.queues import JOB_FUNCTIONS
from worker.process import RexWorker

NOTE = "tests.worker.rq_jobfuncs.note"
"""Appends a name to a Redis list, then sleeps: see tests.worker.rq_jobfuncs."""

if __name__ == "__main__":
    RexWorker.allowed_functions = JOB_FUNCTIONS | {NOTE}
    sys.exit(main())
