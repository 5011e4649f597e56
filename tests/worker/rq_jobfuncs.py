"""Job functions the worker tests enqueue by dotted path (JSON in, JSON out)."""

from __future__ import annotations

import os
import time
from typing import Any


def note(payload: dict[str, Any]) -> dict[str, Any]:
    """Append ``payload["name"]`` to the Redis list ``payload["list"]``, then
    sleep ``payload["sleep"]`` seconds; returns who ran it."""
    from rq import get_current_job

    job = get_current_job()
    job.connection.rpush(payload["list"], payload["name"])
    time.sleep(float(payload.get("sleep", 0)))
    return {"name": payload["name"], "pid": os.getpid()}
