"""Who may call the backend.

Label Studio sends HTTP basic auth on every ML-backend call when the model is
added with ``auth_method=BASIC_AUTH``, so every route checks
``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` -- except ``/webhook``: Label Studio
posts webhooks without credentials, so requiring them there would silently
lose every event. Protect ``/webhook`` with a shared secret instead: set
``REXLABEL_WEBHOOK_TOKEN`` and register the webhook URL as
``http://backend:9090/webhook?token=<secret>`` in Label Studio (Project ->
Settings -> Webhooks; the one Label Studio creates by itself has no token, so
edit it). Comparisons are constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

WEBHOOK_TOKEN_PARAM = "token"
"""Query parameter carrying the webhook secret (Label Studio webhooks can only
be given a URL and static headers; a URL works in every version)."""

WEBHOOK_TOKEN_HEADER = "X-Rexlabel-Webhook-Token"
"""Header alternative to the query parameter (Label Studio's webhook form can
add static headers)."""

REALM = "rexlabel"
"""Realm named in the ``WWW-Authenticate`` challenge."""


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

    @property
    def basic_enabled(self) -> bool:
        return bool(self.user or self.password)

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

    def check_webhook(self, token: str | None) -> bool:
        """True when no webhook token is configured or ``token`` equals it."""
        if not self.webhook_token:
            return True
        return token is not None and _same(token, self.webhook_token)
