"""Request bodies: the size limit, bodies sent without Content-Length, and
the JSON object every POST route takes."""

from __future__ import annotations

import io
from typing import Any

from flask import current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

MAX_BODY_BYTES = 32 * 1024 * 1024
"""Largest request body (Flask's MAX_CONTENT_LENGTH; a larger one gets 413
before a byte of it is read, a chunked one once the limit is passed). A task
in Label Studio's /predict or TASKS_CREATED is 0.5-1 KB of JSON (the task
serializer's fields plus the data URLs), so 32 MiB holds a "Retrieve
predictions" or an import of ~30,000 tasks; bigger selections go through
``rexlabel prelabel``."""

UNSIZED_READ_BYTES = 1024 * 1024
"""Bytes per read while buffering a body sent without Content-Length: few
reads for a large body, little memory beyond the body itself."""


class BadRequest(ValueError):
    """The request body is unusable; answered 400 with the message."""


def json_body() -> dict[str, Any]:
    """The request's JSON object; BadRequest when it is not one. A body nested
    deeper than Python's recursion limit is a bad request too, not a 500."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadRequest("the request body's JSON is nested too deeply") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    return body


def body_too_large() -> str:
    """The 413 message, with the limit this app enforces."""
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or MAX_BODY_BYTES
    return (
        f"the request body exceeds the capacity limit of {limit} bytes; "
        "send fewer tasks per request (or use `rexlabel prelabel`)"
    )


def buffer_unsized_body() -> None:
    """Read a body sent without Content-Length (``Transfer-Encoding:
    chunked``) now, up to MAX_CONTENT_LENGTH + 1 bytes: over the limit it is
    answered 413 (werkzeug alone cuts such a body at the limit without a word
    and the prefix would be parsed); within it, the request reads it from
    memory afterwards. Only after the credentials passed; a server that does
    not frame such bodies (no ``wsgi.input_terminated``) gives an empty one."""
    environ = request.environ
    if request.content_length is not None or not environ.get("wsgi.input_terminated"):
        return
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or MAX_BODY_BYTES
    stream = environ["wsgi.input"]
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = stream.read(min(UNSIZED_READ_BYTES, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    if size > limit:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(b"".join(parts))
