"""The worker's ``/metrics`` endpoint, and the container health check that reads it.

The metrics are defined in :mod:`common.metrics`; a worker process serves them
from a daemon thread on ``REXLABEL_WORKER_METRICS_PORT``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import urllib.error
import urllib.request

from prometheus_client import start_http_server

from common import settings
from common.metrics import METRICS_PATH

log = logging.getLogger(__name__)

HEALTHCHECK_TIMEOUT_S = 5.0
"""``python -m worker.metrics_server --check`` waits this long for /metrics."""


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
    """``python -m worker.metrics_server --check``: exit 0 when /metrics answers."""
    parser = argparse.ArgumentParser(prog="python -m worker.metrics_server")
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
