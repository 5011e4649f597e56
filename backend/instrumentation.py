"""Flask instrumentation: count, time and log every request; serve ``GET /metrics``.

The metrics themselves are defined once in :mod:`common.metrics`; this module
is the backend's side of them (the worker serves its own with
``worker.metrics_server``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from common.loglines import log_request
from common.metrics import (
    METRICS_PATH,
    REQUEST_ERRORS,
    REQUEST_SECONDS,
    REQUESTS,
    watch_queues,
)

QUIET_ENDPOINTS = ("/health", METRICS_PATH)
"""Polled every few seconds (Label Studio, Docker, Prometheus): their request
lines are logged at DEBUG, so INFO logs show real work."""
UNMATCHED_ENDPOINT = "<unmatched>"
"""Endpoint label for requests no route matched: arbitrary paths (scanners, typos)
must not each become a time series."""
METHOD_LABELS = frozenset(("GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"))
"""Methods counted under their own name; any other (a client may send any
token as its method) counts as :data:`OTHER_METHOD`, so no client can add
time series (memory, /metrics size) without bound."""
OTHER_METHOD = "other"
"""Method label of a request whose method is not in :data:`METHOD_LABELS`."""
REQUEST_LOG_FIELDS = "_rexlabel_log_fields"
"""Attribute of ``flask.g`` holding :func:`annotate_request`'s fields."""


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
