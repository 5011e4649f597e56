"""``rexlabel worker``: load Rex-Omni once and run chunks from Redis.

Usage::

    REDIS_URL=redis://localhost:6379 rexlabel worker
    rexlabel worker --queues rexlabel:bulk --burst
    rexlabel worker --train                     # training jobs only, no model loaded
    rexlabel worker --help                      # every option

Listens on ``rexlabel:interactive`` before ``rexlabel:bulk``; ``--train``
runs Label Studio's Start Training jobs from ``rexlabel:train``. SIGTERM finishes
the running chunk, then exits; a worker killed outright has its chunk re-run
by another worker within ``--execution-ttl`` seconds. The options are
:mod:`worker.process`'s (imported only when the command runs, so ``rexlabel
--help`` does not load RQ).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="run a GPU worker: load the model once, serve the Redis queues",
        add_help=False,  # --help goes to worker.process's own parser
        prefix_chars="+",  # so every "--option" lands in worker_args untouched
    )
    parser.add_argument("worker_args", nargs="*")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from worker.process import main

    return main(args.worker_args)
