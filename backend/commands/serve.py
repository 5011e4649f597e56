"""``rexlabel serve``: the Label Studio ML backend.

Usage::

    rexlabel serve                  # gunicorn on 127.0.0.1:9090, 1 process x 8 threads
    rexlabel serve --host 0.0.0.0   # reachable from other hosts: needs credentials
    rexlabel serve --dev            # Flask's threaded server (tests, debugging)

Listening beyond loopback needs BASIC_AUTH_USER and BASIC_AUTH_PASS (and
REXLABEL_WEBHOOK_TOKEN for Label Studio's webhooks); without them it refuses
to start, naming them (``backend.auth.exposure_problem``); half a basic-auth
pair refuses on any bind (``backend.auth.credentials_problem``).

Equivalent by hand (what the Docker image runs)::

    gunicorn -k gthread -w 1 --threads 8 -b 0.0.0.0:9090 'backend.app:create_app()'

With ``REDIS_URL`` set, requests go to ``rexlabel worker`` processes;
without it the model runs inside this process, loaded in the background from
start-up on (``/health`` answers 503 "Model still loading" until it is ready).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

DEFAULT_THREADS = 8
"""Request threads: a /predict waiting on the queue holds one, so /health and
/setup (1 s and 3 s timeouts in Label Studio) still get answered meanwhile."""

DEFAULT_WORKERS = 1
"""One process: without Redis the model and project state live in it."""

GUNICORN_TIMEOUT_S = 0
"""No gunicorn worker timeout: /predict enforces its own deadline, and a
request-bound model load must not get the process killed."""

log = logging.getLogger(__name__)


def add_parser(subparsers: Any) -> None:
    from common import settings

    parser = subparsers.add_parser(
        "serve",
        help="Serve the Label Studio ML backend (HTTP).",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=None,
        help=f"Interface to listen on (default: REXLABEL_HOST or "
        f"{settings.setting('REXLABEL_HOST').default}).",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"Port (default: PORT or {settings.setting('PORT').default}).",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="gunicorn processes; more than 1 needs REDIS_URL or "
        "REXLABEL_STATE_PATH for shared project state (default: %(default)s).",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=DEFAULT_THREADS,
        help="Threads per process (default: %(default)s).",
    )
    parser.add_argument(
        "--dev",
        action="store_true",
        help="Use Flask's threaded development server instead of gunicorn.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from common import settings
    from common.logs import configure_logging

    settings.read_all()  # every bad variable, named, before anything starts
    configure_logging()
    host = args.host or settings.get("REXLABEL_HOST")
    port = args.port or settings.get("PORT")
    _refuse_open_exposure(host)
    from backend.app import create_app

    # gunicorn forks: the model loads in its worker process (post_worker_init)
    app = create_app(load_model=args.dev)
    if args.dev:
        _plain_dev_server_lines()
        log.info("rexlabel backend (Flask dev server) on http://%s:%s", host, port)
        app.run(host=host, port=port, threaded=True, use_reloader=False)
        return 0
    _run_gunicorn(app, host, port, args.workers, args.threads)
    return 0


def _plain_dev_server_lines() -> None:
    """No ANSI colours in werkzeug's own lines: the log escapes control
    characters (``common.logs.escape_controls``), which would print them as
    ``\\x1b[31m`` text."""
    import werkzeug.serving

    werkzeug.serving._log_add_style = False


def _refuse_open_exposure(host: str) -> None:
    """SettingsError (one line, exit 2) when ``host`` is not loopback and no
    credentials are set, or only half of the basic-auth pair is."""
    from backend.auth import AuthConfig, startup_problem
    from common.settings import SettingsError

    problem = startup_problem(AuthConfig.from_env(), [host])
    if problem:
        raise SettingsError(problem)


def _run_gunicorn(app: Any, host: str, port: int, workers: int, threads: int) -> None:
    from gunicorn.app.base import BaseApplication

    def _start_model_load(_worker: Any) -> None:
        """In each forked gunicorn worker: load the model in the background."""
        app.extensions["rexlabel"].runner.start()

    class _Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", f"{host}:{port}")
            self.cfg.set("workers", workers)
            self.cfg.set("threads", threads)
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("timeout", GUNICORN_TIMEOUT_S)
            self.cfg.set("post_worker_init", _start_model_load)

        def load(self) -> Any:
            return app

    log.info("rexlabel backend (gunicorn) on http://%s:%s", host, port)
    _Server().run()
