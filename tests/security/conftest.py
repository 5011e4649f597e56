"""Attack-style tests: a real ``rexlabel serve`` on loopback, real listeners.

- :class:`Listener`: an HTTP server on 127.0.0.1 that records every request
  (method, path, headers, body) and answers what the test sets. It stands in
  for the attacker's server, an internal service, or Label Studio itself.
- :class:`FakeChat`: an OpenAI-compatible server answering every question with
  one fixed Rex-Omni answer (plain JSON, no stream), so the backend runs its
  real in-process path (``REXLABEL_ENGINE=openai``) without loading a model.
- :func:`serve`: starts ``rexlabel serve --dev`` on a free loopback port with
  exactly the environment given (no rexlabel setting leaks in from outside),
  waits until it listens, and stops it afterwards; its log is kept for asserts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from PIL import Image

from common.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60.0
"""A cold ``rexlabel serve --dev`` imports Flask, requests and the planner in
a few seconds; a minute covers a loaded CI machine."""

BOX_ANSWER = (
    "<|object_ref_start|>shape<|object_ref_end|>"
    "<|box_start|><100><100><400><400><|box_end|><|im_end|>"
)
"""The answer FakeChat gives: one box of the phrase ``shape``."""

MODEL_ID = "IDEA-Research/Rex-Omni"
"""The model FakeChat serves: the product's default ``REXLABEL_MODEL``."""


def png_bytes(width: int = 64, height: int = 64, color=(200, 30, 30)) -> bytes:
    """A small valid PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Seen:
    """One request a Listener received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Listener:
    """An HTTP server on 127.0.0.1 that records requests and answers ``reply``.

    ``reply(request) -> (status, headers, body)``; by default a small PNG.
    Use as a context manager.
    """

    reply: Callable[[Seen], tuple[int, dict[str, str], bytes]] | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Seen(self.command, self.path, dict(self.headers), body)
                listener.seen.append(request)
                if listener.reply is None:
                    status, headers, data = (
                        200,
                        {"Content-Type": "image/png"},
                        (png_bytes()),
                    )
                else:
                    status, headers, data = listener.reply(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def authorized(self) -> list[Seen]:
        """Requests that carried an Authorization header (a leaked credential)."""
        return [
            s for s in self.seen if any(k.lower() == "authorization" for k in s.headers)
        ]

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeChat(Listener):
    """An OpenAI-compatible server that answers every question with ``answer``."""

    def __init__(self, answer: str = BOX_ANSWER) -> None:
        self.answer = answer
        super().__init__(reply=self._reply)

    def _reply(self, request: Seen) -> tuple[int, dict[str, str], bytes]:
        if request.method == "GET" and request.path.rstrip("/").endswith("/models"):
            data: dict[str, Any] = {"data": [{"id": MODEL_ID}]}
        else:
            data = {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.answer},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 10},
            }
        return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()

    @property
    def api_url(self) -> str:
        return f"{self.url}/v1"


def clean_env(**given: str) -> dict[str, str]:
    """This process's environment without any rexlabel setting, plus ``given``."""
    names = {n for s in SETTINGS for n in (s.name, *s.aliases)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    env["HF_HUB_OFFLINE"] = "1"
    return {**env, **given}


@dataclass
class Served:
    """A running ``rexlabel serve``: its base URL and (after it stops) its log."""

    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.post(self.url + path, json=body, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return requests.get(self.url + path, **kwargs)


@contextlib.contextmanager
def serve(tmp_path: Path, env: dict[str, str], *args: str) -> Iterator[Served]:
    """``rexlabel serve --dev`` on a free loopback port with ``clean_env(**env)``.

    Yields once the port accepts connections. Extra ``args`` go to the command.
    """
    port = free_port()
    log_path = tmp_path / f"serve-{port}.log"
    full_env = clean_env(**{"REXLABEL_HOST": "127.0.0.1", "PORT": str(port), **env})
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(BIN / "rexlabel"), "serve", "--dev", *args],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    served = Served(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise AssertionError(
                    f"rexlabel serve exited with {process.returncode}:\n{served.log}"
                )
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"rexlabel serve did not listen:\n{served.log}")
            time.sleep(0.1)
        yield served
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


REDIS_START_TIMEOUT_S = 30.0
"""A private redis-server accepts connections within milliseconds."""


@contextlib.contextmanager
def redis_server(tmp_path: Path, password: str = "") -> Iterator[str]:
    """A private ``redis-server`` on a free loopback port, without persistence
    (and with ``--requirepass password`` when given); yields its URL, password
    included. Skips the test when redis-server is not installed."""
    import shutil

    import pytest

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    command = [binary, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    if password:
        command += ["--requirepass", password]
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"redis-server on port {port} did not start")
            time.sleep(0.05)
        auth = f":{password}@" if password else ""
        yield f"redis://{auth}127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


DRIP_INTERVAL_S = 0.2
"""Pause between the bytes a Dripper sends: far below any read timeout, so
only a total deadline stops the download."""


class Dripper:
    """A loopback HTTP server that answers 200 with a large Content-Length and
    then sends one byte every DRIP_INTERVAL_S until the client goes away: an
    allowed host holding a download open. ``requests`` counts the requests."""

    def __init__(self, length: int = 10_000) -> None:
        self.length = length
        self.requests = 0
        self._stop = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.getsockname()[1]}"

    def _serve(self) -> None:
        self._server.settimeout(DRIP_INTERVAL_S)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._drip, args=(client,), daemon=True).start()

    def _drip(self, client: socket.socket) -> None:
        with client:
            client.recv(65536)
            self.requests += 1
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
                f"Content-Length: {self.length}\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                client.sendall(head.encode())
                for _ in range(self.length):
                    if self._stop.wait(DRIP_INTERVAL_S):
                        return
                    client.sendall(b"\0")

    def __enter__(self) -> Dripper:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._server.close()


BOX_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="shape"/>'
    "</RectangleLabels></View>"
)
"""A labeling config asking for FakeChat's phrase ``shape`` as rectangles."""
LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"
"""A Label Studio legacy token (40 hex characters) for LABEL_STUDIO_API_KEY."""
BASIC_AUTH = ("ls", "basic-secret")
"""BASIC_AUTH_USER / BASIC_AUTH_PASS for a served backend, as ``auth=``."""


def basic_auth_env() -> dict[str, str]:
    """The environment that makes ``serve`` require :data:`BASIC_AUTH`."""
    return {"BASIC_AUTH_USER": BASIC_AUTH[0], "BASIC_AUTH_PASS": BASIC_AUTH[1]}


def bomb_png(side: int = 10_000) -> bytes:
    """A valid 1-bit ``side`` x ``side`` PNG of zeros: about 12 KB for 10000,
    100 MP (hundreds of MB) once decoded. A real decompression bomb."""
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(side))
    data += compressor.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    signature = b"\x89PNG\r\n\x1a\n"
    return signature + b"".join(
        (chunk(b"IHDR", header), chunk(b"IDAT", data), chunk(b"IEND", b""))
    )
