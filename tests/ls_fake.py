"""A small HTTP server on 127.0.0.1 answering like Label Studio 1.23 for what
``rexlabel doctor`` and a deployed backend/worker ask of it (and nothing else).

- ``GET /health`` -> ``{"status": "UP"}`` (no auth);
- ``POST /api/token/refresh/ {"refresh": PAT}`` -> ``{"access": JWT}``;
- ``Token <legacy>`` (when the organization allows legacy tokens) or
  ``Bearer <issued access JWT>`` for: ``GET /api/current-user/whoami``,
  ``/api/projects/`` (paginated), ``/api/tasks/?project=`` (``{"tasks", "total"}``),
  ``/data/upload/<path>`` and ``/storage-data/uploaded/?filepath=upload/<path>``;
- ``GET /v1/models`` (an OpenAI-compatible server's model list, no auth).
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from PIL import Image

LEGACY_TOKEN = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff"
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="cat"/>'
    "</RectangleLabels></View>"
)


def make_jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


PAT = make_jwt({"token_type": "refresh", "exp": int(time.time()) + 10**9, "user_id": 1})
"""The personal access token the fake accepts."""


def png(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeLabelStudio:
    """Label Studio 1.23's answers for what the doctor asks (and nothing else)."""

    def __init__(
        self,
        *,
        legacy_enabled: bool = True,
        served_models=(),
        legacy_token: str = LEGACY_TOKEN,
    ) -> None:
        self.legacy_enabled = legacy_enabled
        self.legacy_token = legacy_token
        self.served_models = list(served_models)
        self.access_tokens: set[str] = set()
        self.files = {"1/cat.png": png()}
        self.projects = [{"id": 3, "title": "cats", "label_config": LABEL_CONFIG}]
        self.tasks = {3: [{"id": 17, "data": {"image": "/data/upload/1/cat.png"}}]}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeLabelStudio:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def authorized(self, header: str) -> bool:
        if header == f"Token {self.legacy_token}":
            return self.legacy_enabled
        return header.startswith("Bearer ") and header[7:] in self.access_tokens

    def _handler(self):
        ls = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body=b"", content_type="application/json"):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/api/token/refresh/":
                    return self._send(404, {"detail": "Not found."})
                if body.get("refresh") != PAT:
                    return self._send(401, {"detail": "Token is invalid or expired"})
                access = make_jwt({"token_type": "access", "exp": time.time() + 300})
                ls.access_tokens.add(access)
                return self._send(200, {"access": access})

            def do_GET(self):
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                if parts.path == "/health":
                    return self._send(200, {"status": "UP"})
                if parts.path == "/v1/models":
                    data = [{"id": m, "object": "model"} for m in ls.served_models]
                    return self._send(200, {"object": "list", "data": data})
                if not ls.authorized(self.headers.get("Authorization", "")):
                    return self._send(401, {"detail": "Invalid token."})
                if parts.path == "/api/current-user/whoami":
                    return self._send(200, {"id": 1, "email": "admin@example.com"})
                if parts.path == "/api/projects/":
                    results = ls.projects[: int(query.get("page_size", 30))]
                    return self._send(
                        200,
                        {"count": len(ls.projects), "next": None, "results": results},
                    )
                if parts.path == "/api/tasks/":
                    tasks = ls.tasks.get(int(query["project"]), [])
                    return self._send(200, {"tasks": tasks, "total": len(tasks)})
                if parts.path.startswith("/data/upload/"):
                    data = ls.files.get(parts.path[len("/data/upload/") :])
                    if data is None:
                        return self._send(404, {"detail": "Not found."})
                    return self._send(200, data, "image/png")
                if parts.path == "/storage-data/uploaded/":
                    data = ls.files.get(
                        query.get("filepath", "").removeprefix("upload/")
                    )
                    if data is None:
                        return self._send(404, {"detail": "Not found."})
                    return self._send(200, data, "image/png")
                return self._send(404, {"detail": "Not found."})

        return Handler
