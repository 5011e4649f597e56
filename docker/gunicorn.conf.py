"""Gunicorn settings for the backend image (and for running it the same way by hand).

    gunicorn --config docker/gunicorn.conf.py "backend.app:create_app()"

Run from the repository root (the image's working directory is laid out the
same way). ``GUNICORN_CMD_ARGS`` overrides any of these (e.g. ``--threads 16``).
Whatever the final bind, a non-loopback one without credentials stops start-up
(:func:`on_starting`), and so does half a basic-auth pair on any bind.
"""

import sys

from gunicorn.glogging import Logger

from backend.queue import in_process_problem
from common import settings
from common.logs import configure_logging

try:
    settings.read_all()
    # e.g. the backend image (no torch) started without REDIS_URL
    _problem = in_process_problem(
        settings.get("REDIS_URL"), settings.get("REXLABEL_ENGINE")
    )
except settings.SettingsError as exc:
    _problem = str(exc)
if _problem:
    # SystemExit passes through gunicorn's config loader: one line, no traceback.
    sys.exit(f"rexlabel backend: bad configuration: {_problem}")

bind = f"{settings.get('REXLABEL_HOST')}:{settings.get('PORT')}"
worker_class = "gthread"
workers = 1
"""One process: metrics and in-process state live in it; threads give the
concurrency (requests mostly wait on Redis)."""
threads = 8
"""A /predict waiting on the queue holds a thread; /health and /setup (Label
Studio's 1 s and 3 s timeouts) must still find a free one."""
timeout = 120
"""gthread workers heartbeat from their main loop, so long requests do not trip
this; it only restarts a process whose main loop hung. Above Label Studio's 100 s
/predict timeout."""
graceful_timeout = 30
"""On SIGTERM, running requests get this long to finish."""
keepalive = 5
"""Seconds to hold an idle keep-alive connection from Label Studio."""
preload_app = False
"""The app is built in the worker process after the fork (never before: CUDA
and Redis connections do not survive a fork)."""
accesslog = None
"""The app logs one line per request itself (common.loglines), redacted."""
errorlog = "-"


class RexlabelLogger(Logger):
    """Gunicorn's own messages (start-up, worker boots, errors) go through the
    root logger that ``configure_logging`` sets up: the same text or JSON lines,
    redacted, as everything else."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        configure_logging()
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


logger_class = RexlabelLogger


def on_starting(server) -> None:
    """Refuse to listen beyond loopback without credentials, or anywhere with
    half a basic-auth pair (exit 2, one line).

    Here, not at import: ``GUNICORN_CMD_ARGS`` and ``-b`` may change the bind
    after this file is read; ``server.cfg.bind`` is the final list.
    """
    from backend.auth import AuthConfig, startup_problem

    problem = startup_problem(AuthConfig.from_env(), server.cfg.bind)
    if problem:
        print(f"rexlabel backend: bad configuration: {problem}", file=sys.stderr)
        sys.exit(2)


def post_fork(server, worker) -> None:
    """Root logging in each worker process, before the app is built."""
    configure_logging()
