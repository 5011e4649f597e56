"""Job functions for queue tests: JSON in, JSON out, like ``worker.jobs.run_chunk``.

They exercise the queue itself (ordering, failures, deadlines) without a model;
the real job function runs in test_app.py's end-to-end tests.
"""

from __future__ import annotations

import os
import time
from typing import Any


def echo_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """A well-formed chunk result naming the process that ran it."""
    return {
        "images": [
            {
                "id": image["id"],
                "task_id": image.get("task_id"),
                "width": 100,
                "height": 50,
                "calls": [],
                "error": None,
            }
            for image in payload["images"]
        ],
        "pid": os.getpid(),
        "echo": payload,
    }


def fail_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"boom on {len(payload['images'])} image(s)")


def slow_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(payload.get("sleep", 2.0)))
    return echo_chunk(payload)


def not_a_dict(payload: dict[str, Any]) -> list[int]:
    return [1, 2, 3]
