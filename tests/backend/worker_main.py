"""Run rexlabel's RQ worker class on the test Redis (no model loaded).

``python -m tests.backend.worker_main REDIS_URL NAME`` serves the rexlabel
queues with :func:`worker.process.build_worker` (JSON serializer, heartbeats)
until SIGTERM. Jobs are rexlabel's own or tests.backend.jobfuncs', by dotted path.
"""

from __future__ import annotations

import sys

from redis import Redis

from common.queues import JOB_FUNCTIONS, QUEUES
from tests.backend import jobfuncs
from worker.process import build_worker

TEST_FUNCTIONS = frozenset(
    f"{jobfuncs.__name__}.{name}"
    for name, value in vars(jobfuncs).items()
    if callable(value) and getattr(value, "__module__", "") == jobfuncs.__name__
)
"""The queue tests' job functions: allowed besides rexlabel's own."""


def main(url: str, name: str) -> int:
    worker = build_worker(
        Redis.from_url(url),
        QUEUES,
        name=name,
        allowed_functions=JOB_FUNCTIONS | TEST_FUNCTIONS,
    )
    worker.work(logging_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
