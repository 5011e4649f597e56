"""Container health checks (Docker ``HEALTHCHECK``), standard library plus settings.

    python docker/healthcheck.py backend   # GET /health on PORT answers
    python docker/healthcheck.py worker    # the worker's /metrics answers

Exit 0 when healthy, 1 when not (the reason goes to stderr). The backend check
sends the backend's own basic auth. It counts as alive when ``/health``
answers 200 (or 401: the app answered), and also
while it answers 503 for a state that restarting the container cannot cure and
time may: the model still ``loading`` (a first start downloads ~7 GB, which may
take longer than any start period: Docker must not restart it midway), and,
with Redis, ``no_workers`` or workers that failed (they are other containers,
with their own health checks). A model that failed to load in this process, an
unreachable Redis, or no answer, is unhealthy.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request

from common import settings

TIMEOUT_S = 4.0
"""Below the HEALTHCHECK --timeout of both images (5 s and 10 s)."""
MAX_BODY_BYTES = 65_536
"""Most of a 503 /health body read: it is a few hundred bytes."""
ALIVE_STATUSES = (200, 401)
"""401: the app answered, but refused the credentials the check sent (or it
has basic auth the check does not know); a restart would not change that."""
ALIVE_WHILE = ("loading", "no_workers")
"""503 model states that count as healthy (see above); ``failed`` too, when the
queue mode is ``redis`` (the workers failed, not this container)."""


def _health_request(url: str) -> urllib.request.Request:
    """GET ``url`` with the backend's own basic auth when it has one, so the
    check reads the model state instead of stopping at 401."""
    user, password = settings.get("BASIC_AUTH_USER"), settings.get("BASIC_AUTH_PASS")
    request = urllib.request.Request(url)
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {pair}")
    return request


def check_backend() -> str | None:
    url = f"http://127.0.0.1:{settings.get('PORT')}/health"
    try:
        with urllib.request.urlopen(
            _health_request(url), timeout=TIMEOUT_S
        ) as response:
            status, body = response.status, b""
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(MAX_BODY_BYTES)
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} is not reachable: {exc}"
    if status in ALIVE_STATUSES:
        return None
    return _unavailable(url, status, body)


def _unavailable(url: str, status: int, body: bytes) -> str | None:
    """None when a 503 /health says the backend waits for a model (see above)."""
    try:
        health = json.loads(body)
        state = health["model"]["state"]
        mode = health["queue"]["mode"]
    except (ValueError, KeyError, TypeError):
        return f"{url} answered HTTP {status}"
    if state in ALIVE_WHILE or (state == "failed" and mode == "redis"):
        print(f"alive; {health.get('message') or state}", file=sys.stderr)
        return None
    return f"{url} answered HTTP {status}: {health.get('message') or state}"


def check_worker() -> str | None:
    from common.metrics import METRICS_PATH
    from worker.metrics_server import check_metrics_endpoint

    port = settings.get("REXLABEL_WORKER_METRICS_PORT")
    if not port:
        print("REXLABEL_WORKER_METRICS_PORT=0: nothing to check", file=sys.stderr)
        return None
    return check_metrics_endpoint(
        f"http://127.0.0.1:{port}{METRICS_PATH}", timeout=TIMEOUT_S
    )


CHECKS = {"backend": check_backend, "worker": check_worker}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: healthcheck.py {'|'.join(CHECKS)}", file=sys.stderr)
        return 2
    problem = CHECKS[argv[0]]()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
