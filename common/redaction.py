"""Secrets and image bytes out of log text: tokens, credentials, base64 payloads.

:func:`redact_text` scrubs a string, :func:`redact` any value (a string under a
secret-looking key is replaced whole); :func:`configured_secrets` lists the
secret settings' values to scrub verbatim. The log handler's filter
(``common.logs.RedactionFilter``) applies them to every record; a message that
names a URL (a Redis URL with its password) uses them directly.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from common import settings

REDACTED = "***"
"""What a secret is replaced with."""
LONG_BASE64_MIN_CHARS = 200
"""Base64 runs at least this long are image (or other binary) payloads; shorter
ones are ids and hashes worth keeping (a SHA-256 in hex is 64 characters)."""
MIN_SECRET_VALUE_CHARS = 6
"""Configured secrets shorter than this are not searched for in log text: short
values ("EMPTY", "x") would blank out ordinary words."""

# Keys whose string values are secrets wherever they appear (dicts, extras, k=v).
_SECRET_KEY = re.compile(
    r"(?:^|[_-])(?:token|access_token|refresh_token|refresh|access|password|passwd"
    r"|secret|api_?key|authorization|cookie|set-cookie)$",
    re.IGNORECASE,
)

_PATTERNS: tuple[tuple[re.Pattern[str], Any], ...] = (
    # data URLs: data:image/png;base64,....
    (
        re.compile(r"data:([\w.+-]+/[\w.+-]+);base64,[A-Za-z0-9+/=]*"),
        lambda m: f"data:{m.group(1)};base64,<redacted>",
    ),
    # JWTs (access tokens, personal access tokens): header.payload.signature
    (
        re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
        REDACTED,
    ),
    # Authorization header values: Bearer/Token/Basic <credential>
    (
        re.compile(
            r"\b(Bearer|Basic|Token)(\s+)(?=[A-Za-z0-9._~+/=-]*\d)"
            r"[A-Za-z0-9._~+/=-]{12,}"
        ),
        lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}",
    ),
    # key=value / "key": "value" with a secret-looking key
    (
        re.compile(
            r"(\b(?:access_token|refresh_token|token|api_?key|password|passwd|secret"
            r"|authorization)[\"']?\s*[=:]\s*[\"']?)"
            r"(?!\*\*\*)((?:(?:Bearer|Basic|Token)\s+)?[^&\s\"',;}]+)",
            re.IGNORECASE,
        ),
        lambda m: m.group(1) + REDACTED,
    ),
    # passwords in URLs: scheme://user:password@host (not host:port\@...: a
    # backslash ends the host for HTTP clients, and the log must say where)
    (
        re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\\\s:@]*:)([^@\s/\\]+)(@)", re.I),
        lambda m: m.group(1) + REDACTED + m.group(3),
    ),
    # long base64 runs (raw image bytes, embedded files)
    (
        re.compile(rf"[A-Za-z0-9+/]{{{LONG_BASE64_MIN_CHARS},}}={{0,2}}"),
        lambda m: f"<redacted {len(m.group(0))} base64 chars>",
    ),
)


def configured_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of the secret settings (and URL passwords in them) to scrub verbatim."""
    values: list[str] = []
    for item in settings.SETTINGS:
        if not item.secret:
            continue
        raw = item.raw(os.environ if environ is None else environ)
        if not raw or raw.strip() == str(item.default):
            continue
        raw = raw.strip()
        if "://" in raw:
            password = urlsplit(raw).password
            if password:
                values.append(password)
            continue
        values.append(raw)
    return [v for v in values if len(v) >= MIN_SECRET_VALUE_CHARS]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with tokens, credentials and base64 payloads replaced."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact(value: Any, secrets: Iterable[str] = (), key: str = "") -> Any:
    """A copy of ``value`` (str, dict, list, ...) safe to log.

    Strings under a secret-looking key (``token``, ``api_key``,
    ``Authorization``, ...) are replaced whole; other strings go through
    :func:`redact_text`. Numbers, booleans and None pass unchanged.
    """
    secrets = tuple(secrets)
    if isinstance(value, str):
        if key and _SECRET_KEY.search(key) and value:
            return REDACTED
        return redact_text(value, secrets)
    if isinstance(value, Mapping):
        return {str(k): redact(v, secrets, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [redact(v, secrets) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact_text(str(value), secrets)
