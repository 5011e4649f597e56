"""Logging for the backend and the worker: text or JSON lines, secrets never logged.

``configure_logging()`` sets up the root logger from ``LOG_LEVEL`` and
``LOG_FORMAT`` (``text``: human lines; ``json``: one JSON object per line). Its
handler carries a :class:`RedactionFilter`, so whatever any library logs through
it never shows an access token, an ``Authorization`` header, an API key or
password, or image bytes (``data:image/...;base64,...`` and long base64 runs).

``log_job()`` and ``log_request()`` write the one line per job / request that
operators grep for: task ids, timings per phase in seconds, token counts.
No torch, no Flask here.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any
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
MAX_TASK_IDS_LOGGED = 50
"""A job line lists at most this many task ids (plus the count), so a 10,000-task
chunk does not write a megabyte-long line."""
JOB_PHASES = ("download", "preprocess", "generate", "parse", "sam", "write")
"""Phases every job line reports, in seconds (``<phase>_s``); 0 when not run."""
PHASE_ALIASES = {"postprocess": "parse", "load": "download", "masks": "sam"}
"""Engine / pipeline timing names mapped onto :data:`JOB_PHASES`."""
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


# One line per job / request -------------------------------------------------


class PhaseTimer:
    """Wall-clock seconds per phase, summed over repeated phases.

    ``with timer.phase("download"): ...`` adds to ``timer.seconds["download"]``.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + float(seconds)


def phase_fields(timings: Mapping[str, float]) -> dict[str, float]:
    """``{"<phase>_s": seconds}`` for every :data:`JOB_PHASES` entry.

    Keys may be bare (``generate``) or suffixed (``generate_s``); engine names
    are mapped through :data:`PHASE_ALIASES` and summed. Other keys (an
    engine's ``batch_size``, a ``total``) are not phases and are left out.
    """
    fields = {f"{phase}_s": 0.0 for phase in JOB_PHASES}
    for name, seconds in timings.items():
        base = name[:-2] if name.endswith("_s") else name
        key = f"{PHASE_ALIASES.get(base, base)}_s"
        if key in fields:
            fields[key] = round(fields[key] + float(seconds), 4)
    return fields


def _task_id_fields(task_ids: Iterable[Any]) -> dict[str, Any]:
    ids = [t for t in task_ids if t is not None]
    fields: dict[str, Any] = {
        "task_ids": ids[:MAX_TASK_IDS_LOGGED],
        "task_count": len(ids),
    }
    return fields


def log_job(
    logger: logging.Logger,
    *,
    job_id: str,
    task_ids: Iterable[Any] = (),
    duration_s: float,
    timings: Mapping[str, float] | None = None,
    images: int = 0,
    prompt_tokens: int = 0,
    output_tokens: int = 0,
    truncated: int = 0,
    status: str = "done",
    level: int = logging.INFO,
    **fields: Any,
) -> None:
    """One line for a finished job (a chunk of images).

    Fields: ``job_id``, ``status``, ``task_ids`` (capped) and ``task_count``,
    ``images``, ``duration_s``, ``<phase>_s`` for every phase, token counts,
    ``truncated`` (generations cut by the runaway guard), plus ``fields``.
    """
    extra: dict[str, Any] = {
        "event": "job",
        "job_id": job_id,
        "status": status,
        **_task_id_fields(task_ids),
        "images": images,
        "duration_s": round(float(duration_s), 4),
        **phase_fields(timings or {}),
        "prompt_tokens": int(prompt_tokens),
        "output_tokens": int(output_tokens),
        "truncated": int(truncated),
        **fields,
    }
    logger.log(level, "job %s %s", job_id, status, extra=extra)


def summarize_results(results: Iterable[Any]) -> dict[str, Any]:
    """Totals over :class:`common.jobspec.ImageResult` objects (or their dicts).

    Returns ``task_ids``, ``images``, ``failed``, ``prompt_tokens``,
    ``output_tokens``, ``truncated`` and ``timings`` (seconds per phase, summed
    over calls) — the arguments :func:`log_job` and
    :func:`common.metrics.record_chunk` takes.
    """
    summary: dict[str, Any] = {
        "task_ids": [],
        "images": 0,
        "failed": 0,
        "prompt_tokens": 0,
        "output_tokens": 0,
        "truncated": 0,
        "timings": {},
    }
    for result in results:
        data = result if isinstance(result, Mapping) else result.to_dict()
        summary["images"] += 1
        summary["task_ids"].append(data.get("task_id", data.get("id")))
        if data.get("error"):
            summary["failed"] += 1
        if data.get("load_s"):
            timings = summary["timings"]
            timings["download"] = timings.get("download", 0.0) + float(data["load_s"])
        for call in data.get("calls", []):
            summary["prompt_tokens"] += int(call.get("prompt_tokens", 0))
            summary["output_tokens"] += int(call.get("output_tokens", 0))
            summary["truncated"] += bool(call.get("truncated"))
            for name, seconds in call.get("timings", {}).items():
                timings = summary["timings"]
                timings[name] = timings.get(name, 0.0) + float(seconds)
    return summary


def summary_fields(summary: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`summarize_results`' totals as log fields, named as on a job line:
    ``images``, ``failed_images``, ``<phase>_s``, token counts, ``truncated``."""
    return {
        "images": int(summary["images"]),
        "failed_images": int(summary["failed"]),
        **phase_fields(summary["timings"]),
        "prompt_tokens": int(summary["prompt_tokens"]),
        "output_tokens": int(summary["output_tokens"]),
        "truncated": int(summary["truncated"]),
    }


def log_request(
    logger: logging.Logger,
    *,
    method: str,
    path: str,
    status: int,
    duration_s: float,
    task_ids: Iterable[Any] = (),
    level: int | None = None,
    **fields: Any,
) -> None:
    """One line per HTTP request: method, path, status, duration, task ids.

    ``method`` and ``path`` come from the client as sent: they are escaped
    here (:func:`escape_controls`) so the line stays one line with any
    handler, not only with ours.
    """
    method, path = escape_controls(method), escape_controls(path)
    if level is None:
        level = logging.ERROR if status >= 500 else logging.INFO
    extra = {
        "event": "request",
        "method": method,
        "path": path,
        "status": int(status),
        "duration_s": round(float(duration_s), 4),
        **_task_id_fields(task_ids),
        **fields,
    }
    logger.log(level, "%s %s %s", method, path, status, extra=extra)
