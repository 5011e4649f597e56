"""``rexlabel jobs``: list, inspect, cancel and resume bulk jobs; list,
inspect and cancel training jobs.

Usage::

    rexlabel jobs list [--json]
    rexlabel jobs status ID [--json]
    rexlabel jobs cancel ID
    rexlabel jobs resume ID [--inline] [--retry-failed]

Bulk jobs are read from ``REXLABEL_JOBS_DIR`` and, with ``REDIS_URL``, from
Redis (jobs other processes run, e.g. the backend's). ``cancel`` asks the
process running the job to stop (queued chunks are withdrawn; finished ones
are kept); ``resume`` continues a stopped job in this process.

Training jobs (``train-...``, Label Studio's Start Training) live in Redis
only (``common.training_jobs``): listed with kind ``train``, their step,
loss and ETA; ``cancel`` interrupts the run (it keeps a checkpoint) or takes
a queued one off the queue. They cannot be resumed: start a new run.
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
    """One line: id, kind, status and progress, age of the last update."""
    from backend.bulk.progress import format_eta

    if record.get("kind") == "train":
        return format_training(record)
    finished = record["done"] + record["failed"] + record["skipped"]
    line = (
        f"{record['id']}  {record.get('kind') or 'bulk':<7} {record['status']:<11} "
        f"{finished}/{record['total']} ({record['failed']} failed)"
    )
    if record["status"] == "running":
        line += f"  {record['rate']:.1f} img/s  ETA {format_eta(record['eta_s'])}"
    return line + f"  updated {_age(record['updated_at'])}"


def format_training(record: dict[str, Any]) -> str:
    """A training job's line: project, step of steps, loss, ETA while running."""
    from backend.bulk.progress import format_eta

    line = f"{record['id']}  train   {record['state']:<11} project {record['project']}"
    if record.get("steps"):
        line += f"  step {record.get('step') or 0}/{record['steps']}"
    if isinstance(record.get("loss"), (int, float)):
        line += f"  loss {record['loss']:.4f}"
    if record["state"] == "running" and record.get("eta_s") is not None:
        line += f"  ETA {format_eta(record['eta_s'])}"
    return line + f"  updated {_age(record.get('updated') or 0)}"


def training_records(connection: Any) -> list[dict[str, Any]]:
    """Every training job's record as it stands (none without Redis)."""
    if connection is None:
        return []
    from common.training_jobs import list_records, reconciled

    return [reconciled(connection, r) for r in list_records(connection)]


def _created(record: dict[str, Any]) -> float:
    if record.get("kind") == "train":
        return float(record.get("created") or 0)
    return float(record.get("started_at") or record.get("updated_at") or 0)


def _training_job(connection: Any, job_id: str) -> dict[str, Any] | None:
    """The training job ``job_id`` (reconciled), or None when it is not one."""
    from common.training_jobs import is_job_id, read_record, reconciled

    if connection is None or not is_job_id(job_id):
        return None
    record = read_record(connection, job_id)
    return reconciled(connection, record) if record else None


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
        records = sorted(
            [*list_jobs(store), *training_records(mirror)], key=_created, reverse=True
        )
        if args.json:
            print(json.dumps(records, indent=1))
        elif not records:
            print("no jobs")
        else:
            for record in records:
                print(format_record(record))
        return 0
    training = _training_job(mirror, getattr(args, "id", ""))
    if training is not None:
        return _training_action(args, mirror, training)
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


def _training_action(args: argparse.Namespace, connection: Any, record: dict) -> int:
    """``status``, ``cancel`` or ``resume`` of a training job."""
    if args.action == "status":
        if args.json:
            print(json.dumps(record, indent=1))
            return 0
        print(format_training(record))
        for name in ("run", "out", "error"):
            if record.get(name):
                print(f"  {name}: {record[name]}")
        for name in ("options", "examples", "metrics"):
            if record.get(name):
                print(f"  {name}: {json.dumps(record[name], sort_keys=True)}")
        return 0
    if args.action == "cancel":
        from common.training_jobs import cancel_training, reconciled

        record = reconciled(connection, cancel_training(connection, args.id))
        print(f"cancel requested: {format_training(record)}")
        return 0
    print(
        f"rexlabel jobs: {args.id} is a training job: it cannot be resumed; "
        "start a new run (Label Studio's Start Training, or POST /train)",
        file=sys.stderr,
    )
    return EXIT_UNKNOWN_JOB
