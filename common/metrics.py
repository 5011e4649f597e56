"""Prometheus metrics shared by the backend and the worker.

Every metric is defined once here, on prometheus_client's default registry:

- the backend's ``backend.instrumentation.instrument_flask(app)`` counts
  requests and errors per endpoint, times them, logs one line per request and
  serves ``GET /metrics`` (queue depth and worker count are read from Redis when
  scraped, :class:`QueueCollector`);
- a worker serves ``/metrics`` with ``worker.metrics_server``, and
  :func:`record_chunk` records each finished chunk (duration, images, tokens,
  generation time, truncated generations).

Rates come from counters: ``rate(rexlabel_images_total[5m])`` is images per
second, ``rate(rexlabel_tokens_total{kind="output"}[5m])`` tokens per second.

Keep one process per backend (threads, not gunicorn workers): counters live in
the process that served the request. No torch and no Flask here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    REGISTRY,
    Counter,
    Histogram,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from common import settings
from common.loglines import log_job, summarize_results

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
"""Where both the backend and the worker expose metrics (Prometheus' default)."""
IN_PROCESS_QUEUE = "in-process"
"""Queue label of chunks run without RQ (embedded backend, ``--inline`` jobs)."""
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 100)
"""Seconds: /health must stay under Label Studio's 1 s, /predict under its 100 s."""
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
"""Seconds per chunk: one interactive image up to a long bulk chunk."""
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
"""Seconds per generate call: dense scenes write thousands of tokens."""
SCRAPE_REDIS_TIMEOUT_S = 1.0
"""Redis look-ups during a scrape give up after this: a slow Redis must not
make /metrics itself time out."""

REQUESTS = Counter(
    "rexlabel_requests",
    "HTTP requests served by the backend.",
    ["endpoint", "method", "status"],
)
REQUEST_ERRORS = Counter(
    "rexlabel_request_errors",
    "Backend requests that failed (5xx or an unhandled exception).",
    ["endpoint"],
)
REQUEST_SECONDS = Histogram(
    "rexlabel_request_duration_seconds",
    "Time to answer a backend request.",
    ["endpoint"],
    buckets=REQUEST_BUCKETS,
)
JOBS = Counter(
    "rexlabel_jobs",
    "Chunks a worker finished, by queue and outcome.",
    ["queue", "status"],
)
JOB_SECONDS = Histogram(
    "rexlabel_job_duration_seconds",
    "Wall-clock time of one chunk in a worker.",
    ["queue"],
    buckets=JOB_BUCKETS,
)
IMAGES = Counter(
    "rexlabel_images",
    "Images processed; rate() gives images per second.",
    ["status"],
)
TOKENS = Counter(
    "rexlabel_tokens",
    "Prompt and generated tokens; rate() gives tokens per second.",
    ["kind"],
)
GENERATION_SECONDS = Histogram(
    "rexlabel_generation_seconds",
    "Time of one model generate call.",
    buckets=GENERATION_BUCKETS,
)
TRUNCATED = Counter(
    "rexlabel_truncated_generations",
    "Generations cut by max_new_tokens or the runaway guard.",
)


# Queue depth and workers, read from Redis at scrape time ----------------------


class QueueCollector(Collector):
    """``rexlabel_queue_depth{queue}``, ``rexlabel_workers{queue}`` and
    ``rexlabel_redis_up``, read from RQ when Prometheus scrapes.

    One instance is registered on import; :func:`watch_queues` points it at a
    Redis connection. Without one it reports nothing.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Callable[[], Any] | None = None
        self._queues: tuple[str, ...] = ()

    def watch(
        self, connection: Callable[[], Any] | None, queues: Iterable[str]
    ) -> None:
        with self._lock:
            self._connection = connection
            self._queues = tuple(queues)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "rexlabel_queue_depth", "Jobs waiting in each queue.", labels=["queue"]
            ),
            GaugeMetricFamily(
                "rexlabel_workers",
                "RQ workers listening on each queue.",
                labels=["queue"],
            ),
            GaugeMetricFamily(
                "rexlabel_redis_up", "1 when Redis answered the last scrape."
            ),
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            connection, queues = self._connection, self._queues
        if connection is None:
            return
        depth, workers, up = self._families()
        try:
            from rq import Queue, Worker

            conn = connection()
            for name in queues:
                queue = Queue(name, connection=conn)
                depth.add_metric([name], queue.count)
                workers.add_metric([name], Worker.count(connection=conn, queue=queue))
        except Exception as exc:
            log.debug("queue metrics unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (depth, workers, up)


QUEUES_COLLECTOR = QueueCollector()
REGISTRY.register(QUEUES_COLLECTOR)


def redis_from_settings(
    environ: Mapping[str, str] | None = None,
) -> Callable[[], Any] | None:
    """A factory for a Redis client on ``REDIS_URL`` (None when it is empty)."""
    url = settings.get("REDIS_URL", environ)
    if not url:
        return None
    client: list[Any] = []

    def connect() -> Any:
        if not client:
            from common.redis_conn import redis_connection

            client.append(
                redis_connection(url, purpose="metrics", timeout=SCRAPE_REDIS_TIMEOUT_S)
            )
        return client[0]

    return connect


def default_queues() -> tuple[str, ...]:
    """The queues workers listen on (:data:`common.queues.QUEUES`)."""
    from common.queues import QUEUES

    return tuple(QUEUES)


def watch_queues(
    connection: Callable[[], Any] | None = None,
    queues: Iterable[str] | None = None,
) -> None:
    """Report depth and workers of ``queues`` (default: rexlabel's) on scrapes.

    ``connection`` returns a Redis client; by default one on ``REDIS_URL``.
    """
    if connection is None:
        connection = redis_from_settings()
    QUEUES_COLLECTOR.watch(connection, default_queues() if queues is None else queues)


def observe_generation(
    seconds: float,
    *,
    prompt_tokens: int = 0,
    output_tokens: int = 0,
    truncated: bool = False,
) -> None:
    """Record one generate call (engines or the pipeline may call this directly)."""
    GENERATION_SECONDS.observe(seconds)
    TOKENS.labels("prompt").inc(prompt_tokens)
    TOKENS.labels("output").inc(output_tokens)
    if truncated:
        TRUNCATED.inc()


def observe_job(
    queue: str,
    duration_s: float,
    results: Iterable[Any] = (),
    *,
    status: str = "done",
) -> dict[str, Any]:
    """Record one finished chunk and return its summary (see ``summarize_results``).

    ``results`` are :class:`common.jobspec.ImageResult` objects or their dicts:
    each call's ``generate`` timing, tokens and truncation are recorded, and
    each image counts as ``ok`` or ``failed``.
    """
    results = list(results)
    JOBS.labels(queue, status).inc()
    JOB_SECONDS.labels(queue).observe(duration_s)
    for result in results:
        data = result if isinstance(result, Mapping) else result.to_dict()
        IMAGES.labels("failed" if data.get("error") else "ok").inc()
        for call in data.get("calls", []):
            observe_generation(
                float(call.get("timings", {}).get("generate", 0.0)),
                prompt_tokens=int(call.get("prompt_tokens", 0)),
                output_tokens=int(call.get("output_tokens", 0)),
                truncated=bool(call.get("truncated")),
            )
    return summarize_results(results)


def record_chunk(
    payload: Mapping[str, Any],
    results: Iterable[Any],
    duration_s: float,
    *,
    status: str = "done",
    logger: logging.Logger | None = None,
) -> dict[str, Any]:
    """Metrics and the one log line for a chunk a worker (or in-process) ran.

    The queue and job id come from the running RQ job when there is one, else
    ``in-process`` and the payload's ``job``/``chunk``. Returns the summary.
    """
    results = list(results)
    queue, job_id = IN_PROCESS_QUEUE, ""
    try:
        from rq import get_current_job

        current = get_current_job()
    except Exception:  # outside a worker, or RQ not importable
        current = None
    if current is not None:
        queue, job_id = current.origin or queue, current.id
    if not job_id:
        job_id = "-".join(str(payload[k]) for k in ("job", "chunk") if k in payload)
    summary = observe_job(queue, duration_s, results, status=status)
    log_job(
        logger or log,
        job_id=job_id or "?",
        task_ids=summary["task_ids"],
        duration_s=duration_s,
        timings=summary["timings"],
        images=summary["images"],
        prompt_tokens=summary["prompt_tokens"],
        output_tokens=summary["output_tokens"],
        truncated=summary["truncated"],
        status=status,
        queue=queue,
        failed_images=summary["failed"],
    )
    return summary
