"""``rexlabel jobs``: list, inspect, cancel and resume bulk jobs.

Usage::

    rexlabel jobs list [--json]
    rexlabel jobs status ID [--json]
    rexlabel jobs cancel ID
    rexlabel jobs resume ID [--inline] [--retry-failed]

Jobs are read from ``REXLABEL_JOBS_DIR`` and, with ``REDIS_URL``, from Redis
(jobs other processes run, e.g. the backend's). ``cancel`` asks the process
running the job to stop (queued chunks are withdrawn; finished ones are kept);
``resume`` continues a stopped job in this process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EXIT_UNKNOWN_JOB = 2
"""No job with that id, or it is running elsewhere (the code of a usage error)."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "jobs",
        help="list, inspect, cancel or resume bulk jobs",
        description="List, inspect, cancel or resume bulk pre-labeling jobs.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every known job, newest first")
    listing.add_argument("--json", action="store_true")
    status = actions.add_parser("status", help="one job's progress and failures")
    status.add_argument("id")
    status.add_argument("--json", action="store_true")
    cancel = actions.add_parser("cancel", help="stop a job (resume continues it)")
    cancel.add_argument("id")
    resume = actions.add_parser("resume", help="continue a stopped job here")
    resume.add_argument("id")
    resume.add_argument(
        "--inline",
        action="store_true",
        help="run chunks in this process even if REDIS_URL is set",
    )
    resume.add_argument(
        "--retry-failed", action="store_true", help="run only the images that failed"
    )
    resume.add_argument("--quiet", action="store_true", help="no progress bar")
    resume.add_argument(
        "--json", action="store_true", help="print the final job record as JSON"
    )
    parser.set_defaults(func=run)


def _age(timestamp: float) -> str:
    if not timestamp:
        return "-"
    seconds = max(0, int(time.time() - timestamp))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def format_record(record: dict[str, Any]) -> str:
    from backend.bulk.progress import format_eta

    finished = record["done"] + record["failed"] + record["skipped"]
    line = (
        f"{record['id']}  {record['status']:<11} {finished}/{record['total']} "
        f"({record['failed']} failed)"
    )
    if record["status"] == "running":
        line += f"  {record['rate']:.1f} img/s  ETA {format_eta(record['eta_s'])}"
    return line + f"  updated {_age(record['updated_at'])}"


def run(args: argparse.Namespace) -> int:
    from backend.bulk import JobError

    try:
        return _run(args)
    except JobError as exc:  # an unknown id, or a job running elsewhere
        print(f"rexlabel jobs: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN_JOB


def _run(args: argparse.Namespace) -> int:
    from backend.bulk.orchestration import cancel_job, job_status, list_jobs
    from backend.bulk.store import open_store, redis_connection

    mirror = redis_connection()
    store = open_store(mirror)
    if args.action == "list":
        records = list_jobs(store)
        if args.json:
            print(json.dumps(records, indent=1))
        elif not records:
            print("no jobs")
        else:
            for record in records:
                print(format_record(record))
        return 0
    if args.action == "status":
        record = job_status(args.id, store)
        if args.json:
            print(json.dumps(record, indent=1))
            return 0
        print(format_record(record))
        for name, value in (record.get("outputs") or {}).items():
            if value not in (None, ""):
                print(f"  {name}: {value}")
        if record.get("message"):
            print(f"  {record['message']}")
        for item in record.get("failures") or []:
            print(
                f"  failed {item.get('image') or item.get('id')}: {item.get('error')}"
            )
        return 0
    if args.action == "cancel":
        record = cancel_job(args.id, store)
        print(f"cancel requested: {format_record(record)}")
        return 0
    from backend.commands.prelabel import execute

    job = store.get(args.id)
    return execute(job, store, None if args.inline else mirror, args)
