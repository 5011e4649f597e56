"""Who may call the backend.

Label Studio sends HTTP basic auth on every ML-backend call when the model is
added with ``auth_method=BASIC_AUTH``, so every route checks
``BASIC_AUTH_USER``/``BASIC_AUTH_PASS``. ``/webhook`` makes the backend act
(``TASKS_CREATED`` starts pre-annotation that posts to Label Studio with its
token), so it needs credentials too: the same basic auth, or the shared secret
``REXLABEL_WEBHOOK_TOKEN``. Label Studio posts the webhook it creates by itself
without credentials, so either register the webhook URL as
``http://backend:9090/webhook?token=<secret>`` (Project -> Settings ->
Webhooks), or give that webhook an ``Authorization: Basic ...`` header there.
Without basic auth (no credentials, or the webhook token alone) every route but
``/webhook`` is open: the backend then refuses to listen on anything but
loopback (:func:`exposure_problem`) and serves only loopback Host names
(:meth:`AuthConfig.host_allowed`). Half a basic-auth pair refuses to start on
any bind (:func:`credentials_problem`). Comparisons are constant-time
(``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

WEBHOOK_TOKEN_PARAM = "token"
"""Query parameter carrying the webhook secret (Label Studio webhooks can only
be given a URL and static headers; a URL works in every version)."""

WEBHOOK_TOKEN_HEADER = "X-Rexlabel-Webhook-Token"
"""Header alternative to the query parameter (Label Studio's webhook form can
add static headers)."""

CREDENTIAL_VARIABLES = ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "REXLABEL_WEBHOOK_TOKEN")
"""What to set before listening beyond loopback (named in the refusal)."""


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def parse_basic_header(header: str | None) -> tuple[str, str] | None:
    """``"Basic dXNlcjpwYXNz"`` -> ``("user", "pass")``; None when absent or
    malformed."""
    if not header:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


@dataclass(frozen=True)
class AuthConfig:
    """Credentials the backend requires; empty strings switch a check off."""

    user: str = ""
    password: str = ""
    webhook_token: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthConfig:
        """The credentials in ``environ`` (default ``os.environ``)."""
        from common import settings

        return cls(
            user=settings.get("BASIC_AUTH_USER", environ),
            password=settings.get("BASIC_AUTH_PASS", environ),
            webhook_token=settings.get("REXLABEL_WEBHOOK_TOKEN", environ),
        )

    @property
    def basic_enabled(self) -> bool:
        return bool(self.user or self.password)

    def host_allowed(self, host: str) -> bool:
        """True when a request to ``host`` (its Host header) may be served:
        always when basic auth closes /predict and /setup; otherwise (no
        credentials, or only the webhook token, which guards /webhook alone)
        only a loopback name, so a web page that rebinds its own domain to
        127.0.0.1 (DNS rebinding) cannot drive the open routes."""
        if self.protects_predict:
            return True
        name = bind_host(host)
        return name is not None and is_loopback(name)

    @property
    def protects_predict(self) -> bool:
        """Both basic-auth parts are set: /predict and /setup are closed."""
        return bool(self.user and self.password)

    def check_basic(self, header: str | None) -> bool:
        """True when basic auth is off or ``header`` carries the right pair.

        Both parts are always compared, so the time taken does not say which
        one was wrong.
        """
        if not self.basic_enabled:
            return True
        pair = parse_basic_header(header)
        if pair is None:
            return False
        user_ok = _same(pair[0], self.user)
        pass_ok = _same(pair[1], self.password)
        return user_ok and pass_ok

    def check_webhook(
        self, token: str | None, authorization: str | None = None
    ) -> bool:
        """True when ``/webhook`` may act on this request: the webhook token
        matches, or basic auth is on and ``authorization`` carries the right
        pair, or no credentials are configured at all (loopback only)."""
        if not self.webhook_token and not self.basic_enabled:
            return True
        token_ok = bool(self.webhook_token) and (
            token is not None and _same(token, self.webhook_token)
        )
        basic_ok = self.basic_enabled and self.check_basic(authorization)
        return token_ok or basic_ok


def bind_host(bind: str) -> str | None:
    """The host part of a listen address (``"0.0.0.0:9090"``, ``"[::1]:9090"``,
    ``"localhost"``); None for a Unix socket (``"unix:/run/x.sock"``), which
    no one on the network reaches directly."""
    bind = bind.strip()
    if bind.startswith("unix:"):
        return None
    if bind.startswith("["):
        return bind[1:].split("]", 1)[0]
    if bind.count(":") == 1:
        return bind.rsplit(":", 1)[0]
    return bind


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials_problem(auth: AuthConfig) -> str | None:
    """Why ``auth`` is unusable on any bind, or None: half a basic-auth pair
    (a user without a password accepts ``user:``, a password without a user
    ``:password``), which looks set but leaves /predict and /setup open to
    whoever guesses the other half being empty."""
    if auth.basic_enabled and not auth.protects_predict:
        user, password, _token = CREDENTIAL_VARIABLES
        given, missing = (user, password) if auth.user else (password, user)
        return (
            f"{given} is set but {missing} is empty: basic auth needs both "
            f"{user} and {password} (or neither, listening on loopback only)"
        )
    return None


def startup_problem(auth: AuthConfig, binds: Iterable[str]) -> str | None:
    """Why the backend must not start with ``auth`` on ``binds``, or None:
    :func:`credentials_problem` on any bind, then :func:`exposure_problem`."""
    return credentials_problem(auth) or exposure_problem(auth, binds)


def exposure_problem(auth: AuthConfig, binds: Iterable[str]) -> str | None:
    """Why the backend must not listen on ``binds`` with ``auth``, or None.

    Without basic auth every route is open to whoever reaches the port, and
    ``/predict``/``/webhook`` make the backend fetch images and post to Label
    Studio with its token; that is acceptable on loopback only.
    """
    if auth.protects_predict:
        return None
    exposed = [
        b for b in binds if (h := bind_host(b)) is not None and not is_loopback(h)
    ]
    if not exposed:
        return None
    user, password, token = CREDENTIAL_VARIABLES
    return (
        f"listening on {', '.join(exposed)} needs credentials: set {user} and "
        f"{password} (Label Studio: Connect model -> Basic auth) and {token} "
        "(its webhook URL: /webhook?token=...), each e.g. from `openssl rand -hex "
        "32`, or listen on loopback only (REXLABEL_HOST=127.0.0.1)"
    )
