"""What a client may read in an error: no local paths, no internal URLs.

Errors and warnings in a ``/predict`` reply come from the worker, the image
loader and Label Studio's API, and may quote a file path on the worker or a
URL of an internal service (a redirect target, ``LABEL_STUDIO_URL``, the model
server). Those belong in the log, which keeps the full text; the reply keeps
the message with each such path or URL replaced by a placeholder.

What stays is only what the caller itself sent and the backend read: the
image references the plan took from the tasks (``ImageJob.image``; never any
other field of ``data``, which a caller fills at will), each kept whole and
only where it stands alone (between spaces, quotes or brackets), with its
``host:port``. A reference too short or not a URL or path keeps nothing: a
task holding ``":"`` or ``"/"`` must not shield an internal URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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

MIN_REFERENCE_CHARS = 8
"""Shortest image reference kept verbatim: ``/a/b.png`` or ``http://h/``; a
shorter string is a fragment that would match inside other messages."""

_BEFORE_REFERENCE = r"(?<![^\s'\"`<>(\[{=,;])"
"""A kept reference starts the text or follows a space, quote or bracket, so
it never stands for the tail of a longer URL or path."""

_AFTER_REFERENCE = r"(?=$|[\s'\"`<>)\]},;]|[.:!?](?:$|[\s'\"`]))"
"""A kept reference ends the text or meets a space, quote, bracket or a
closing punctuation mark, so it never stands for the head of a longer one."""

_URL_REFERENCE = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#]+\S*|file://(?:localhost)?/[^\s/]+/\S*"
)
"""An image URL: ``scheme://host...`` without spaces, or a ``file://`` URL
of two path parts or more (the task's own reference, refused over HTTP)."""

_PATH_REFERENCE = re.compile(r"(?:~|[A-Za-z]:)?[/\\][^\x00-\x1f/\\]+[/\\][^\x00-\x1f]*")
"""An image path: absolute or home, of two parts or more (``/data/upload/1/a``)."""

REPLY_TEXT_FIELDS = (
    ("errors", "error"),
    ("warnings", "warning"),
    ("results", "error"),
)
"""``(list in the reply, text field of its items)`` that carry messages."""


def scrub_text(text: str, allowed: Iterable[str] = ()) -> str:
    """``text`` with URLs, local paths and ``host:port`` replaced, except the
    ``allowed`` strings (see :func:`reference_forms`), kept verbatim where
    they stand alone (never as part of a longer URL or path)."""
    refs = sorted(set(allowed), key=len, reverse=True)
    kept: list[str] = []
    if refs:
        alone = re.compile(
            _BEFORE_REFERENCE
            + "(?:"
            + "|".join(map(re.escape, refs))
            + ")"
            + _AFTER_REFERENCE
        )

        def keep(found: re.Match[str]) -> str:
            kept.append(found.group(0))
            return f"\x00{len(kept) - 1}\x00"

        text = alone.sub(keep, text.replace("\x00", ""))
    text = URL_PATTERN.sub(URL_PLACEHOLDER, text)
    text = PATH_PATTERN.sub(PATH_PLACEHOLDER, text)
    text = HOST_PORT_PATTERN.sub(HOST_PLACEHOLDER, text)
    return re.sub(r"\x00(\d+)\x00", lambda m: kept[int(m.group(1))], text)


def is_reference(value: str) -> bool:
    """True for a whole image reference: a URL with a host, or an absolute or
    home path of two parts or more, of :data:`MIN_REFERENCE_CHARS` or more."""
    return len(value) >= MIN_REFERENCE_CHARS and bool(
        _URL_REFERENCE.fullmatch(value) or _PATH_REFERENCE.fullmatch(value)
    )


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


def reference_forms(images: Iterable[str]) -> set[str]:
    """What a reply may quote of the image references the plan used: each
    that :func:`is_reference` accepts, and the ``host:port`` of the URLs."""
    found: set[str] = set()
    for ref in images:
        if isinstance(ref, str) and is_reference(ref):
            found.add(ref)
            found |= _hosts_of(ref)
    return found


def scrub_reply(reply: dict[str, Any], images: Iterable[str] = ()) -> dict[str, Any]:
    """``reply`` (a /predict answer) with its messages scrubbed in place:
    ``errors[*].error``, ``warnings[*].warning``, ``results[*].error``,
    ``notes`` and ``message``. ``images``: the image references the plan read
    from the request's tasks (``ImageJob.image``), the only ones quoted."""
    allowed = reference_forms(images)
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
