"""A small Label Studio REST client: projects, tasks, views, predictions, export,
and the ML backends connected to a project.

Only what rexlabel needs, over ``requests``, with the token handling of
:class:`common.labelstudio.auth.LabelStudioAuth` (legacy token, or personal
access token exchanged for short-lived access tokens; renewed after a 401).
Transient failures (connection errors, 5xx, 429) of reads are retried a few
times. A POST is never sent again blindly: after an unclear failure (timeout,
connection lost, 5xx) it may have been stored, so :meth:`create_prediction`
first asks whether the prediction exists now (one per task and model version).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import requests

from common import settings
from common.labelstudio.auth import LabelStudioAuth, TokenKind
from common.urls import UnsafeURLError, parse_http_url

log = logging.getLogger(__name__)

PAGE_SIZE = 100
"""Tasks per page when listing: Label Studio's own UI default, fast to serialise."""
REQUEST_TIMEOUT_S = 30.0
"""Per-request timeout; exports of big projects use EXPORT_TIMEOUT_S instead."""
EXPORT_TIMEOUT_S = 600.0
"""Label Studio builds a JSON export synchronously; large projects take minutes."""
RETRIES = 3
"""Attempts for a request that failed transiently (connection, 5xx, 429)."""
RETRY_BACKOFF_S = 0.5
"""First wait between attempts; doubles each time."""
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""HTTP statuses worth retrying: overload and gateway hiccups."""
REFUSED_STATUSES = frozenset({429})
"""Statuses saying the request was not acted on (rate limited): even a POST may
be sent again. Any other failure of a POST may have taken effect."""
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods that may be sent again after an unclear failure (RFC 9110 9.2.2);
a repeated POST can store a second prediction."""
EXPORT_CHUNK_BYTES = 1 << 20
"""Bytes per write while streaming an export to disk."""
HEALTH_PATH = "/health"
"""Label Studio's liveness route: ``{"status": "UP"}``, no token needed."""


class LabelStudioAPIError(RuntimeError):
    """Label Studio answered with an error; names the request and its status.

    ``ambiguous``: the request may have taken effect all the same (a timeout,
    a connection lost, a 5xx, an unreadable success): check before repeating.
    """

    def __init__(
        self, message: str, status: int | None = None, *, ambiguous: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.ambiguous = ambiguous


class LabelStudioClient:
    """Label Studio at ``url`` with ``api_key`` (legacy token or PAT)."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        timeout: float = REQUEST_TIMEOUT_S,
        retries: int = RETRIES,
    ) -> None:
        if not url:
            raise LabelStudioAPIError(
                "Label Studio URL is not set: export LABEL_STUDIO_URL "
                "(e.g. http://localhost:8080)"
            )
        if not api_key:
            raise LabelStudioAPIError(
                "Label Studio token is not set: export LABEL_STUDIO_API_KEY "
                "(Account & Settings -> Personal Access Token, or a legacy token)"
            )
        try:  # the token goes where the HTTP client connects: parse as it does
            parse_http_url(url)
        except UnsafeURLError as exc:
            raise LabelStudioAPIError(f"LABEL_STUDIO_URL: {exc}") from None
        self.url = url.rstrip("/")
        self.session = session or requests.Session()
        self.auth = LabelStudioAuth(self.url, api_key, session=self.session)
        self.timeout = timeout
        self.retries = max(1, retries)

    @classmethod
    def from_settings(cls, **kwargs: Any) -> LabelStudioClient:
        """A client for LABEL_STUDIO_URL with LABEL_STUDIO_API_KEY."""
        return cls(
            settings.get("LABEL_STUDIO_URL"),
            settings.get("LABEL_STUDIO_API_KEY"),
            **kwargs,
        )

    # Transport -----------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        timeout: float | None = None,
        stream: bool = False,
    ) -> requests.Response:
        """One API call; raises LabelStudioAPIError naming it when it fails.

        Reads are retried after transient failures; other methods only when
        Label Studio refused them (:data:`REFUSED_STATUSES`, an expired access
        token), otherwise the error is ``ambiguous`` and the caller decides.
        """
        url = self.url + path
        what = f"{method} {path}"
        repeatable = method.upper() in IDEMPOTENT_METHODS
        renewed = False
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json_body,
                    headers=self.auth.headers(),
                    timeout=timeout or self.timeout,
                    stream=stream,
                )
            except requests.RequestException as exc:
                if repeatable and attempt < self.retries:
                    self._backoff(attempt, what, exc)
                    continue
                raise LabelStudioAPIError(
                    f"{what} to Label Studio at {self.url} failed: {exc}",
                    ambiguous=not repeatable,
                ) from exc
            if (
                response.status_code == 401
                and self.auth.kind is TokenKind.PAT
                and not renewed
            ):
                self.auth.invalidate()  # the access token expired early: renew once
                renewed = True
                continue
            status = response.status_code
            retry_on = RETRY_STATUSES if repeatable else REFUSED_STATUSES
            if status in retry_on and attempt < self.retries:
                self._backoff(attempt, what, f"HTTP {status}")
                continue
            if not response.ok:
                raise LabelStudioAPIError(
                    f"{what} failed with HTTP {status}: {_error_text(response)}",
                    status=status,
                    ambiguous=not repeatable and status >= 500,
                )
            return response

    def _backoff(self, attempt: int, what: str, why: Any) -> None:
        delay = RETRY_BACKOFF_S * 2 ** (attempt - 1)
        log.warning("%s: %s; retrying in %.1f s", what, why, delay)
        time.sleep(delay)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise LabelStudioAPIError(
                f"{method} {path} returned non-JSON: {response.text[:200]!r}",
                status=response.status_code,
                ambiguous=method.upper() not in IDEMPOTENT_METHODS,
            ) from None

    # Users, projects and views ---------------------------------------------
    def whoami(self) -> dict[str, Any]:
        """The token's user (``email``, ``username``, ...)."""
        return self._json("GET", "/api/current-user/whoami")

    def list_projects(self, *, page_size: int = PAGE_SIZE) -> list[dict[str, Any]]:
        """The first ``page_size`` projects the token's user can see."""
        data = self._json("GET", "/api/projects/", params={"page_size": page_size})
        return data if isinstance(data, list) else list(data.get("results", []))

    def get_project(self, project: int) -> dict[str, Any]:
        """The project, with ``label_config`` and ``title``."""
        return self._json("GET", f"/api/projects/{int(project)}/")

    def model_versions(self, project: int) -> list[dict[str, Any]]:
        """The model versions of the project's stored predictions, newest
        first: ``[{"model_version", "count", "latest"}]`` (``latest``: when
        the newest prediction of that version was created)."""
        data = self._json(
            "GET",
            f"/api/projects/{int(project)}/model-versions/",
            params={"extended": "true"},
        )
        versions = data.get("static") if isinstance(data, dict) else data
        return [v for v in versions or [] if isinstance(v, dict)]

    def list_views(self, project: int) -> list[dict[str, Any]]:
        """The Data Manager tabs (views) of a project."""
        data = self._json("GET", "/api/dm/views/", params={"project": int(project)})
        return data if isinstance(data, list) else list(data.get("results", []))

    def find_view(self, project: int, view: str | int) -> int:
        """The id of a view given its id or its tab title (case-insensitive)."""
        views = self.list_views(project)
        wanted = str(view).strip()
        for item in views:
            if str(item.get("id")) == wanted:
                return int(item["id"])
        for item in views:
            title = str((item.get("data") or {}).get("title", ""))
            if title.strip().lower() == wanted.lower():
                return int(item["id"])
        names = [
            f"{item.get('id')}:{(item.get('data') or {}).get('title', '')}"
            for item in views
        ]
        listed = ", ".join(names) or "none"
        raise LabelStudioAPIError(
            f"project {project} has no view {view!r}; views: {listed}"
        )

    # Tasks -------------------------------------------------------------------
    def iter_tasks(
        self,
        project: int,
        *,
        view: int | None = None,
        fields: str = "all",
        page_size: int = PAGE_SIZE,
    ) -> Iterator[dict[str, Any]]:
        """Every task of the project (or of a view), page by page.

        ``fields="all"`` includes each task's ``predictions`` (to skip tasks that
        already have this model version). Memory: one page at a time.
        """
        page = 1
        seen = 0
        while True:
            params: dict[str, Any] = {
                "project": int(project),
                "page": page,
                "page_size": page_size,
                "fields": fields,
            }
            if view is not None:
                params["view"] = int(view)
            try:
                data = self._json("GET", "/api/tasks/", params=params)
            except LabelStudioAPIError as exc:
                if exc.status == 404 and page > 1:
                    return  # past the last page
                raise
            tasks = data.get("tasks", []) if isinstance(data, dict) else data
            if not tasks:
                return
            yield from tasks
            seen += len(tasks)
            total = data.get("total") if isinstance(data, dict) else None
            if (total is not None and seen >= int(total)) or len(tasks) < page_size:
                return
            page += 1

    def get_task(self, task: int) -> dict[str, Any]:
        return self._json("GET", f"/api/tasks/{int(task)}/")

    def project_tasks(
        self, project: int, task_ids: Iterable[int]
    ) -> tuple[list[dict[str, Any]], list[int]]:
        """Label Studio's own copy of each task (``GET /api/tasks/<id>/``)
        that belongs to ``project``, and the ids that do not: another
        project's, unknown, or unreadable now (the reason is logged). A list
        of task ids from a request is a claim; this is Label Studio's answer.
        """
        found: list[dict[str, Any]] = []
        refused: list[int] = []
        for task_id in task_ids:
            try:
                task = self.get_task(task_id)
            except LabelStudioAPIError as exc:
                log.info("task %s not read from Label Studio: %s", task_id, exc)
                refused.append(task_id)
                continue
            owner = task.get("project") if isinstance(task, dict) else None
            if _same_id(owner, project) and _same_id(task.get("id"), task_id):
                found.append(task)
            else:
                refused.append(task_id)
        return found, refused

    # Predictions ---------------------------------------------------------------
    def create_prediction(
        self,
        task: int,
        result: list[dict[str, Any]],
        *,
        score: float | None,
        model_version: str,
    ) -> dict[str, Any]:
        """``POST /api/predictions``: one prediction (all regions) for one task.

        Never stores two: after an unclear failure (timeout, connection lost,
        5xx) the task's predictions are listed, and a prediction of
        ``model_version`` found there is returned instead of posting again.
        A task holds at most one prediction per model version, so callers
        check :meth:`find_prediction` before the first post when unsure.
        """
        body: dict[str, Any] = {
            "task": int(task),
            "result": result,
            "model_version": model_version,
        }
        if score is not None:
            body["score"] = float(score)
        attempt = 0
        while True:
            attempt += 1
            try:
                return self._json("POST", "/api/predictions/", json_body=body)
            except LabelStudioAPIError as exc:
                if not exc.ambiguous:
                    raise
                # A timeout or 5xx often means Label Studio is still storing
                # it: wait before looking, then post again only if it is not there.
                self._backoff(attempt, f"POST /api/predictions/ (task {task})", exc)
                stored = self.find_prediction(task, model_version)
                if stored is not None:
                    log.info("task %s: the prediction was stored despite %s", task, exc)
                    return stored
                if attempt >= self.retries:
                    raise

    def list_predictions(
        self, *, task: int | None = None, project: int | None = None
    ) -> list[dict[str, Any]]:
        """Predictions of one task or of a whole project."""
        params: dict[str, Any] = {}
        if task is not None:
            params["task"] = int(task)
        if project is not None:
            params["project"] = int(project)
        data = self._json("GET", "/api/predictions/", params=params)
        return data if isinstance(data, list) else list(data.get("results", []))

    def find_prediction(self, task: int, model_version: str) -> dict[str, Any] | None:
        """The task's newest prediction of ``model_version``, or None."""
        mine = [
            p
            for p in self.list_predictions(task=task)
            if p.get("model_version") == model_version
        ]
        return max(mine, key=lambda p: _id_order(p.get("id"))) if mine else None

    def has_prediction(self, task: int, model_version: str) -> bool:
        """Whether the task already holds a prediction of ``model_version``."""
        return self.find_prediction(task, model_version) is not None

    # ML backends ---------------------------------------------------------------
    def list_ml_backends(self, project: int) -> list[dict[str, Any]]:
        """The ML backends connected to the project (``id``, ``url``, ``title``,
        ``extra_params``...); Label Studio asks each one's /health and /setup
        first, to refresh its state."""
        data = self._json("GET", "/api/ml/", params={"project": int(project)})
        return data if isinstance(data, list) else list(data.get("results", []))

    def update_ml_backend(
        self, ml_backend: int, fields: dict[str, Any]
    ) -> dict[str, Any]:
        """``PATCH /api/ml/<id>``: change some fields; returns the backend.

        Label Studio 1.23 checks the backend before saving (its /health, and
        /setup with the new values, so the backend gets new ``extra_params``
        at once) and fails with HTTP 500 unless ``fields`` hold its ``url``
        and ``project``. Not repeated after an unclear failure.
        """
        return self._json("PATCH", f"/api/ml/{int(ml_backend)}", json_body=fields)

    # Export --------------------------------------------------------------------
    def export_json(self, project: int, path: str | Path) -> Path:
        """Stream the project's JSON export (all tasks, annotations, predictions)
        to ``path`` (written to a temporary name first, then renamed)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        response = self.request(
            "GET",
            f"/api/projects/{int(project)}/export",
            params={"exportType": "JSON", "download_all_tasks": "true"},
            timeout=EXPORT_TIMEOUT_S,
            stream=True,
        )
        with response, open(tmp, "wb") as handle:
            for block in response.iter_content(EXPORT_CHUNK_BYTES):
                handle.write(block)
        tmp.replace(path)
        return path


def health(
    url: str,
    *,
    session: requests.Session | None = None,
    timeout: float = REQUEST_TIMEOUT_S,
) -> requests.Response:
    """One ``GET`` of :data:`HEALTH_PATH` on the Label Studio at ``url``, without
    a token (it must answer before one is known); requests' errors propagate."""
    return (session or requests.Session()).get(
        url.rstrip("/") + HEALTH_PATH, timeout=timeout
    )


class ExtraParamsError(ValueError):
    """An ML backend's extra params are not a JSON object."""


def ml_backend_extra_params(backend: dict[str, Any]) -> dict[str, Any]:
    """An ML backend's "Extra params" (from :meth:`LabelStudioClient.list_ml_backends`)
    as an object: Label Studio may hold null, or JSON text.
    :class:`ExtraParamsError` naming the backend when they are something else."""
    extra = backend.get("extra_params")
    if extra is None or extra == "":
        return {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            pass
    if not isinstance(extra, dict):
        shown = repr(extra)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise ExtraParamsError(
            f"ML backend {backend.get('id')}: extra_params {shown} is not a "
            "JSON object; fix it in Label Studio first"
        )
    return extra


def prediction_model_versions(task: dict[str, Any]) -> set[str]:
    """The model versions of the predictions a listed task carries."""
    versions = set()
    for item in task.get("predictions") or []:
        if isinstance(item, dict) and item.get("model_version") is not None:
            versions.add(str(item["model_version"]))
    return versions


def _same_id(value: Any, expected: int) -> bool:
    """True when Label Studio's ``value`` is the integer id ``expected``."""
    return isinstance(value, int) and not isinstance(value, bool) and value == expected


def _id_order(value: Any) -> tuple[int, str]:
    """Sort key of a prediction id: numeric ids by value, anything else after."""
    text = str(value)
    return (int(text), "") if text.isdigit() else (1 << 62, text)


def _error_text(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason
    if isinstance(body, dict):
        for key in ("detail", "validation_errors", "message", "errors"):
            if key in body:
                return json.dumps(body[key])[:300]
    return json.dumps(body)[:300]
