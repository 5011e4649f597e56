"""Logging for the backend and the worker: text or JSON lines, secrets never logged.

``configure_logging()`` sets up the root logger from ``LOG_LEVEL`` and
``LOG_FORMAT`` (``text``: human lines; ``json``: one JSON object per line). Its
handler carries a :class:`RedactionFilter`, so whatever any library logs through
it never shows an access token, an ``Authorization`` header, an API key or
password, or image bytes (``common.redaction``). Every line stays one line,
whatever a client sent (:func:`escape_controls`); :func:`printable` makes a
name from task data safe to print on a terminal.

The one line per job and per request that operators grep for is written by
``common.loglines``. No torch, no Flask here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from common import settings
from common.redaction import configured_secrets, redact, redact_text

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""Text lines: time, level, logger, message; extra fields follow as key=value."""

LINE_BREAKING = frozenset(
    [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
)
"""Code points escaped in every log line: C0 and C1 controls (newlines, tabs,
terminal escapes) and the Unicode line and paragraph separators. A client
puts them in a path, a method or a task field (``/x%0a2026-... WARNING ...``);
written raw, they would start a forged line of their own."""
_TEXT_ESCAPES = {c: ascii(chr(c))[1:-1] for c in LINE_BREAKING}
"""Text lines: the Python escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in LINE_BREAKING}
"""JSON lines: the JSON escape (``\\u2028``); json.dumps leaves C1 controls and
the separators raw, and some readers split lines on them."""

_HANDLER_NAME = "rexlabel"
JSON_LOG_ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TQDM_DISABLE": "1",
    "VLLM_CONFIGURE_LOGGING": "0",
}
"""Set with LOG_FORMAT=json, where libraries would write non-JSON lines of
their own: progress bars (model download and loading, in transformers,
huggingface_hub and vLLM) go, and vLLM's records reach our handler instead of
its own. Read when those libraries are imported, so set before the model loads."""

# Standard LogRecord attributes: everything else on a record is an extra field.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """Fields passed with ``extra=`` (everything not standard on a LogRecord)."""
    return {k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS}


class RedactionFilter(logging.Filter):
    """Rewrites each record so no secret or image payload reaches a handler.

    Attach it to a handler (handler filters see records from every logger). The
    message is formatted with its args, then scrubbed; extra fields, the
    exception text and the stack text are scrubbed too.
    """

    def __init__(self, secrets: Iterable[str] | None = None) -> None:
        super().__init__()
        self.secrets = tuple(configured_secrets() if secrets is None else secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact_text(message, self.secrets)
        record.args = None
        for name, value in extra_fields(record).items():
            setattr(record, name, redact(value, self.secrets, name))
        if record.exc_info and not record.exc_text:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = text.rstrip("\n")
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text, self.secrets)
            record.exc_info = None  # formatters must use the scrubbed text
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, self.secrets)
        return True


def escape_controls(text: str) -> str:
    """``text`` with every :data:`LINE_BREAKING` character written as its
    Python escape: one record stays one line, whatever a client sent."""
    return text.translate(_TEXT_ESCAPES)


def printable(text: str, *, json_escapes: bool = False) -> str:
    """``text`` safe to print on a terminal: every character Python does not
    call printable (ESC, BEL and the other controls, bidirectional overrides,
    line separators, format characters) written as its escape, as ``repr``
    shows it (``\\x1b``, ``\\u202e``); letters of every script are kept. For
    names from task data (labels, image references) that a command prints.
    ``json_escapes``: the JSON escape (``\\u001b``) instead, for a line of
    printed JSON that must stay valid. A newline is escaped too: one string
    prints as one line."""
    if text.isprintable():
        return text
    escape = _json_char if json_escapes else _python_char
    return "".join(c if c.isprintable() else escape(c) for c in text)


def _python_char(c: str) -> str:
    return ascii(c)[1:-1]


def _json_char(c: str) -> str:
    return json.dumps(c)[1:-1]


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name, value in extra_fields(record).items():
            entry.setdefault(name, _jsonable(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # C0 controls inside strings are JSON escapes already: the rest too
        return json.dumps(entry, ensure_ascii=False).translate(_JSON_ESCAPES)


def _text_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str) and value and not re.search(r"[\s=\"]", value):
        return escape_controls(value)
    return json.dumps(_jsonable(value), ensure_ascii=False).translate(_JSON_ESCAPES)


class TextFormatter(logging.Formatter):
    """Human lines; extra fields are appended as ``key=value``. The message
    and the fields are one line each (:func:`escape_controls`); only a
    traceback or stack after them spans lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = extra_fields(record)
        if not extras:
            return line
        head, sep, tail = line.partition("\n")
        fields = " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        return f"{head} {fields}{sep}{tail}"


def configure_logging(
    level: str | None = None,
    fmt: str | None = None,
    stream: IO[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Set up the root logger once for this process; returns its handler.

    ``level`` / ``fmt`` default to ``LOG_LEVEL`` / ``LOG_FORMAT``. Calling it
    again replaces the handler it installed before (never stacks handlers).
    """
    level = level or settings.get("LOG_LEVEL", environ)
    fmt = fmt or settings.get("LOG_FORMAT", environ)
    if fmt not in settings.setting("LOG_FORMAT").choices:
        raise settings.SettingsError(f"LOG_FORMAT={fmt!r} is not valid: text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactionFilter(configured_secrets(environ)))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    if fmt == "json":
        _quiet_other_writers()
    return handler


def _quiet_other_writers() -> None:
    """:data:`JSON_LOG_ENVIRONMENT` for this process and its children (the
    user's own setting wins), Python warnings as log records, and the
    libraries' loggers routed through ours."""
    for name, value in JSON_LOG_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    logging.captureWarnings(True)
    route_library_logs()


def json_logging() -> bool:
    """Whether this process writes JSON lines (``configure_logging`` with
    LOG_FORMAT=json): libraries with a switch of their own for progress bars
    (which overrides TQDM_DISABLE) should turn them off."""
    ours = [h for h in logging.getLogger().handlers if h.get_name() == _HANDLER_NAME]
    return bool(ours) and isinstance(ours[0].formatter, JsonFormatter)


def route_library_logs() -> None:
    """With JSON logs, libraries that attached a handler of their own (e.g.
    transformers' stderr handler, which also stops propagation) lose it and
    propagate to the root handler, so their records become JSON lines too.
    Call again after a library is imported (the worker does after the model
    loads); a no-op with text logs, where their own formats are fine."""
    if not json_logging():
        return
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if not isinstance(logger, logging.Logger) or not logger.handlers:
            continue
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # not files, not queues
                logger.removeHandler(handler)
        if not logger.handlers:
            logger.propagate = True
