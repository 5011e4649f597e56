"""``rexlabel worker``: load Rex-Omni once and run chunks from Redis.

Usage::

    REDIS_URL=redis://localhost:6379 rexlabel worker
    rexlabel worker --queues rexlabel:bulk --burst

Listens on ``rexlabel:interactive`` before ``rexlabel:bulk``. SIGTERM finishes
the running chunk, then exits; a worker killed outright has its chunk re-run
by another worker within ``--execution-ttl`` seconds. See :mod:`worker.process`.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from worker.process import add_arguments

    parser = subparsers.add_parser(
        "worker",
        help="run a GPU worker: load the model once, serve the Redis queues",
        description="Load Rex-Omni once and run chunks from the Redis queues.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.process import run as run_worker

    return run_worker(args)
