"""A small HTTP server on 127.0.0.1 answering like Label Studio 1.23 (the one
stand-in for Label Studio in the tests; label-studio-protocol.md).

Auth (as 1.23): ``Token <legacy>`` (while ``legacy_enabled``), or a personal
access token (a refresh JWT) exchanged at ``POST /api/token/refresh/
{"refresh": PAT}`` for an expiring access JWT sent as ``Bearer``; a refresh JWT
sent as Bearer gets 401. A request with no ``Authorization`` header gets 401 on
``/api/`` and a 302 to ``/user/login/`` (an HTML page) elsewhere.

Without auth: ``GET /health`` (``{"status": "UP"}``), ``/user/login/``,
``/redirect?to=URL`` (a plain web server's 302) and ``/v1/models`` (an
OpenAI-compatible server's model list, ``served_models``).

With auth:

- ``GET /api/current-user/whoami``; ``/api/projects/`` (paginated) and
  ``/api/projects/<id>/``; ``/api/dm/views/?project=``;
  ``/api/projects/<id>/model-versions/?extended=true`` (the versions of the
  project's predictions, newest first, as ``{"static": [...], "live": None}``);
- ``GET /api/tasks/?project=&view=&page=&page_size=&fields=all`` with the
  envelope ``{"tasks": [...], "total": N}``; a page past the end is 404;
  ``GET /api/tasks/<id>/`` (the task with its ``project``; 404 if unknown);
- ``POST /api/predictions/`` and ``GET /api/predictions/?task=|project=``;
- ``GET /api/projects/<id>/export?exportType=JSON``;
- ``GET /api/ml/?project=`` (the project's ML backends, a list; 404 for an
  unknown project) and ``PATCH /api/ml/<id>`` (fields replaced; as 1.23, HTTP
  500 unless the body holds ``url`` and ``project``);
- uploads (``files``: ``1/a.png`` -> bytes) on ``/data/upload/<path>`` (404 when
  ``legacy_upload_enabled`` is off, as with a cloud default storage) and
  ``/storage-data/uploaded/?filepath=upload/<path>`` (400 when
  ``storage_data_enabled`` is off, as a plain ``label-studio start``);
- ``/data/local-files/?d=`` under ``local_root``;
- ``GET /tasks/<id>/presign/?fileuri=<urlsafe b64>`` -> 302 to a second "cloud"
  server (``cloud_url``: another port, so another host) serving ``cloud``
  (``s3://bucket/key`` -> bytes) to requests without auth.

``fail_next`` makes the next N ``/api/`` requests answer 503 (retry tests);
``fail_after_store`` makes the next N prediction POSTs store the prediction and
then answer ``fail_after_store_with`` (a status, or None: close the connection
unanswered), as a proxy timing out on a slow Label Studio does;
``requests`` logs every request as ``(method, path_with_query, authorization)``
(the cloud server's paths prefixed ``cloud:``); ``refreshes`` counts exchanges.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def make_jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def make_pat(user_id: int = 1) -> str:
    """A personal access token: a refresh JWT with a far expiry (each one new)."""
    return make_jwt(
        {
            "token_type": "refresh",
            "exp": int(time.time()) + 10**9,
            "jti": uuid.uuid4().hex,
            "user_id": user_id,
        }
    )


PAT = make_pat()
"""The personal access token a fake accepts unless given another."""


class Request(NamedTuple):
    method: str
    path: str
    auth: str


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeLabelStudio:
    """``with FakeLabelStudio() as ls:``; ``ls.url`` is the base URL.

    Data is added with :meth:`add_project`, :meth:`add_task`, :meth:`add_view`,
    :meth:`add_prediction` and by filling ``files`` / ``cloud``; the switches
    (``legacy_enabled``, ``legacy_token``, ``legacy_upload_enabled``,
    ``storage_data_enabled``, ``access_lifetime_s``, ``fail_next``) may change
    while it runs.
    """

    def __init__(
        self,
        local_root: Path | None = None,
        *,
        pat: str | None = None,
        legacy_enabled: bool = True,
        legacy_token: str = LEGACY_TOKEN,
        served_models=(),
    ) -> None:
        self.local_root = Path(local_root) if local_root is not None else None
        self.pat = pat or PAT
        self.legacy_enabled = legacy_enabled
        self.legacy_token = legacy_token
        self.served_models = list(served_models)
        self.projects: dict[int, dict] = {}
        self.tasks: dict[int, dict] = {}
        self.views: dict[int, dict] = {}
        self.predictions: list[dict] = []
        self.ml_backends: dict[int, dict] = {}
        self.files: dict[str, bytes] = {}
        self.cloud: dict[str, bytes] = {}
        self.legacy_upload_enabled = True
        self.storage_data_enabled = True
        self.access_lifetime_s = 300.0
        self.access_tokens: set[str] = set()
        self.refreshes = 0
        self.fail_next = 0
        self.fail_after_store = 0
        self.fail_after_store_with: int | None = 500
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._cloud_server = _Server(("127.0.0.1", 0), self._cloud_handler())
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def cloud_url(self) -> str:
        return f"http://127.0.0.1:{self._cloud_server.server_address[1]}"

    def __enter__(self) -> FakeLabelStudio:
        for server in (self._server, self._cloud_server):
            thread = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        for server in (self._server, self._cloud_server):
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def paths_requested(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method in (None, r.method)]

    # Data ------------------------------------------------------------------------
    def add_project(
        self,
        project_id: int,
        label_config: str,
        title: str = "",
        model_version: str = "",
    ) -> None:
        self.projects[project_id] = {
            "id": project_id,
            "title": title or f"project {project_id}",
            "label_config": label_config,
            "model_version": model_version,
        }

    def add_task(self, project_id: int, task_id: int, data: dict) -> dict:
        task = {"id": task_id, "project": project_id, "data": data, "annotations": []}
        self.tasks[task_id] = task
        return task

    def add_view(self, project_id: int, view_id: int, title: str, task_ids: list[int]):
        self.views[view_id] = {
            "id": view_id,
            "project": project_id,
            "data": {"title": title},
            "task_ids": list(task_ids),
        }

    def add_prediction(self, task_id: int, result: list, model_version: str) -> dict:
        with self._lock:
            pred = {
                "id": len(self.predictions) + 1,
                "task": task_id,
                "result": result,
                "score": 0.0,
                "model_version": model_version,
                "project": self.tasks[task_id]["project"],
            }
            self.predictions.append(pred)
            return pred

    def add_ml_backend(
        self, project_id: int, ml_id: int, url: str, extra_params=None, **fields
    ) -> dict:
        """A connected ML backend (``fields``: ``title``, ``auth_method``...)."""
        backend = {
            "id": ml_id,
            "project": project_id,
            "url": url,
            "title": fields.pop("title", f"model {ml_id}"),
            "state": "CO",
            "auth_method": "NONE",
            "extra_params": extra_params,
            **fields,
        }
        self.ml_backends[ml_id] = backend
        return backend

    def _patch_ml_backend(self, ml_id: int, body) -> tuple[int, dict]:
        backend = self.ml_backends.get(ml_id)
        if backend is None:
            return 404, {"detail": "Not found."}
        if not isinstance(body, dict) or "url" not in body or "project" not in body:
            return 500, {"detail": "A server error occurred."}  # KeyError in 1.23
        with self._lock:
            backend.update(body)
        return 200, backend

    def predictions_of(self, task_id: int) -> list[dict]:
        with self._lock:
            return [p for p in self.predictions if p["task"] == task_id]

    # Auth ------------------------------------------------------------------------
    def _authorized(self, header: str) -> bool:
        if header == f"Token {self.legacy_token}":
            return self.legacy_enabled
        if not header.startswith("Bearer "):
            return False
        token = header[len("Bearer ") :]
        if token not in self.access_tokens:  # a refresh JWT never is
            return False
        payload = token.split(".")[1]
        claims = json.loads(
            base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        )
        return claims["exp"] > time.time()

    def _issue_access(self) -> str:
        with self._lock:
            self.refreshes += 1
            token = make_jwt(
                {
                    "token_type": "access",
                    "exp": time.time() + self.access_lifetime_s,
                    "jti": f"access-{self.refreshes}",
                }
            )
            self.access_tokens.add(token)
            return token

    # Answers ---------------------------------------------------------------------
    def _task_view(self, task: dict, fields: str) -> dict:
        out = {"id": task["id"], "data": task["data"], "project": task["project"]}
        preds = self.predictions_of(task["id"])
        out["total_predictions"] = len(preds)
        if fields == "all":
            out["predictions"] = preds
            out["annotations"] = task["annotations"]
        return out

    def _tasks_page(self, query: dict) -> tuple[int, dict]:
        ids = sorted(
            t
            for t, task in self.tasks.items()
            if "project" not in query or task["project"] == int(query["project"])
        )
        if "view" in query:
            allowed = set(self.views[int(query["view"])]["task_ids"])
            ids = [t for t in ids if t in allowed]
        page = int(query.get("page", 1))
        size = int(query.get("page_size", 100))
        start = (page - 1) * size
        if page > 1 and start >= len(ids):
            return 404, {"detail": "Invalid page."}
        fields = query.get("fields", "task_only")
        tasks = [
            self._task_view(self.tasks[t], fields) for t in ids[start : start + size]
        ]
        return 200, {"tasks": tasks, "total": len(ids)}

    def _projects_page(self, query: dict) -> tuple[int, dict]:
        projects = [self.projects[p] for p in sorted(self.projects)]
        page = int(query.get("page", 1))
        size = int(query.get("page_size", 30))
        start = (page - 1) * size
        if page > 1 and start >= len(projects):
            return 404, {"detail": "Invalid page."}
        more = start + size < len(projects)
        return 200, {
            "count": len(projects),
            "next": f"{self.url}/api/projects/?page={page + 1}" if more else None,
            "previous": None
            if page == 1
            else f"{self.url}/api/projects/?page={page - 1}",
            "results": projects[start : start + size],
        }

    def _model_versions(self, project: int) -> dict:
        """Like Label Studio: per version its count and newest prediction
        (here by id: the fake stores no times), newest version first."""
        rows: dict[str, dict] = {}
        for pred in self._predictions({"project": project}):
            row = rows.setdefault(pred["model_version"], {"count": 0, "latest": 0})
            row["count"] += 1
            row["latest"] = max(row["latest"], pred["id"])
        static = [
            {"model_version": v, "count": r["count"], "latest": r["latest"]}
            for v, r in sorted(rows.items(), key=lambda item: -item[1]["latest"])
        ]
        return {"static": static, "live": None}

    def _export(self, project: int) -> list:
        return [
            {
                "id": task_id,
                "data": task["data"],
                "annotations": task["annotations"],
                "predictions": self.predictions_of(task_id),
            }
            for task_id, task in sorted(self.tasks.items())
            if task["project"] == project
        ]

    def _predictions(self, query: dict) -> list:
        with self._lock:
            return [
                p
                for p in self.predictions
                if ("task" not in query or p["task"] == int(query["task"]))
                and ("project" not in query or p["project"] == int(query["project"]))
            ]

    def _post_prediction(self, body) -> tuple[int, dict]:
        task = body.get("task") if isinstance(body, dict) else None
        if task not in self.tasks:
            return 400, {"validation_errors": {"task": ["bad"]}}
        if not body.get("model_version"):
            return 400, {"validation_errors": {"model_version": ["null"]}}
        pred = self.add_prediction(task, body["result"], body["model_version"])
        pred["score"] = body.get("score")
        return 201, pred

    def _local_file(self, query: dict) -> bytes | None:
        if self.local_root is None:
            return None
        path = self.local_root / query.get("d", "")
        return path.read_bytes() if path.is_file() else None

    # HTTP ------------------------------------------------------------------------
    def _handler(self):
        ls = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(
                self, status, payload=b"", content_type="application/json", headers=None
            ):
                body = (
                    payload
                    if isinstance(payload, bytes)
                    else json.dumps(payload).encode()
                )
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _file(self, name: str, data: bytes | None):
                if data is None:
                    return self._send(404, {"detail": "Not found."})
                kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
                return self._send(200, data, kind)

            def _begin(self, method: str) -> bool:
                """Log the request; False when it was answered with a 503."""
                with ls._lock:
                    auth = self.headers.get("Authorization", "")
                    ls.requests.append(Request(method, self.path, auth))
                    if ls.fail_next > 0 and self.path.startswith("/api/"):
                        ls.fail_next -= 1
                        self._send(503, {"detail": "overloaded"})
                        return False
                return True

            def _auth(self) -> bool:
                """True when authorized, else answered as Label Studio does."""
                header = self.headers.get("Authorization", "")
                if header and ls._authorized(header):
                    return True
                if header:
                    self._send(401, {"detail": "Invalid token."})
                elif self.path.startswith("/api/"):
                    detail = "Authentication credentials were not provided."
                    self._send(401, {"detail": detail})
                else:
                    login = f"/user/login/?next={self.path}"
                    self._send(302, headers={"Location": login})
                return False

            def do_POST(self):
                if not self._begin("POST"):
                    return None
                path = urlsplit(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    body = None
                if path == "/api/token/refresh/":
                    if not isinstance(body, dict) or "refresh" not in body:
                        return self._send(400, {"refresh": ["This field is required."]})
                    if body["refresh"] != ls.pat:
                        return self._send(
                            401, {"detail": "Token is invalid or expired"}
                        )
                    return self._send(200, {"access": ls._issue_access()})
                if not self._auth():
                    return None
                if path == "/api/predictions/":
                    status, stored = ls._post_prediction(body)
                    with ls._lock:
                        broken = status == 201 and ls.fail_after_store > 0
                        ls.fail_after_store -= int(broken)
                    if broken and ls.fail_after_store_with is None:
                        self.close_connection = True  # stored, never answered
                        return None
                    if broken:
                        return self._send(ls.fail_after_store_with, b"<h1>error</h1>")
                    return self._send(status, stored)
                return self._send(404, {"detail": "Not found."})

            def do_PATCH(self):
                if not self._begin("PATCH") or not self._auth():
                    return None
                path = urlsplit(self.path).path
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except ValueError:
                    body = None
                if path.startswith("/api/ml/") and path[8:].isdigit():
                    return self._send(*ls._patch_ml_backend(int(path[8:]), body))
                return self._send(404, {"detail": "Not found."})

            def do_GET(self):
                if not self._begin("GET"):
                    return None
                parts = urlsplit(self.path)
                path = parts.path
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if path == "/health":
                    return self._send(200, {"status": "UP"})
                if path == "/v1/models":
                    data = [{"id": m, "object": "model"} for m in ls.served_models]
                    return self._send(200, {"object": "list", "data": data})
                if path == "/redirect":  # a plain web server's redirect
                    return self._send(302, headers={"Location": query["to"]})
                if path == "/user/login/":
                    return self._send(200, b"<html>Log in</html>", "text/html")
                if not self._auth():
                    return None
                if path == "/api/current-user/whoami":
                    return self._send(200, {"id": 1, "email": "admin@example.com"})
                if path == "/api/projects/":
                    return self._send(*ls._projects_page(query))
                if path.startswith("/api/projects/") and path.endswith("/export"):
                    return self._send(200, ls._export(int(path.split("/")[3])))
                if path.startswith("/api/projects/") and path.endswith(
                    "/model-versions/"
                ):
                    project_id = int(path.split("/")[3])
                    if project_id not in ls.projects:
                        return self._send(404, {"detail": "Not found."})
                    return self._send(200, ls._model_versions(project_id))
                if path.startswith("/api/projects/"):
                    project = ls.projects.get(int(path.strip("/").split("/")[2]))
                    if project is None:
                        return self._send(404, {"detail": "Not found."})
                    return self._send(200, project)
                if path == "/api/dm/views/":
                    project = int(query["project"])
                    views = [
                        {"id": v["id"], "project": project, "data": v["data"]}
                        for v in ls.views.values()
                        if v["project"] == project
                    ]
                    return self._send(200, views)
                if path == "/api/tasks/":
                    return self._send(*ls._tasks_page(query))
                if path.startswith("/api/tasks/"):
                    task = ls.tasks.get(int(path.strip("/").split("/")[2]))
                    if task is None:
                        return self._send(404, {"detail": "Not found."})
                    return self._send(200, ls._task_view(task, "all"))
                if path == "/api/predictions/":
                    return self._send(200, ls._predictions(query))
                if path == "/api/ml/":
                    project = int(query.get("project", 0))
                    if project not in ls.projects:
                        return self._send(404, {"detail": "Not found."})
                    found = [
                        b for b in ls.ml_backends.values() if b["project"] == project
                    ]
                    return self._send(200, found)
                if path.startswith("/data/upload/"):
                    if not ls.legacy_upload_enabled:
                        return self._send(404, {"detail": "Not found."})
                    name = unquote(path[len("/data/upload/") :])
                    return self._file(name, ls.files.get(name))
                if path == "/storage-data/uploaded/":
                    if not ls.storage_data_enabled:
                        return self._send(400, {"detail": "Bad request."})
                    name = query.get("filepath", "").removeprefix("upload/")
                    return self._file(name, ls.files.get(name))
                if path == "/data/local-files/":
                    return self._file(query.get("d", ""), ls._local_file(query))
                if path.startswith("/tasks/") and path.endswith("/presign/"):
                    uri = base64.urlsafe_b64decode(query.get("fileuri", "")).decode()
                    if uri not in ls.cloud:
                        return self._send(404, {"detail": "no such object"})
                    target = f"{ls.cloud_url}/bucket?key={uri}&X-Signature=abc"
                    return self._send(302, headers={"Location": target})
                return self._send(404, {"detail": "Not found."})

        return Handler

    def _cloud_handler(self):
        ls = self

        class CloudHandler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                with ls._lock:
                    ls.requests.append(Request("GET", "cloud:" + self.path, auth))
                key = parse_qs(urlsplit(self.path).query).get("key", [""])[0]
                data = ls.cloud.get(key)
                status = 200 if data is not None and not auth else 403
                body = data if status == 200 else b"<Error>AccessDenied</Error>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return CloudHandler
