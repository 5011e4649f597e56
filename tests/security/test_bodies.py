"""Request bodies cannot cost the backend memory before credentials are checked.

A real ``rexlabel serve`` on loopback with basic auth on: a 100 MB body
without credentials is answered 401 without being parsed (the server's peak
resident memory barely moves), a body over the limit is answered 413 before it is
sent, a chunked one (no Content-Length) is read up to the limit and then
refused 413 rather than cut and parsed, and JSON nested 200,000 deep is a 401
or a 400, never a 500.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.routes.bodies import MAX_BODY_BYTES
from tests.security.conftest import START_TIMEOUT_S, FakeChat, Served, serve
from tests.worker.rq_helpers import wait_for

USER, PASSWORD = "ls", "basic-secret"
AUTH = (USER, PASSWORD)
AUTH_HEADER = "Basic bHM6YmFzaWMtc2VjcmV0"  # ls:basic-secret
HUGE_BODY_BYTES = 100 * 1024 * 1024
"""The probe's body: 100 MB, which the old backend read (and parsed) whole."""
SEND_CHUNK_BYTES = 1024 * 1024
PEAK_GROWTH_LIMIT_KB = 40 * 1024
"""Allowed rise of the server's peak resident memory while refusing the huge
body: the dev server discards what was sent after its answer in 10 MB reads
(about 20 MB at peak, measured), far below reading or parsing it whole (the
old backend's peak rose by 220 MB)."""
SOCKET_TIMEOUT_S = 30.0
"""A reply that waits for a body never sent hangs this long, then fails."""
DEEP = 200_000


def _status_kb(pid: int, field: str) -> int:
    """A memory figure of /proc/<pid>/status, in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


def _reset_peak(pid: int) -> None:
    """Start the peak resident memory (VmHWM) afresh from the current one
    (Linux >= 4.0), so it then measures one request, not the start-up."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def _head(served: Served, path: str, length: int, auth: bool) -> bytes:
    host = served.url.removeprefix("http://")
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if auth:
        lines.append(f"Authorization: {AUTH_HEADER}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _reply(sock: socket.socket) -> bytes:
    """The server's reply, headers and body (read while the request body may
    still be going out; the dev server drains it before it hangs up)."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _reply_length(data):
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    assert data, "the server closed the connection without answering"
    return data


def _reply_length(data: bytes) -> int:
    """Length of the whole reply once its headers are in (Content-Length)."""
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(data)


def _status(reply: bytes) -> str:
    return reply.split(b"\r\n", 1)[0].decode().split()[1]


def _connect(served: Served) -> socket.socket:
    host, port = served.url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=SOCKET_TIMEOUT_S)


def _send_body(sock: socket.socket, size: int) -> None:
    """Send ``size`` bytes of body until done or the server hangs up."""
    chunk = b" " * SEND_CHUNK_BYTES
    sent = 0
    try:
        while sent < size:
            sock.sendall(chunk[: size - sent])
            sent += min(len(chunk), size - sent)
    except OSError:
        pass  # the server answered and closed: the rest is never read


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    """A served backend whose model (FakeChat) is ready, so nothing else
    moves its memory while a test measures it."""
    with FakeChat() as chat:
        env = {
            "BASIC_AUTH_USER": USER,
            "BASIC_AUTH_PASS": PASSWORD,
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
        }
        with serve(tmp_path_factory.mktemp("serve"), env) as served:
            wait_for(
                lambda: served.get("/health", auth=AUTH).status_code == 200,
                START_TIMEOUT_S,
                "the model to be ready",
            )
            yield served


def test_a_huge_body_without_credentials_is_refused_unread(backend):
    pid = backend.process.pid
    _reset_peak(pid)
    before = _status_kb(pid, "VmRSS")
    with _connect(backend) as sock:
        sock.sendall(_head(backend, "/predict", HUGE_BODY_BYTES, auth=False))
        sender = threading.Thread(target=_send_body, args=(sock, HUGE_BODY_BYTES))
        sender.start()
        reply = _reply(sock)
        sender.join()
    growth = _status_kb(pid, "VmHWM") - before
    assert _status(reply) in ("401", "413"), reply[:200]
    assert growth < PEAK_GROWTH_LIMIT_KB, f"the server's peak grew by {growth} KB"
    assert backend.get("/versions", auth=AUTH).status_code == 200  # still serving


def test_a_body_over_the_limit_is_a_json_413_before_it_is_sent(backend):
    """Only the headers go out: a server that tried to read the body would
    wait for it and the socket would time out."""
    with _connect(backend) as sock:
        sock.sendall(_head(backend, "/predict", MAX_BODY_BYTES + 1, auth=True))
        reply = _reply(sock)
    assert _status(reply) == "413", reply[:200]
    error = json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]
    assert str(MAX_BODY_BYTES) in error


@pytest.mark.parametrize("path", ["/predict", "/setup", "/webhook"])
def test_deep_json_is_401_without_credentials_and_400_with(backend, path):
    deep = "[" * DEEP + "]" * DEEP
    headers = {"Content-Type": "application/json"}
    response = backend.post(path, data=deep, headers=headers)
    assert response.status_code == 401
    response = backend.post(path, data=deep, headers=headers, auth=AUTH)
    assert response.status_code == 400, response.text
    assert "nested too deeply" in response.json()["error"]
    nested_object = '{"tasks": ' + "[" * DEEP + "]" * DEEP + "}"
    response = backend.post(path, data=nested_object, headers=headers, auth=AUTH)
    assert response.status_code == 400, response.text


def test_a_body_within_the_limit_is_still_served(backend):
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/a.png"}}]}
    response = backend.post("/predict", body, auth=AUTH)
    assert response.status_code == 200


def _padded_json(size: int) -> bytes:
    """A valid /predict body of exactly ``size`` bytes (a padding string)."""
    head = json.dumps({"tasks": [{"id": 1, "data": {"image": "/x.png"}}], "pad": ""})
    body = head[:-2].encode()
    return body + b" " * (size - len(body) - 2) + b'"}'


def _chunked(body: bytes, tail: bytes = b"") -> Iterator[bytes]:
    """``body`` then ``tail`` as a generator: requests sends it chunked,
    without Content-Length."""
    for start in range(0, len(body), SEND_CHUNK_BYTES):
        yield body[start : start + SEND_CHUNK_BYTES]
    if tail:
        yield tail


def test_a_chunked_body_over_the_limit_is_413_not_cut_and_parsed(backend):
    """Without Content-Length nothing says the size up front: the body is
    read up to the limit, and one byte more is a 413, never a truncated
    prefix parsed as the request (the old backend answered 200)."""
    body = _padded_json(MAX_BODY_BYTES)
    headers = {"Content-Type": "application/json"}
    over = backend.post(
        "/predict", data=_chunked(body, b"GARBAGE" * 1000), headers=headers, auth=AUTH
    )
    assert over.status_code == 413, over.text[:200]
    assert str(MAX_BODY_BYTES) in over.json()["error"]
    exact = backend.post("/predict", data=_chunked(body), headers=headers, auth=AUTH)
    assert exact.status_code == 200, exact.text[:200]
    assert len(exact.json()["results"]) == 1


def test_a_small_chunked_body_is_served_and_needs_credentials(backend):
    body = json.dumps({"tasks": [{"id": 1, "data": {"image": "/data/upload/1/a.png"}}]})
    headers = {"Content-Type": "application/json"}
    refused = backend.post("/predict", data=_chunked(body.encode()), headers=headers)
    assert refused.status_code == 401
    served = backend.post(
        "/predict", data=_chunked(body.encode()), headers=headers, auth=AUTH
    )
    assert served.status_code == 200, served.text[:200]
    assert len(served.json()["results"]) == 1
