"""Basic auth and webhook token checks (the Flask wiring is in test_app.py)."""

from __future__ import annotations

import base64

from backend.auth import AuthConfig, parse_basic_header


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_parse_basic_header() -> None:
    assert parse_basic_header(basic("ann", "s:e:c")) == ("ann", "s:e:c")
    assert parse_basic_header(None) is None
    assert parse_basic_header("Bearer abc") is None
    assert parse_basic_header("Basic !!!not-base64") is None
    no_colon = "Basic " + base64.b64encode(b"nocolon").decode()
    assert parse_basic_header(no_colon) is None


def test_basic_auth_off_when_unset() -> None:
    auth = AuthConfig()
    assert not auth.basic_enabled
    assert auth.check_basic(None)


def test_basic_auth_requires_both_parts() -> None:
    auth = AuthConfig(user="ls", password="pw")
    assert auth.check_basic(basic("ls", "pw"))
    assert not auth.check_basic(basic("ls", "wrong"))
    assert not auth.check_basic(basic("other", "pw"))
    assert not auth.check_basic(None)
    assert not auth.check_basic("Basic")


def test_webhook_token() -> None:
    assert AuthConfig().check_webhook(None)
    auth = AuthConfig(webhook_token="s3cret")
    assert auth.check_webhook("s3cret")
    assert not auth.check_webhook("s3cre")
    assert not auth.check_webhook(None)
