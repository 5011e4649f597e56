"""Prometheus metrics shared by the backend and the worker.

Every metric is defined once here, on prometheus_client's default registry:

- backend: ``instrument_flask(app)`` counts requests and errors per endpoint,
  times them, logs one line per request and serves ``GET /metrics`` (queue depth
  and worker count are read from Redis when scraped);
- worker: ``start_worker_metrics_server()`` serves ``/metrics`` on
  ``REXLABEL_WORKER_METRICS_PORT``; ``observe_job()`` records a finished chunk
  (duration, images, tokens, generation time, truncated generations).

Rates come from counters: ``rate(rexlabel_images_total[5m])`` is images per
second, ``rate(rexlabel_tokens_total{kind="output"}[5m])`` tokens per second.

Keep one process per backend (threads, not gunicorn workers): counters live in
the process that served the request. No torch here, and Flask only inside
``instrument_flask``, which the worker never calls.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker import settings
from worker.logs import log_job, log_request, summarize_results

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
"""Where both the backend and the worker expose metrics (Prometheus' default)."""
QUIET_ENDPOINTS = ("/health", METRICS_PATH)
"""Polled every few seconds (Label Studio, Docker, Prometheus): their request
lines are logged at DEBUG, so INFO logs show real work."""
IN_PROCESS_QUEUE = "in-process"
"""Queue label of chunks run without RQ (embedded backend, ``--inline`` jobs)."""
UNMATCHED_ENDPOINT = "<unmatched>"
"""Endpoint label for requests no route matched: arbitrary paths (scanners, typos)
must not each become a time series."""
METHOD_LABELS = frozenset(("GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"))
"""Methods counted under their own name; any other (a client may send any
token as its method) counts as :data:`OTHER_METHOD`, so no client can add
time series (memory, /metrics size) without bound."""
OTHER_METHOD = "other"
"""Method label of a request whose method is not in :data:`METHOD_LABELS`."""
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 100)
"""Seconds: /health must stay under Label Studio's 1 s, /predict under its 100 s."""
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
"""Seconds per chunk: one interactive image up to a long bulk chunk."""
GENERATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
"""Seconds per generate call: dense scenes write thousands of tokens."""
SCRAPE_REDIS_TIMEOUT_S = 1.0
"""Redis look-ups during a scrape give up after this: a slow Redis must not
make /metrics itself time out."""
REQUEST_LOG_FIELDS = "_rexlabel_log_fields"
"""Attribute of ``flask.g`` holding :func:`annotate_request`'s fields."""
HEALTHCHECK_TIMEOUT_S = 5.0
"""``python -m worker.metrics --check`` waits this long for /metrics."""

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
            from worker.redis_conn import redis_connection

            client.append(
                redis_connection(url, purpose="metrics", timeout=SCRAPE_REDIS_TIMEOUT_S)
            )
        return client[0]

    return connect


def default_queues() -> tuple[str, ...]:
    """The queues workers listen on (from :mod:`worker.jobs`; no torch import)."""
    from worker.jobs import QUEUES

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


# Backend: Flask ----------------------------------------------------------------


def _logged_body(request: Any, status: int) -> Any:
    """The request's JSON for the log line, or None when it must not be read.

    A refused request (any 4xx: no or wrong credentials, a body too large or
    malformed) is never read here: a 401 must cost no memory whatever the
    body, and only a request the app accepted has a body worth logging (the
    app has parsed it already; Flask returns its cached copy). Reading must
    not change the answer: a body over ``MAX_CONTENT_LENGTH`` raises
    RequestEntityTooLarge (a dropped client ClientDisconnected) on every read,
    and a JSON nested too deeply RecursionError.
    """
    from werkzeug.exceptions import HTTPException

    if 400 <= status < 500 or not request.is_json:
        return None
    try:
        return request.get_json(silent=True)
    except (HTTPException, RecursionError):
        return None


def method_label(method: str) -> str:
    """``method`` as a label: one of :data:`METHOD_LABELS`, else ``other``."""
    return method if method in METHOD_LABELS else OTHER_METHOD


def _task_ids_of(body: Any) -> list[Any]:
    """Task ids in a Label Studio /predict body (``{"tasks": [{"id": ..}]}``)."""
    if not isinstance(body, dict) or not isinstance(body.get("tasks"), list):
        return []
    return [t.get("id") for t in body["tasks"] if isinstance(t, dict)]


def instrument_flask(
    app: Any,
    *,
    connection: Callable[[], Any] | None = None,
    queues: Iterable[str] | None = None,
    log_requests: bool = True,
) -> None:
    """Count, time and log every request of ``app``; add ``GET /metrics``.

    ``connection``/``queues`` go to :func:`watch_queues` (default: ``REDIS_URL``
    and rexlabel's queues). Call once per app, after its routes are added or
    before: the hooks see every route either way.
    """
    from flask import Response, g, request

    request_log = logging.getLogger("rexlabel.requests")
    watch_queues(connection, queues)

    def endpoint_label() -> str:
        rule = request.url_rule
        return rule.rule if rule is not None else UNMATCHED_ENDPOINT

    def record(status: int) -> None:
        if getattr(g, "_rexlabel_recorded", True):
            return
        g._rexlabel_recorded = True
        duration = time.perf_counter() - g._rexlabel_start
        endpoint = endpoint_label()
        REQUESTS.labels(endpoint, method_label(request.method), str(status)).inc()
        REQUEST_SECONDS.labels(endpoint).observe(duration)
        if status >= 500:
            REQUEST_ERRORS.labels(endpoint).inc()
        if log_requests:
            quiet = endpoint in QUIET_ENDPOINTS and status < 500
            log_request(
                request_log,
                method=request.method,
                path=request.path,
                status=status,
                duration_s=duration,
                task_ids=_task_ids_of(_logged_body(request, status)),
                level=logging.DEBUG if quiet else None,
                endpoint=endpoint,
                **getattr(g, REQUEST_LOG_FIELDS, {}),
            )

    def _start_timer() -> None:
        g._rexlabel_start = time.perf_counter()
        g._rexlabel_recorded = False

    # First of all before_request hooks: one that answers early (basic auth's
    # 401) skips the hooks after it, and its requests must be counted too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)

    @app.after_request
    def _count(response: Any) -> Any:
        record(response.status_code)
        return response

    @app.teardown_request
    def _count_unhandled(exc: BaseException | None) -> None:
        # After an exception that propagates (testing, PROPAGATE_EXCEPTIONS),
        # after_request never runs: count it as a 500 here.
        if exc is not None:
            record(500)

    def metrics_view() -> Any:
        return Response(generate_latest(REGISTRY), mimetype=CONTENT_TYPE_LATEST)

    app.add_url_rule(METRICS_PATH, "metrics", metrics_view, methods=["GET"])


def annotate_request(**fields: Any) -> None:
    """Add ``fields`` to the log line of the Flask request being served (the
    work a /predict did: images, phases, tokens); outside a request, nothing."""
    from flask import g, has_request_context

    if has_request_context():
        setattr(g, REQUEST_LOG_FIELDS, {**getattr(g, REQUEST_LOG_FIELDS, {}), **fields})


# Worker ---------------------------------------------------------------------------


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

    ``results`` are :class:`worker.jobspec.ImageResult` objects or their dicts:
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


def start_worker_metrics_server(
    port: int | None = None, addr: str | None = None
) -> int | None:
    """Serve ``/metrics`` from a daemon thread; returns the port, or None.

    ``port`` and ``addr`` default to ``REXLABEL_WORKER_METRICS_PORT`` and
    ``REXLABEL_WORKER_METRICS_HOST``; port 0 disables it. A port already taken
    (a second worker on the host) logs a warning and returns None: metrics are
    not worth refusing to work over.
    """
    port = settings.get("REXLABEL_WORKER_METRICS_PORT") if port is None else port
    addr = settings.get("REXLABEL_WORKER_METRICS_HOST") if addr is None else addr
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=addr)
    except OSError as exc:
        log.warning(
            "worker metrics not served: port %s is taken (%s); set "
            "REXLABEL_WORKER_METRICS_PORT to a free port or 0",
            port,
            exc,
        )
        return None
    actual = int(server.server_address[1])
    log.info("worker metrics on http://%s:%s%s", addr, actual, METRICS_PATH)
    return actual


def check_metrics_endpoint(
    url: str, timeout: float = HEALTHCHECK_TIMEOUT_S
) -> str | None:
    """None when ``url`` answers 200 with Prometheus text, else what went wrong."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read(1 << 20).decode("utf-8", "replace")
            if response.status != 200:
                return f"{url} answered HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} is not reachable: {exc}"
    if "# TYPE" not in body:
        return f"{url} answered, but not with Prometheus metrics"
    return None


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.metrics --check``: the worker container's health check."""
    parser = argparse.ArgumentParser(prog="python -m worker.metrics")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 0 when this host's worker serves /metrics, else 1",
    )
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_help()
        return 2
    port = (
        settings.get("REXLABEL_WORKER_METRICS_PORT") if args.port is None else args.port
    )
    if not port:
        print(
            "REXLABEL_WORKER_METRICS_PORT is 0: no endpoint to check", file=sys.stderr
        )
        return 1
    problem = check_metrics_endpoint(f"http://127.0.0.1:{port}{METRICS_PATH}")
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
