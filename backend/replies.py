"""What a client may read in an error: no local paths, no internal URLs.

Errors and warnings in a ``/predict`` reply come from the worker, the image
loader and Label Studio's API, and may quote a file path on the worker or a
URL of an internal service (a redirect target, ``LABEL_STUDIO_URL``, the model
server). Those belong in the log, which keeps the full text; the reply keeps
the message with each such path or URL replaced by a placeholder. A task's own
image references (the strings in its ``data``, and their ``host:port``) stay:
the caller sent them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

URL_PLACEHOLDER = "<url>"
"""Stands for a URL in a reply (the log has it)."""

PATH_PLACEHOLDER = "<path>"
"""Stands for a local file path in a reply (the log has it)."""

HOST_PLACEHOLDER = "<host>"
"""Stands for a ``host:port`` in a reply (the log has it)."""

URL_PATTERN = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
"""Any ``scheme://...`` up to whitespace or a quote."""

_PATH_PART = r"[^\s'\"<>:,;()\[\]{}]*"
PATH_PATTERN = re.compile(
    rf"(?<![\w.:/\\~-])(?:~|[A-Za-z]:)?[/\\]{_PATH_PART}[/\\]{_PATH_PART}"
)
"""An absolute or home path with at least two parts (``/srv/x``, ``~/a/b``,
``C:\\data\\x``); a lone ``/`` segment (``/predict``) or ``3/4`` is left."""

HOST_PORT_PATTERN = re.compile(
    r"(?<![\w.-])(?:(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}"
    r"|[A-Za-z0-9-]*[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*:\d{2,5})\b"
)
"""A ``host:port`` without a scheme (``10.0.0.5:8080``, ``redis:6379``,
``[::1]:9090``): an IPv4 address or a bracketed IPv6 one with any port, or a
name with a letter and a port of two digits or more, so ``3:45`` and a label
like ``dog:2`` stay."""

DEFAULT_PORTS = {"http": 80, "https": 443}
"""Ports an error may add to a task's URL (``host`` -> ``host:80``)."""

REPLY_TEXT_FIELDS = (
    ("errors", "error"),
    ("warnings", "warning"),
    ("results", "error"),
)
"""``(list in the reply, text field of its items)`` that carry messages."""


def scrub_text(text: str, allowed: Iterable[str] = ()) -> str:
    """``text`` with URLs and local paths replaced, except the ``allowed``
    strings (a task's own references), which are kept verbatim."""
    kept: dict[str, str] = {}
    for index, ref in enumerate(sorted(set(allowed), key=len, reverse=True)):
        if ref and ref in text:
            token = f"\x00{index}\x00"
            text = text.replace(ref, token)
            kept[token] = ref
    text = URL_PATTERN.sub(URL_PLACEHOLDER, text)
    text = PATH_PATTERN.sub(PATH_PLACEHOLDER, text)
    text = HOST_PORT_PATTERN.sub(HOST_PLACEHOLDER, text)
    for token, ref in kept.items():
        text = text.replace(token, ref)
    return text


def _hosts_of(ref: str) -> set[str]:
    """``host:port`` forms of a URL reference (with its default port too)."""
    try:
        parts = urlsplit(ref)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return set()
    if not parts.netloc or not parts.hostname:
        return set()
    found = {parts.netloc}
    if port:
        found.add(f"{parts.hostname}:{port}")
    return found


def task_references(tasks: Any) -> set[str]:
    """Every string in the tasks' ``data`` (nested ones too), and the
    ``host:port`` of those that are URLs: what the caller itself sent and may
    see quoted back."""
    found: set[str] = set()
    stack: list[Any] = [t.get("data") for t in tasks or [] if isinstance(t, Mapping)]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.add(item)
            found |= _hosts_of(item)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def scrub_reply(reply: dict[str, Any], tasks: Any) -> dict[str, Any]:
    """``reply`` (a /predict answer) with its messages scrubbed in place:
    ``errors[*].error``, ``warnings[*].warning``, ``results[*].error``,
    ``notes`` and ``message``."""
    allowed = task_references(tasks)
    for list_key, text_key in REPLY_TEXT_FIELDS:
        for item in reply.get(list_key) or []:
            if isinstance(item, dict) and isinstance(item.get(text_key), str):
                item[text_key] = scrub_text(item[text_key], allowed)
    if isinstance(reply.get("notes"), list):
        reply["notes"] = [
            scrub_text(n, allowed) if isinstance(n, str) else n for n in reply["notes"]
        ]
    if isinstance(reply.get("message"), str):
        reply["message"] = scrub_text(reply["message"], allowed)
    return reply
