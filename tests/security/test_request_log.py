"""What an unauthenticated request leaves behind: one log line, no new series.

A real ``rexlabel serve`` on loopback with basic auth on. A request whose path
carries an encoded line break (``/x%0a<date> WARNING ...``) writes one log line,
not a forged second one; requests with made-up methods and paths add no
Prometheus series (the method and route labels come from fixed sets).
"""

from __future__ import annotations

import socket
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.security.conftest import (
    BASIC_AUTH,
    FakeChat,
    Served,
    basic_auth_env,
    serve,
)

FORGED = "2026-12-06 04:00:00,000 WARNING backend.app: FORGED admin login ok"
ENCODED_BREAKS = ["%0a", "%0d", "%0d%0a", "%e2%80%a8", "%c2%85", "%1b"]
"""A line feed, a carriage return, both, U+2028, NEL (U+0085) and ESC, as a
path carries them."""
NOISE_REQUESTS = 200
"""Requests with random methods and paths: each would add a series before."""


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    with FakeChat() as chat:
        env = {
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
            **basic_auth_env(),
        }
        with serve(tmp_path_factory.mktemp("serve"), env) as served:
            yield served


def _raw(served: Served, request_line: str) -> bytes:
    """Send one request as written (no client normalises the method or path);
    the first bytes of the reply."""
    host = served.url.removeprefix("http://")
    name, port = host.rsplit(":", 1)
    head = f"{request_line}\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((name, int(port)), timeout=30) as sock:
        sock.sendall(head.encode())
        return sock.recv(64)


@pytest.mark.parametrize("encoded", ENCODED_BREAKS)
def test_an_encoded_line_break_in_the_path_writes_one_line(backend, encoded):
    marker = uuid.uuid4().hex
    path = f"/{marker}{encoded}{FORGED.replace(' ', '%20')}"
    assert _raw(backend, f"GET {path} HTTP/1.1").startswith(b"HTTP/1.1 401")
    # the app's request line is written before the reply goes out
    lines = [line for line in backend.log.splitlines() if marker in line]
    (request_line,) = [line for line in lines if "rexlabel.requests" in line]
    assert "FORGED" in request_line  # logged, escaped, on its own line
    assert not [line for line in backend.log.splitlines() if line.startswith(FORGED)]
    assert "\x1b" not in backend.log  # nor a raw terminal escape anywhere


def _series(served: Served) -> set[tuple]:
    """Label sets of the request metrics /metrics shows."""
    text = served.get("/metrics", auth=BASIC_AUTH).text
    return {
        (family.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        if family.name.startswith("rexlabel_request")
        for sample in family.samples
    }


def test_random_methods_and_paths_add_no_series(backend):
    def noise() -> None:
        token = uuid.uuid4().hex.upper()
        _raw(backend, f"{token[:12]} /predict HTTP/1.1")
        _raw(backend, f"{token[12:24]} /{token} HTTP/1.1")
        _raw(backend, f"GET /no/{token} HTTP/1.1")

    noise()  # every kind of reply once (401s, with and without a route)
    before = _series(backend)
    for _ in range(NOISE_REQUESTS // 3):
        noise()
    added = _series(backend) - before
    # the scrapes themselves are GET /metrics 200: already counted once above
    assert not [s for s in added if dict(s[1]).get("endpoint") != "/metrics"], added
