"""The Label Studio token goes only to LABEL_STUDIO_URL, whatever a task names.

A real ``rexlabel serve`` on loopback with FakeChat as the model, a Listener as
Label Studio (it holds the token's images) and a Listener as the attacker. A
task's image URL tries to reach the attacker through parser differences (a
backslash before ``@``, user-info), through a redirect from an allowed host or
from Label Studio, or through an allowed host's other ports. The attacker must
see no credential (and, except a plain redirect Label Studio itself sends, no
request at all), and the reply names what was refused.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.conftest import (
    BASIC_AUTH,
    BOX_CONFIG,
    LEGACY_TOKEN,
    FakeChat,
    Listener,
    Served,
    basic_auth_env,
    png_bytes,
    serve,
)


def _host(listener: Listener) -> str:
    return listener.url.removeprefix("http://")


def _redirect_to(location: str):
    def reply(_request):
        return 302, {"Location": location}, b""

    return reply


def _predict(served: Served, *images: str) -> dict[int, str]:
    """``{task id: error}`` of a /predict of one task per image (ids from 1)."""
    tasks = [{"id": i, "data": {"image": url}} for i, url in enumerate(images, 1)]
    reply = served.post(
        "/predict", {"tasks": tasks, "label_config": BOX_CONFIG}, auth=BASIC_AUTH
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert len(body["results"]) == len(images)
    return {item["task"]: item["error"] for item in body.get("errors", [])}


@pytest.fixture
def world(tmp_path) -> Iterator[tuple[Listener, Listener, Listener, Served]]:
    """(Label Studio, attacker, an allowed image host, the backend)."""
    with (
        FakeChat() as chat,
        Listener() as ls,
        Listener() as attacker,
        Listener() as allowed,
    ):
        env = {
            "REXLABEL_ENGINE": "openai",
            "REXLABEL_OPENAI_URL": chat.api_url,
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": LEGACY_TOKEN,
            "REXLABEL_ALLOWED_HOSTS": f"{_host(allowed)}, localhost",
            **basic_auth_env(),
        }
        with serve(tmp_path, env) as served:
            yield ls, attacker, allowed, served


def test_urls_that_parsers_read_differently_reach_nobody(world):
    ls, attacker, _allowed, served = world
    ls_host, evil = _host(ls), _host(attacker)
    errors = _predict(
        served,
        f"http://{evil}\\@{ls_host}/data/upload/1/x.png",
        f"http://{evil}/\\@{ls_host}/data/upload/1/x.png",
        f"http://{ls_host}@{evil}/data/upload/1/x.png",
        f"http://user:{LEGACY_TOKEN}@{ls_host}/data/upload/1/x.png",
        f"http://{evil}\t/data/upload/1/x.png",
        f"http://{evil.replace('127.0.0.1', '2130706433')}/x.png",
        f"{ls.url}/data/upload/1/ok.png",
    )
    assert attacker.seen == []
    assert "backslash" in errors[1] and "backslash" in errors[2]
    assert "user-info" in errors[3] and "user-info" in errors[4]
    assert "control character" in errors[5]
    assert "dotted IPv4" in errors[6]
    assert 7 not in errors  # Label Studio's own URL still works, with the token
    assert [s.path for s in ls.authorized()] == ["/data/upload/1/ok.png"]


def test_redirects_never_carry_the_token_off_label_studio(world):
    ls, attacker, allowed, served = world
    evil = _host(attacker)

    def reply(request):
        if request.path.endswith("/trick.png"):
            return _redirect_to(f"http://{evil}\\@{_host(ls)}/data/upload/1/x.png")(
                request
            )
        if request.path.endswith("/presigned.png"):
            return _redirect_to(f"{attacker.url}/bucket/x.png")(request)
        return 200, {"Content-Type": "image/png"}, png_bytes()

    ls.reply = reply
    allowed.reply = _redirect_to(f"{attacker.url}/x.png")
    errors = _predict(
        served,
        "/data/upload/1/trick.png",
        "/data/upload/1/presigned.png",
        f"{allowed.url}/a.png",
    )
    # Label Studio's redirect (as to a presigned cloud URL) is followed only to
    # public or named hosts (an open redirect must not reach an internal
    # port); the backslash trick and the allowed host's redirect reach nobody.
    assert attacker.seen == []
    assert "backslash" in errors[1]
    assert 2 in errors
    assert "non-public address" in served.log
    assert "are not allowed" in errors[3]
    assert f"downloads from {evil} are not allowed" in served.log  # the reply
    # may hide internal addresses; the log says where the request would go


def test_an_allowed_host_allows_its_standard_port_only(world):
    _ls, attacker, allowed, served = world
    internal = attacker.url.replace("127.0.0.1", "localhost")
    errors = _predict(served, f"{internal}/x.png", f"{allowed.url}/ok.png")
    assert attacker.seen == []
    assert "are not allowed" in errors[1]
    assert f"downloads from localhost:{attacker.port} are not allowed" in served.log
    assert 2 not in errors and len(allowed.seen) == 1


def test_the_log_names_where_a_refused_url_pointed(world):
    _ls, attacker, _allowed, served = world
    _predict(served, f"http://{_host(attacker)}\\@example.com/x.png")
    refused = [line for line in served.log.splitlines() if "backslash" in line]
    assert refused and all(_host(attacker) in line for line in refused)
    assert LEGACY_TOKEN not in served.log
