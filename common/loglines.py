"""The one line per job and per HTTP request that operators grep for.

:func:`log_job`: task ids (capped), timings per phase in seconds, token counts;
:func:`log_request`: method, path, status, duration. :func:`summarize_results`
totals a chunk's results for a job line and the metrics
(``common.metrics.record_chunk``). The lines go through the handler that
``common.logs.configure_logging`` installs (text or JSON, redacted).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from common.logs import escape_controls

MAX_TASK_IDS_LOGGED = 50
"""A job line lists at most this many task ids (plus the count), so a 10,000-task
chunk does not write a megabyte-long line."""
JOB_PHASES = ("download", "preprocess", "generate", "parse", "sam", "write")
"""Phases every job line reports, in seconds (``<phase>_s``); 0 when not run."""
PHASE_ALIASES = {"postprocess": "parse", "load": "download", "masks": "sam"}
"""Engine / pipeline timing names mapped onto :data:`JOB_PHASES`."""


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
