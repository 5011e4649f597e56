"""Run rexlabel's RQ worker class on the test Redis (no model loaded).

``python -m tests.backend.worker_main REDIS_URL NAME`` serves the rexlabel
queues with :func:`worker.process.build_worker` (JSON serializer, heartbeats)
until SIGTERM. Jobs are whatever the test enqueued by dotted path.
"""

from __future__ import annotations

import sys

from redis import Redis

from worker.jobs import QUEUES
from worker.process import build_worker


def main(url: str, name: str) -> int:
    worker = build_worker(Redis.from_url(url), QUEUES, name=name)
    worker.work(logging_level="WARNING")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
