"""Basic auth and webhook token checks (the Flask wiring is in test_app.py)."""

from __future__ import annotations

import base64

import pytest

from backend.auth import (
    AuthConfig,
    bind_host,
    credentials_problem,
    exposure_problem,
    is_loopback,
    parse_basic_header,
    startup_problem,
)


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


def test_webhook_accepts_basic_auth_when_it_is_on() -> None:
    auth = AuthConfig(user="ls", password="pw")
    assert not auth.check_webhook(None)
    assert not auth.check_webhook(None, basic("ls", "nope"))
    assert auth.check_webhook(None, basic("ls", "pw"))
    both = AuthConfig(user="ls", password="pw", webhook_token="s3cret")
    assert both.check_webhook("s3cret") and both.check_webhook("", basic("ls", "pw"))
    assert not both.check_webhook("wrong", basic("ls", "wrong"))


@pytest.mark.parametrize(
    ("bind", "host"),
    [
        ("0.0.0.0:9090", "0.0.0.0"),
        ("127.0.0.1:9090", "127.0.0.1"),
        ("[::1]:9090", "::1"),
        ("::", "::"),
        ("localhost", "localhost"),
        (":9090", ""),
        ("unix:/run/rexlabel.sock", None),
    ],
)
def test_bind_host(bind: str, host: str | None) -> None:
    assert bind_host(bind) == host


def test_loopback_hosts() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "", "10.0.0.5", "example.com", "127.0.0.1.nip.io"):
        assert not is_loopback(host), host


def test_no_credentials_beyond_loopback_is_refused_naming_the_variables() -> None:
    problem = exposure_problem(AuthConfig(), ["0.0.0.0:9090"])
    assert problem is not None and "0.0.0.0:9090" in problem
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "REXLABEL_WEBHOOK_TOKEN"):
        assert name in problem
    # a token alone leaves /predict open; half a basic-auth pair is no pair
    assert exposure_problem(AuthConfig(webhook_token="t"), ["0.0.0.0:1"])
    assert exposure_problem(AuthConfig(user="ls"), [":9090"])
    assert exposure_problem(AuthConfig(), ["127.0.0.1:1", "10.0.0.5:1"])
    assert exposure_problem(AuthConfig(user="ls", password="pw"), ["0.0.0.0:1"]) is None
    assert exposure_problem(AuthConfig(), ["127.0.0.1:9090", "[::1]:9090"]) is None
    assert exposure_problem(AuthConfig(), ["unix:/run/rexlabel.sock"]) is None


def test_without_credentials_only_loopback_hosts_are_served() -> None:
    open_backend = AuthConfig()
    for host in ("127.0.0.1:9090", "localhost:9090", "localhost", "[::1]:9090"):
        assert open_backend.host_allowed(host), host
    for host in ("evil.example:9090", "evil.example", "10.0.0.5:9090", ""):
        assert not open_backend.host_allowed(host), host
    assert AuthConfig(user="ls", password="pw").host_allowed("ml.example:9090")


def test_only_basic_auth_lifts_the_host_check() -> None:
    """The webhook token guards /webhook alone, and half a basic-auth pair
    guards nothing: /predict and /setup stay open, so only loopback names
    are served (a DNS-rebinding page sends its own domain as Host)."""
    for partial in (
        AuthConfig(webhook_token="t"),
        AuthConfig(user="ls"),
        AuthConfig(password="pw"),
        AuthConfig(user="ls", webhook_token="t"),
    ):
        assert not partial.host_allowed("attacker.example:9090"), partial
        assert partial.host_allowed("127.0.0.1:9090"), partial


@pytest.mark.parametrize(
    ("auth", "given", "missing"),
    [
        (AuthConfig(user="ls"), "BASIC_AUTH_USER", "BASIC_AUTH_PASS"),
        (AuthConfig(password="pw"), "BASIC_AUTH_PASS", "BASIC_AUTH_USER"),
        (
            AuthConfig(user="ls", webhook_token="t"),
            "BASIC_AUTH_USER",
            "BASIC_AUTH_PASS",
        ),
    ],
)
def test_half_a_basic_auth_pair_is_refused_on_any_bind(auth, given, missing) -> None:
    problem = credentials_problem(auth)
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"{given} is set but {missing} is empty")
    for binds in (["127.0.0.1:9090"], ["unix:/run/rexlabel.sock"], ["0.0.0.0:1"]):
        assert startup_problem(auth, binds) == problem


def test_whole_pairs_or_none_pass_the_credentials_check() -> None:
    for auth in (AuthConfig(), AuthConfig(webhook_token="t"), AuthConfig("ls", "pw")):
        assert credentials_problem(auth) is None
    assert startup_problem(AuthConfig(), ["127.0.0.1:9090"]) is None
    assert startup_problem(AuthConfig(), ["0.0.0.0:9090"]) == exposure_problem(
        AuthConfig(), ["0.0.0.0:9090"]
    )


@pytest.mark.parametrize("half", [{"BASIC_AUTH_USER": "ls"}, {"BASIC_AUTH_PASS": "pw"}])
def test_create_app_refuses_half_a_basic_auth_pair(half) -> None:
    from backend.app import create_app
    from backend.queue import InProcessRunner
    from common.settings import SettingsError

    with pytest.raises(SettingsError) as refused:
        create_app(half, runner=InProcessRunner(function=lambda payload: {}))
    assert "BASIC_AUTH_USER" in str(refused.value)
    assert "BASIC_AUTH_PASS" in str(refused.value)
