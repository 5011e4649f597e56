"""The worker process: load the engine once, then serve the RQ queues.

``rexlabel worker`` runs :func:`main`. It loads the engine (and SAM) into
:mod:`worker.jobs` before it listens, then executes chunks in this very process
(a non-forking worker, so CUDA is never initialised before a fork and the model
is never loaded twice).

Liveness: while a chunk runs, a thread sends heartbeats every
``heartbeat_interval`` seconds; each one pushes the chunk's execution in RQ's
StartedJobRegistry ``execution_ttl`` seconds ahead. A worker killed with
``kill -9`` stops sending them, its execution expires, and the next registry
clean-up (any worker's maintenance, or a waiting bulk job) re-enqueues the
chunk when it has retries left (jobs are enqueued with ``Retry``).

Shutdown: SIGTERM (or Ctrl-C) lets the running chunk finish, then exits; a
second signal stops at once (the chunk is then re-run elsewhere). A ``--burst``
worker does not listen for RQ's commands (stop-job, shutdown), so it exits as
soon as the queues are empty; a long-running one polls for them every
:data:`PUBSUB_POLL_S` and so exits within that time of its last chunk.

Only our own jobs run: RQ would import and call any dotted name a job in Redis
holds (and its callbacks), so :meth:`RexWorker.execute_job` fails every job whose
function is not in :data:`common.queues.JOB_FUNCTIONS` -- or that carries
callbacks, webhooks or an instance -- before anything it names is imported
(:func:`common.rq_jobs.refusal`; the job safety code the backend shares).

Training (``--train``): a worker started with ``--train`` alone listens to
``rexlabel:train`` only, loads no serving model (each training job runs
``rexlabel finetune`` in a child process that loads its own) and runs nothing
but training jobs. ``--train --queues Q1,Q2`` serves those queues too and adds
``rexlabel:train`` last: it loads the serving model and, while it trains (for
hours), serves nothing -- and the GPU must hold the serving model and the
training at once; give training a worker of its own where you can. A worker
without ``--train`` refuses a training job, whatever queue it came on. The
heartbeats keep a training job alive however long it runs (its execution is
pushed ``--execution-ttl`` ahead every beat; RQ's job timeout,
``common.training_jobs.TRAIN_JOB_TIMEOUT_S``, bounds it); a warm shutdown
(SIGTERM) interrupts a running training (it checkpoints) instead of waiting
for it to end.
"""

from __future__ import annotations

import argparse
import logging
import threading
import uuid
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import SimpleWorker, WorkerStatus

from common import settings
from common.logs import configure_logging
from common.model_state import LoadReporter
from common.queues import JOB_FUNCTIONS, QUEUE_TRAIN, QUEUES, RUN_CHUNK, RUN_TRAINING
from common.redis_conn import redis_connection
from common.rq_jobs import REFUSED_PREFIX, RexJob, clean_queue, disarm, refusal
from worker.metrics_server import start_worker_metrics_server

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5
"""Seconds between heartbeats while a chunk runs: cheap (one Redis pipeline)."""
EXECUTION_TTL_S = 20
"""A running chunk whose worker sent no heartbeat for this long counts as
abandoned and is re-enqueued: four missed heartbeats, so a slow Redis round trip
never re-runs a healthy chunk, while a killed worker's chunk moves on quickly."""
WORKER_TTL_S = 30
"""How long the worker's own key lives without a heartbeat. RQ blocks on the
queues for ``WORKER_TTL_S - 15`` seconds at a time, so an idle worker wakes up
every 15 s to run its maintenance (registry clean-up) at the latest."""
MAINTENANCE_INTERVAL_S = 10
"""How often a worker cleans the registries (re-enqueues abandoned chunks);
RQ's default of 10 minutes would leave a dead worker's chunk waiting that long."""
REDIS_UNREACHABLE_EXIT = 1
"""Exit code when Redis does not answer at start: a supervisor restarts the worker."""
PUBSUB_POLL_S = 1.0
"""Seconds RQ's command listener (stop-job, shutdown) waits for a message at a
time. Shutdown joins that thread, so it takes up to this long; RQ's own 60 s made
every worker (``--burst`` ones included) linger a minute after its last job."""


class RexWorker(SimpleWorker):
    """An RQ worker that runs jobs in its own process and heartbeats meanwhile.

    ``SimpleWorker`` does not fork (the loaded model stays usable) but, unlike
    RQ's forking worker, sends no heartbeat while a job runs; this class adds a
    heartbeat thread and a short execution TTL so that a dead worker is noticed
    in seconds rather than after the job timeout.
    """

    job_class = RexJob
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S
    execution_ttl: int = EXECUTION_TTL_S
    allowed_functions: frozenset[str] = JOB_FUNCTIONS
    pubsub_poll: float = PUBSUB_POLL_S
    trains: bool = False
    """Started with ``--train``: runs training jobs."""
    serves: bool = True
    """Holds a serving model: runs chunks (False for ``--train`` alone)."""
    _burst: bool = False

    def work(self, burst: bool = False, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop; a ``burst`` worker skips RQ's command listener."""
        self._burst = burst
        return super().work(burst, *args, **kwargs)

    def subscribe(self) -> None:
        """RQ's command listener, polling every :data:`PUBSUB_POLL_S` (none in
        burst mode: the worker quits when the queues are empty anyway)."""
        if self._burst:
            return
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=self.pubsub_poll,
            daemon=True,
            exception_handler=self._pubsub_exception_handler,
        )

    def clean_registries(self) -> None:
        """RQ's maintenance, under :func:`common.rq_jobs.clean_queue`'s short lock."""
        from rq import worker_registration

        for queue in self.queues:
            if clean_queue(queue, self._exc_handlers):
                worker_registration.clean_worker_registry(queue)
                queue.intermediate_queue.cleanup(self, queue)
        self.last_cleaned_at = now()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """Seconds until this chunk counts as abandoned unless heartbeats come."""
        return int(self.execution_ttl)

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = refusal(job, self.allowed_functions) or self.role_refusal(job)
        if reason is not None:
            self.refuse_job(job, queue, reason)
            return
        execution = self.prepare_execution(job)
        stop = threading.Event()
        beats = threading.Thread(
            target=self._beat_until,
            args=(stop, job, execution),
            name=f"rexlabel-heartbeat-{job.id}",
            daemon=True,
        )
        beats.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            stop.set()
            beats.join()
        self.set_state(WorkerStatus.IDLE)

    def role_refusal(self, job: Job) -> str | None:
        """Why this worker, by its role, does not run ``job`` (an allowed
        function, :func:`refusal` passed), or None."""
        if job.func_name == RUN_TRAINING and not self.trains:
            return (
                "training jobs run only on a worker started with --train "
                "(`rexlabel worker --train`); this one serves predictions"
            )
        if job.func_name == RUN_CHUNK and not self.serves:
            return (
                "this worker trains only (--train without --queues): it holds "
                "no serving model"
            )
        return None

    def handle_warm_shutdown_request(self) -> None:
        """A warm shutdown interrupts a running training (it saves a
        checkpoint and exits) rather than waiting hours for it to end."""
        super().handle_warm_shutdown_request()
        if self.trains:
            from worker.training_job import interrupt_running

            if interrupt_running("the worker is shutting down"):
                log.warning("warm shutdown: interrupted the running training")

    def refuse_job(self, job: Job, queue: Queue, reason: str) -> None:
        """Fail ``job`` without running (or importing) anything it names."""
        log.error("refused job %r: %s", job.id, reason)
        disarm(job)
        execution = self.prepare_execution(job)
        self.prepare_job_execution(job, len(self.queues) == 1)
        job.ended_at = now()
        self.handle_job_failure(
            job,
            queue,
            started_job_registry=queue.started_job_registry,
            exc_string=REFUSED_PREFIX + reason,
            execution=execution,
        )
        self.set_state(WorkerStatus.IDLE)

    def _beat_until(self, stop: threading.Event, job: Job, execution: Any) -> None:
        while not stop.wait(self.heartbeat_interval):
            try:
                self.maintain_heartbeats(job, execution)
            except Exception:  # a missed beat is harmless; the next one retries
                log.warning("heartbeat for job %s failed", job.id, exc_info=True)


def build_worker(
    connection: Redis,
    queues: tuple[str, ...] | list[str] = QUEUES,
    *,
    name: str | None = None,
    heartbeat_interval: float = HEARTBEAT_INTERVAL_S,
    execution_ttl: int = EXECUTION_TTL_S,
    worker_ttl: int = WORKER_TTL_S,
    maintenance_interval: int = MAINTENANCE_INTERVAL_S,
    allowed_functions: frozenset[str] | None = None,
    trains: bool = False,
    serves: bool = True,
) -> RexWorker:
    """A worker on ``queues`` (listened to in that order), JSON payloads only,
    running only the job functions named in ``allowed_functions`` (default:
    :attr:`RexWorker.allowed_functions`, that is :data:`JOB_FUNCTIONS`);
    training jobs only when ``trains``, chunks only when ``serves``."""
    if execution_ttl <= heartbeat_interval:
        raise ValueError(
            f"execution_ttl ({execution_ttl}s) must be longer than "
            f"heartbeat_interval ({heartbeat_interval}s)"
        )
    worker = RexWorker(
        list(queues),
        name=name,
        connection=connection,
        serializer=JSONSerializer,
        worker_ttl=worker_ttl,
        maintenance_interval=maintenance_interval,
        job_monitoring_interval=max(1, int(heartbeat_interval)),
    )
    worker.heartbeat_interval = heartbeat_interval
    worker.execution_ttl = execution_ttl
    worker.trains, worker.serves = trains, serves
    if allowed_functions is not None:
        worker.allowed_functions = frozenset(allowed_functions)
    return worker


def worker_connection(url: str, worker_ttl: int = WORKER_TTL_S) -> Redis:
    """The worker's Redis client: its reply timeout covers RQ's blocking dequeue.

    An idle worker blocks in ``BLMOVE`` for ``worker_ttl - 15`` seconds at a time
    (RQ's ``dequeue_timeout``); a socket timeout shorter than that would end
    every idle wait in a TimeoutError, so ``worker_ttl`` is added to it.
    """
    return redis_connection(url, purpose="worker", blocking=worker_ttl)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rexlabel worker",
        description="Load Rex-Omni once and run chunks from the Redis queues.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The worker's options (shared with ``rexlabel worker``)."""
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis to listen on (default: REDIS_URL).",
    )
    parser.add_argument(
        "--queues",
        default=None,
        help="Comma-separated queues, highest priority first (default: "
        f"{','.join(QUEUES)}; with --train alone: {QUEUE_TRAIN} only).",
    )
    parser.add_argument(
        "--train",
        action="store_true",
        help=f"Run training jobs (Label Studio's Start Training) from {QUEUE_TRAIN}. "
        "Alone: a training-only worker that loads no serving model; with "
        f"--queues: those queues, then {QUEUE_TRAIN}.",
    )
    parser.add_argument("--name", default=None, help="Worker name (default: random).")
    parser.add_argument(
        "--burst",
        action="store_true",
        help="Quit when the queues are empty instead of waiting for work.",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=HEARTBEAT_INTERVAL_S,
        help="Seconds between heartbeats while a chunk runs (default: %(default)s).",
    )
    parser.add_argument(
        "--execution-ttl",
        type=int,
        default=EXECUTION_TTL_S,
        help="Seconds without a heartbeat after which a running chunk is re-run "
        "elsewhere (default: %(default)s).",
    )
    parser.add_argument(
        "--worker-ttl",
        type=int,
        default=WORKER_TTL_S,
        help="Seconds the worker key lives without a heartbeat (default: %(default)s).",
    )
    parser.add_argument(
        "--maintenance-interval",
        type=int,
        default=MAINTENANCE_INTERVAL_S,
        help="Seconds between registry clean-ups (default: %(default)s).",
    )


def run(args: argparse.Namespace) -> int:
    """Load the model, connect, and work until stopped. Returns an exit code."""
    from worker.jobs import load_runtime

    settings.read_all()  # every bad variable, named, before the model loads
    level = settings.get("LOG_LEVEL")
    configure_logging()  # LOG_LEVEL / LOG_FORMAT, secrets redacted
    redis_url = args.redis_url or settings.get("REDIS_URL")
    if not redis_url:
        log.error("rexlabel worker needs Redis: set REDIS_URL or pass --redis-url")
        return 2
    queues, serves = worker_queues(args.queues, args.train)
    if not queues:
        log.error("--queues names no queue")
        return 2
    if QUEUE_TRAIN in queues and not args.train:
        log.error("--queues names %s: add --train to run training jobs", QUEUE_TRAIN)
        return 2
    try:
        connection = worker_connection(redis_url, args.worker_ttl)
        connection.ping()  # fail before the (slow) model load when Redis is wrong
    except (RedisError, ValueError) as exc:
        log.error(
            "cannot reach Redis at %s (REDIS_URL or --redis-url): %s",
            redis_url,
            exc,
        )
        return REDIS_UNREACHABLE_EXIT
    start_worker_metrics_server()  # up while the model loads: the health check
    name = args.name or uuid.uuid4().hex  # RQ's name and the published state's
    runtime = None
    if serves:
        with LoadReporter(connection, name):  # /health: loading, or failed and why
            runtime = load_runtime()
        log.info(
            "engine %s ready with model %s; %s",
            runtime.engine.name,
            runtime.model_id,
            runtime.engine.capacity(),
        )
    else:
        log.info("training-only worker on %s: no serving model loaded", QUEUE_TRAIN)
    worker = build_worker(
        connection,
        queues,
        name=name,
        heartbeat_interval=args.heartbeat_interval,
        execution_ttl=args.execution_ttl,
        worker_ttl=args.worker_ttl,
        maintenance_interval=args.maintenance_interval,
        trains=args.train,
        serves=serves,
    )
    try:
        worker.work(burst=args.burst, logging_level=level)
    finally:
        if runtime is not None:
            runtime.close()
    return 0


def worker_queues(names: str | None, train: bool) -> tuple[list[str], bool]:
    """``(queues in listening order, whether the worker serves chunks)``.

    Without ``--train``: ``names`` (default :data:`QUEUES`), serving. With
    ``--train`` alone: :data:`QUEUE_TRAIN` only, not serving (no model is
    loaded). With ``--train`` and ``--queues``: those queues, then
    :data:`QUEUE_TRAIN` (training last: a person waits for the others), and
    serving unless the queues name only :data:`QUEUE_TRAIN`.
    """
    if names is None:
        return ([QUEUE_TRAIN], False) if train else (list(QUEUES), True)
    queues = [q.strip() for q in names.split(",") if q.strip()]
    if train and queues and QUEUE_TRAIN not in queues:
        queues.append(QUEUE_TRAIN)
    serves = any(q != QUEUE_TRAIN for q in queues)
    return queues, serves


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
