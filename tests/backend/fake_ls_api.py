"""A small HTTP server on 127.0.0.1 answering like Label Studio 1.23's REST API.

Just what ``backend.lsapi`` and the bulk project jobs use (label-studio-protocol.md):

- auth: ``Token <legacy>``, or a personal access token (refresh JWT) exchanged
  at ``POST /api/token/refresh/`` for an access JWT sent as ``Bearer``; a
  refresh JWT sent as Bearer gets 401 like the real server;
- ``GET /api/projects/<id>/``, ``GET /api/dm/views/?project=``;
- ``GET /api/tasks/?project=&view=&page=&page_size=&fields=all`` with Label
  Studio's envelope ``{"tasks": [...], "total": N}``; a page past the end is 404;
- ``POST /api/predictions/`` and ``GET /api/predictions/?task=|project=``;
- ``GET /api/projects/<id>/export?exportType=JSON``;
- ``GET /data/upload/<path>`` and ``/storage-data/uploaded/?filepath=upload/...``.

``fail_next`` makes the next N API requests answer 503 (retry tests);
``requests`` logs ``(method, path)``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LEGACY_TOKEN = "feedfacefeedfacefeedfacefeedfacefeedface"


def make_jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def make_pat() -> str:
    return make_jwt({"token_type": "refresh", "exp": int(time.time()) + 10**9})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeLabelStudioAPI:
    """``with FakeLabelStudioAPI() as ls:``; add projects with :meth:`add_project`."""

    def __init__(self) -> None:
        self.pat = make_pat()
        self.projects: dict[int, dict] = {}
        self.tasks: dict[int, dict] = {}
        self.views: dict[int, dict] = {}
        self.predictions: list[dict] = []
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.fail_next = 0
        self.access_lifetime_s = 300.0
        self._issued: set[str] = set()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeLabelStudioAPI:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # Data ------------------------------------------------------------------------
    def add_project(self, project_id: int, label_config: str, title: str = "") -> None:
        self.projects[project_id] = {
            "id": project_id,
            "title": title or f"project {project_id}",
            "label_config": label_config,
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

    def predictions_of(self, task_id: int) -> list[dict]:
        with self._lock:
            return [p for p in self.predictions if p["task"] == task_id]

    # Auth ------------------------------------------------------------------------
    def _authorized(self, header: str) -> bool:
        if header == f"Token {LEGACY_TOKEN}":
            return True
        if header.startswith("Bearer "):
            token = header[len("Bearer ") :]
            if token not in self._issued:
                return False
            payload = token.split(".")[1]
            claims = json.loads(
                base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            )
            return claims["exp"] > time.time()
        return False

    def _issue_access(self) -> str:
        with self._lock:
            token = make_jwt(
                {
                    "token_type": "access",
                    "exp": time.time() + self.access_lifetime_s,
                    "jti": f"a{len(self._issued)}",
                }
            )
            self._issued.add(token)
            return token

    # HTTP ------------------------------------------------------------------------
    def _handler(self):
        ls = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(
                self, status, payload=None, raw=None, content_type="application/json"
            ):
                body = raw if raw is not None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _begin(self, method):
                with ls._lock:
                    ls.requests.append((method, self.path))
                    if ls.fail_next > 0 and self.path.startswith("/api/"):
                        ls.fail_next -= 1
                        self._send(503, {"detail": "overloaded"})
                        return False
                return True

            def _auth(self):
                if ls._authorized(self.headers.get("Authorization", "")):
                    return True
                self._send(
                    401, {"detail": "Authentication credentials were not provided."}
                )
                return False

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(length) or b"null")

            def do_POST(self):
                if not self._begin("POST"):
                    return None
                path = urlsplit(self.path).path
                body = self._body()
                if path == "/api/token/refresh/":
                    if not isinstance(body, dict) or body.get("refresh") != ls.pat:
                        return self._send(
                            401, {"detail": "Token is invalid or expired"}
                        )
                    return self._send(200, {"access": ls._issue_access()})
                if not self._auth():
                    return None
                if path == "/api/predictions/":
                    task = body.get("task")
                    if task not in ls.tasks:
                        return self._send(400, {"validation_errors": {"task": ["bad"]}})
                    if not body.get("model_version"):
                        return self._send(
                            400, {"validation_errors": {"model_version": ["null"]}}
                        )
                    pred = ls.add_prediction(
                        task, body["result"], body["model_version"]
                    )
                    pred["score"] = body.get("score")
                    return self._send(201, pred)
                return self._send(404, {"detail": "not found"})

            def do_GET(self):
                if not self._begin("GET"):
                    return None
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                path = parts.path
                if not self._auth():
                    return None
                if path.startswith("/data/upload/"):
                    return self._file(
                        ls.files.get(unquote(path[len("/data/upload/") :]))
                    )
                if path == "/storage-data/uploaded/":
                    name = query.get("filepath", "").removeprefix("upload/")
                    return self._file(ls.files.get(name))
                if path.startswith("/api/projects/") and path.endswith("/export"):
                    project = int(path.split("/")[3])
                    return self._send(200, ls._export(project))
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
                    return ls._tasks_page(self, query)
                if path == "/api/predictions/":
                    with ls._lock:
                        found = [
                            p
                            for p in ls.predictions
                            if ("task" not in query or p["task"] == int(query["task"]))
                            and (
                                "project" not in query
                                or p["project"] == int(query["project"])
                            )
                        ]
                    return self._send(200, found)
                return self._send(404, {"detail": "not found"})

            def _file(self, data):
                if data is None:
                    return self._send(404, {"detail": "not found"})
                return self._send(
                    200, raw=data, content_type="application/octet-stream"
                )

        return Handler

    def _task_view(self, task: dict, fields: str) -> dict:
        out = {"id": task["id"], "data": task["data"], "project": task["project"]}
        preds = self.predictions_of(task["id"])
        out["total_predictions"] = len(preds)
        if fields == "all":
            out["predictions"] = preds
            out["annotations"] = task["annotations"]
        return out

    def _tasks_page(self, handler, query: dict) -> None:
        project = int(query["project"])
        ids = sorted(t for t, task in self.tasks.items() if task["project"] == project)
        if "view" in query:
            allowed = set(self.views[int(query["view"])]["task_ids"])
            ids = [t for t in ids if t in allowed]
        page = int(query.get("page", 1))
        size = int(query.get("page_size", 100))
        start = (page - 1) * size
        if page > 1 and start >= len(ids):
            return handler._send(404, {"detail": "Invalid page."})
        chosen = ids[start : start + size]
        fields = query.get("fields", "task_only")
        tasks = [self._task_view(self.tasks[t], fields) for t in chosen]
        return handler._send(200, {"tasks": tasks, "total": len(ids)})

    def _export(self, project: int) -> list:
        out = []
        for task_id in sorted(self.tasks):
            task = self.tasks[task_id]
            if task["project"] != project:
                continue
            out.append(
                {
                    "id": task_id,
                    "data": task["data"],
                    "annotations": task["annotations"],
                    "predictions": self.predictions_of(task_id),
                }
            )
        return out
