"""Container health checks (Docker ``HEALTHCHECK``), standard library plus settings.

    python docker/healthcheck.py backend   # GET /health on PORT answers
    python docker/healthcheck.py worker    # the worker's /metrics answers

Exit 0 when healthy, 1 when not (the reason goes to stderr). The backend counts
as alive when ``/health`` answers 200, or 401 when basic auth is on.
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request

from worker import settings

TIMEOUT_S = 4.0
"""Below the HEALTHCHECK --timeout of both images (5 s and 10 s)."""
ALIVE_STATUSES = (200, 401)
"""401: basic auth is on and the check sends no credentials; the app answered."""


def check_backend() -> str | None:
    url = f"http://127.0.0.1:{settings.get('PORT')}/health"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        return f"{url} is not reachable: {exc}"
    return None if status in ALIVE_STATUSES else f"{url} answered HTTP {status}"


def check_worker() -> str | None:
    from worker.metrics import METRICS_PATH, check_metrics_endpoint

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
