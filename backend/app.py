"""The Flask app Label Studio talks to (the ML-backend protocol).

Routes:

- ``GET /health`` (and ``/``): fast JSON, with whether the queue and a worker
  are up; 503 when Redis is unreachable (:mod:`backend.routes.health`).
- ``POST /setup``: stores the project's ``extra_params`` and answers the
  ``model_version`` (a pure function of model, engine, prompts, settings,
  label config and extra params; see :mod:`backend.model_version`).
- ``GET /versions``: ``{"versions": [...]}``, newest first.
- ``POST /predict``: one item per task, in order, always with
  ``model_version``; a task that fails gets an item without ``result``, which
  Label Studio skips (:mod:`backend.routes.predict`).
- ``GET /metrics``: Prometheus metrics (``backend.instrumentation``), behind basic auth.
- ``POST /webhook``: answers at once, works in the background
  (``TASKS_CREATED`` starts pre-annotation when the project's extra params
  say ``"prelabel_on_import": true``; ``START_TRAINING`` queues a training
  job; :mod:`backend.routes.webhook`).
- ``POST /train``: ``{"project": ID}`` queues a training job like Label
  Studio's Start Training (:mod:`backend.training`; Redis and a
  ``rexlabel worker --train`` needed); answers ``{"status", "message",
  "job"?}`` with 200, or 400/404/409/429/503 saying why not.

Queues: all work someone waits for goes to ``rexlabel:interactive`` (a click
with Auto-Annotation at the front); a ``/predict`` with more than
``REXLABEL_SYNC_TASK_LIMIT`` tasks becomes a background bulk job on
``rexlabel:bulk`` (``backend.bulk``) that posts predictions to Label Studio's
API as chunks finish; the reply then has no results (Label Studio stores
nothing and logs it) and says which job took over.

Auth: basic auth (``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``) on every route;
``/webhook`` also takes ``?token=`` (``REXLABEL_WEBHOOK_TOKEN``); see
:mod:`backend.auth`. Credentials are checked before anything reads the body;
bodies over ``MAX_BODY_BYTES`` get 413 unread; a chunked body (no
Content-Length) is read up to the limit and then refused
(:mod:`backend.routes.bodies`). Replies never carry a traceback, a local path
or an internal URL (:mod:`backend.replies`); an unexpected error answers
``internal error`` with an id that is in the log.

Production::

    gunicorn -k gthread -w 1 --threads 8 -b 0.0.0.0:9090 'backend.app:create_app()'

(threads, not processes, unless ``REDIS_URL`` or ``REXLABEL_STATE_PATH`` is
set: without them project state lives in the process's memory).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from backend.auth import (
    WEBHOOK_TOKEN_HEADER,
    WEBHOOK_TOKEN_PARAM,
    credentials_problem,
)
from backend.config import BackendConfig
from backend.instrumentation import instrument_flask
from backend.model_version import model_version
from backend.queue import ChunkRunner, create_runner
from backend.replies import scrub_text
from backend.routes.bodies import (
    MAX_BODY_BYTES,
    BadRequest,
    body_too_large,
    buffer_unsized_body,
    json_body,
)
from backend.routes.health import health_reply, scrub_health
from backend.routes.predict import NoBackgroundJobs, Predictions
from backend.routes.webhook import WebhookBacklog, Webhooks
from backend.state import StateError, StateStore, make_state, open_store
from backend.training import TrainingStarter
from common import settings

log = logging.getLogger(__name__)

VERSIONS_KEPT = 32
"""Versions /versions lists (newest first): a few months of config edits."""


class Backend:
    """The routes' logic, separate from Flask so it can be called directly:
    /health, /setup and /versions here, /webhook and /predict in
    :mod:`backend.routes`."""

    def __init__(
        self,
        config: BackendConfig,
        runner: ChunkRunner,
        store: StateStore,
        environ: Mapping[str, str] | None = None,
        redis_connection: Any = None,
    ) -> None:
        self.config = config
        self.runner = runner
        self.store = store
        self.environ = environ
        self.versions: list[str] = []
        self._versions_lock = threading.Lock()
        self.trainer = TrainingStarter(store, redis_connection)
        self.webhooks = Webhooks(store, self.version_for, self.trainer)
        self.predictions = Predictions(config, runner, store, self.version_for)

    def version_for(
        self, label_config: str | None, extra: Mapping[str, Any], record: bool = True
    ) -> str:
        """The model_version; ``record`` lists it in /versions (served ones only)."""
        version = model_version(label_config, extra, self.environ)
        if record and version not in self.versions:
            with self._versions_lock:
                if version not in self.versions:
                    self.versions.insert(0, version)
                    del self.versions[VERSIONS_KEPT:]
        return version

    def health(self) -> tuple[dict[str, Any], str]:
        """The /health body and HTTP status line (:mod:`backend.routes.health`)."""
        queue = self.runner.status()
        return health_reply(queue, self.version_for(None, {}, record=False))

    def setup(self, body: Mapping[str, Any]) -> dict[str, Any]:
        try:
            state = make_state(
                body.get("project"),
                body.get("extra_params"),
                hostname=body.get("hostname"),
                label_config=body.get("schema"),
            )
        except StateError as exc:
            raise BadRequest(str(exc)) from None
        self.store.put(state)
        version = self.version_for(state.label_config, state.extra_params)
        log.info("setup: project %s -> %s", state.project, version)
        return {"model_version": version}

    def webhook(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.webhooks.accept(body)

    def predict(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.predictions.predict(body)

    def train(self, body: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """``POST /train``: only ``project`` is read (Label Studio's older call
        also sends annotations and the config; the run reads its own)."""
        decision = self.trainer.start(body.get("project"), source="api")
        return decision.to_dict(), decision.http_status


def create_app(
    environ: Mapping[str, str] | None = None,
    *,
    runner: ChunkRunner | None = None,
    store: StateStore | None = None,
    load_model: bool = True,
) -> Flask:
    """The app; settings come from ``environ`` (default: ``os.environ``).

    ``runner`` and ``store`` default to Redis when ``REDIS_URL`` is set, else
    in-process jobs and in-memory (or ``REXLABEL_STATE_PATH``) state. Every
    setting is read first, so a bad value anywhere (a worker-side one too: the
    model may run in this process) stops start-up with SettingsError naming it.

    A runner made here from the process environment (``environ`` None: what
    the model load reads) starts loading the model in the background at once
    (in-process; /health says ``loading`` meanwhile) unless ``load_model`` is
    False: a server that forks after this call (``rexlabel serve``'s gunicorn)
    starts it in the child (``runner.start()``); else the first request does.
    """
    settings.read_all(environ)
    config = BackendConfig.from_env(environ)
    problem = credentials_problem(config.auth)
    if problem:
        raise settings.SettingsError(problem)
    if runner is None:
        runner = create_runner(
            config.redis_url, settings.get("REXLABEL_ENGINE", environ)
        )
        if load_model and environ is None:
            runner.start()
    redis_connection = getattr(runner, "connection", None)
    if redis_connection is None and config.redis_url:
        from common.redis_conn import redis_connection as connect

        redis_connection = connect(config.redis_url, purpose="state store")
    if store is None:
        store = open_store(redis_connection, config.state_path)
    backend = Backend(config, runner, store, environ, redis_connection)

    app = Flask(__name__)
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["rexlabel"] = backend
    health_connection = getattr(runner, "health_connection", None)
    instrument_flask(
        app, connection=(lambda: health_connection) if health_connection else None
    )

    @app.before_request
    def require_auth() -> Response | None:
        """The refusal of a request without valid credentials; once they pass,
        a body sent without Content-Length is read (up to the limit)."""
        refused = refusal()
        if refused is None:
            buffer_unsized_body()
        return refused

    def refusal() -> Response | None:
        # Headers and query only: nothing reads the body before this passes.
        if not config.auth.host_allowed(request.host):
            return _error(
                "this backend has no basic auth (BASIC_AUTH_USER/BASIC_AUTH_PASS) "
                "and answers only requests addressed to 127.0.0.1 or localhost",
                403,
            )
        if request.path.rstrip("/") == "/webhook":
            token = request.args.get(WEBHOOK_TOKEN_PARAM) or request.headers.get(
                WEBHOOK_TOKEN_HEADER
            )
            if config.auth.check_webhook(token, request.headers.get("Authorization")):
                return None
            log.warning(
                "refused a /webhook without valid credentials: register the webhook "
                "in Label Studio as <backend>/webhook?%s=<REXLABEL_WEBHOOK_TOKEN> "
                "or give it an Authorization: Basic header",
                WEBHOOK_TOKEN_PARAM,
            )
            response = _error("webhook token or basic auth missing or wrong", 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="rexlabel"'
            return response
        if not config.auth.check_basic(request.headers.get("Authorization")):
            response = _error("authentication required", 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="rexlabel"'
            return response
        return None

    @app.errorhandler(BadRequest)
    def bad_request(exc: BadRequest) -> Response:
        return _error(str(exc), 400)

    @app.errorhandler(NoBackgroundJobs)
    def no_background(exc: NoBackgroundJobs) -> Response:
        return _error(scrub_text(str(exc)), 503)

    @app.errorhandler(WebhookBacklog)
    def webhook_backlog(exc: WebhookBacklog) -> Response:
        log.warning("webhook: %s", exc)
        return _error(str(exc), 503)

    @app.errorhandler(413)
    def too_large(_exc: Any) -> Response:
        return _error(body_too_large(), 413)

    @app.errorhandler(404)
    def not_found(_exc: Any) -> Response:
        return _error(f"no route {request.method} {request.path}", 404)

    @app.errorhandler(405)
    def not_allowed(_exc: Any) -> Response:
        return _error(f"{request.method} is not allowed on {request.path}", 405)

    @app.errorhandler(Exception)
    def internal(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # 415, ...: werkzeug's own words
            return _error(exc.description or exc.name, exc.code or 500)
        # The reply names no exception, path or URL: the id finds it in the log.
        error_id = uuid.uuid4().hex[:12]
        log.exception(
            "unhandled error %s on %s %s", error_id, request.method, request.path
        )
        return _error(f"internal error (id {error_id}, in the backend's log)", 500)

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        body, status = backend.health()
        response = jsonify(scrub_health(body))
        response.status = status
        return response

    @app.post("/setup")
    def setup() -> Response:
        return jsonify(backend.setup(json_body()))

    @app.get("/versions")
    def versions() -> Response:
        default = [backend.version_for(None, {}, record=False)]
        return jsonify({"versions": list(backend.versions) or default})

    @app.post("/webhook")
    def webhook() -> Response:
        return jsonify(backend.webhook(json_body()))

    @app.post("/predict")
    def predict() -> Response:
        body = json_body()
        return jsonify(backend.predict(body))

    @app.post("/train")
    def train() -> Response:
        body, status = backend.train(json_body())
        response = jsonify(body)
        response.status_code = status
        return response

    return app


def _error(message: str, status: int) -> Response:
    response = jsonify({"error": message, "status": status})
    response.status_code = status
    return response
