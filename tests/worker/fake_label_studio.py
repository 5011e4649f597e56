"""A small HTTP server on 127.0.0.1 that answers like Label Studio's media endpoints.

What it mimics (label-studio-protocol.md, sections 0.5 and 3):
- ``Authorization: Token <legacy>`` and ``Bearer <access JWT>`` (expiring);
  a refresh JWT sent as Bearer gets 401, as in Label Studio 1.23.
- ``POST /api/token/refresh/ {"refresh": PAT}`` -> ``{"access": JWT}``.
- ``GET /data/upload/...`` (switched off: 404, as with a cloud default
  storage), ``/storage-data/uploaded/?filepath=...`` (switched off: 400, as a
  plain ``label-studio start`` answers), ``/data/local-files/?d=``.
- ``GET /tasks/<id>/presign/?fileuri=<urlsafe b64>`` -> 302 to a second
  "cloud" server (another port, so another host) that needs no auth.
- No ``Authorization`` header -> 302 to ``/user/login/`` (an HTML page).
- ``GET /redirect?to=URL`` -> 302 to URL, without auth (a plain web server).

Every request is logged as ``(method, path, authorization header)``.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def make_jwt(claims: dict) -> str:
    def part(data: dict) -> str:
        raw = json.dumps(data).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def make_pat(user_id: int = 1) -> str:
    """A personal access token: a refresh JWT with a far expiry."""
    return make_jwt(
        {"token_type": "refresh", "exp": int(time.time()) + 10**9, "user_id": user_id}
    )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class FakeLabelStudio:
    """Start with ``with FakeLabelStudio(tmp_path) as ls:``; ``ls.url`` is the base.

    Attributes:
        files: relative upload path (``1/a.jpg``) -> bytes, under /data/upload/.
        cloud: ``s3://bucket/key`` -> bytes, served by the cloud server.
        local_root: the local-files document root.
        legacy_upload_enabled: serve uploads on /data/upload/ (else 404).
        storage_data_enabled: serve uploads on /storage-data/ too (else 400).
        access_lifetime_s: lifetime of issued access tokens.
        requests: the request log, ``(method, path_with_query, authorization)``.
    """

    def __init__(self, local_root: Path, pat: str | None = None) -> None:
        self.files: dict[str, bytes] = {}
        self.cloud: dict[str, bytes] = {}
        self.local_root = Path(local_root)
        self.pat = pat or make_pat()
        self.legacy_upload_enabled = True
        self.storage_data_enabled = True
        self.access_lifetime_s = 300
        self.requests: list[tuple[str, str, str]] = []
        self.refreshes = 0
        self._issued: set[str] = set()
        self._lock = threading.Lock()
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

    def paths_requested(self) -> list[str]:
        with self._lock:
            return [path for _, path, _ in self.requests]

    # Auth -----------------------------------------------------------------
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
            self.refreshes += 1
            token = make_jwt(
                {
                    "token_type": "access",
                    "exp": time.time() + self.access_lifetime_s,
                    "jti": f"access-{self.refreshes}",
                }
            )
            self._issued.add(token)
            return token

    # Handlers -------------------------------------------------------------
    def _handler(self):
        ls = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(
                self, status, body=b"", content_type="application/json", headers=None
            ):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                auth = self.headers.get("Authorization", "")
                with ls._lock:
                    ls.requests.append(("POST", self.path, auth))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if urlsplit(self.path).path != "/api/token/refresh/":
                    return self._send(404, b'{"detail":"not found"}')
                try:
                    refresh = json.loads(body)["refresh"]
                except (ValueError, KeyError):
                    return self._send(400, b'{"refresh":["This field is required."]}')
                if refresh != ls.pat:
                    return self._send(401, b'{"detail":"Token is invalid or expired"}')
                access = ls._issue_access()
                return self._send(200, json.dumps({"access": access}).encode())

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                with ls._lock:
                    ls.requests.append(("GET", self.path, auth))
                parts = urlsplit(self.path)
                if parts.path == "/redirect":  # a plain web server's redirect
                    target = parse_qs(parts.query)["to"][0]
                    return self._send(302, headers={"Location": target})
                if parts.path == "/user/login/":
                    return self._send(200, b"<html>Log in</html>", "text/html")
                if not auth:
                    return self._send(
                        302, headers={"Location": f"/user/login/?next={self.path}"}
                    )
                if not ls._authorized(auth):
                    return self._send(401, b'{"detail":"Invalid token."}')
                query = parse_qs(parts.query)
                if parts.path.startswith("/data/upload/"):
                    if not ls.legacy_upload_enabled:
                        return self._send(404, b'{"detail":"not found"}')
                    return self._file(
                        ls.files.get(unquote(parts.path[len("/data/upload/") :]))
                    )
                if parts.path == "/storage-data/uploaded/":
                    if not ls.storage_data_enabled:
                        return self._send(400, b'{"detail":"bad request"}')
                    filepath = query.get("filepath", [""])[0]
                    return self._file(ls.files.get(filepath.removeprefix("upload/")))
                if parts.path == "/data/local-files/":
                    path = ls.local_root / query.get("d", [""])[0]
                    return self._file(path.read_bytes() if path.is_file() else None)
                if parts.path.startswith("/tasks/") and parts.path.endswith(
                    "/presign/"
                ):
                    encoded = query.get("fileuri", [""])[0]
                    uri = base64.urlsafe_b64decode(encoded).decode()
                    if uri not in ls.cloud:
                        return self._send(404, b'{"detail":"no such object"}')
                    target = f"{ls.cloud_url}/bucket?key={uri}&X-Signature=abc"
                    return self._send(302, headers={"Location": target})
                return self._send(404, b'{"detail":"not found"}')

            def _file(self, data):
                if data is None:
                    return self._send(404, b'{"detail":"not found"}')
                return self._send(200, data, "application/octet-stream")

        return Handler

    def _cloud_handler(self):
        ls = self

        class CloudHandler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                with ls._lock:
                    ls.requests.append(("GET", "cloud:" + self.path, auth))
                key = parse_qs(urlsplit(self.path).query).get("key", [""])[0]
                data = ls.cloud.get(key)
                status = 200 if data is not None and not auth else 403
                body = data if status == 200 else b"<Error>AccessDenied</Error>"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return CloudHandler
