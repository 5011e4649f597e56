"""``GET /health``: whether a model can serve, in Label Studio's terms.

``200 OK`` only when a model is ready; otherwise 503 with a reason phrase
that says why (Label Studio's "Connect model" shows only ``503 Server Error:
<phrase>``) and a ``message`` a user can act on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.replies import scrub_text

MODEL_CLASS = "RexOmni"
"""Reported by /health as Label Studio's own backends do (``model_class``)."""

HEALTH_STATUS = {
    "ready": "UP",
    "loading": "LOADING",
    "failed": "FAILED",
    "no_workers": "NO_WORKERS",
    "down": "DOWN",
}
"""/health's ``status`` per model state (Label Studio's backends say ``UP``)."""

HEALTH_PHRASES = {
    "loading": "Model still loading",
    "failed": "Model failed to load",
    "no_workers": "No rexlabel worker running",
    "down": "Queue (Redis) unreachable",
}
"""Reason phrase of /health's 503 per state: Label Studio's "Connect model"
shows ``503 Server Error: <phrase> for url: ...`` and nothing of the body."""


def health_reply(queue: Mapping[str, Any], version: str) -> tuple[dict[str, Any], str]:
    """The /health body and HTTP status line for the runner's ``queue`` status
    (``ChunkRunner.status()``) and the current model ``version``."""
    up = bool(queue.get("queue_up"))
    model = queue.get("model") or {"state": "ready" if up else "unknown"}
    state = str(model.get("state")) if up else "down"
    body: dict[str, Any] = {
        "status": HEALTH_STATUS.get(state, state.upper()),
        "model_class": MODEL_CLASS,
        "model_version": version,
        "model": model,
        "queue": queue,
        "workers_up": bool(queue.get("workers")),
    }
    if state == "ready":
        return body, "200 OK"
    body["message"] = readiness_message(state, model, queue)
    return body, f"503 {HEALTH_PHRASES.get(state, 'Service Unavailable')}"


def readiness_message(
    state: str, model: Mapping[str, Any], queue: Mapping[str, Any]
) -> str:
    """Why /health is not UP, in words a user can act on."""
    in_process = queue.get("mode") == "in-process"
    if state == "down":
        return f"the queue is unreachable: {queue.get('error') or 'no reason given'}"
    if state == "loading":
        who = "the model" if in_process else f"{model.get('loading')} worker(s)"
        return (
            f"{who} loading (a first start downloads the weights); Label Studio "
            "connects once /health answers 200"
        )
    if state == "failed":
        if in_process:
            return (
                f"the model failed to load: {model.get('reason')}; it is tried "
                "again when asked a minute later (or fix the settings and restart)"
            )
        return (
            f"no worker is ready: the last one failed to load the model: "
            f"{model.get('reason')}; see its log, fix the settings and restart it"
        )
    return "no rexlabel worker serves the interactive queue: start `rexlabel worker`"


def scrub_health(health: dict[str, Any]) -> dict[str, Any]:
    """/health without internal URLs or local paths in its reasons (a model
    server's URL, a weights path, Redis' host): the log has them."""
    for part, key in (
        (health, "message"),
        (health.get("model") or {}, "reason"),
        (health.get("queue") or {}, "error"),
    ):
        if isinstance(part.get(key), str):
            part[key] = scrub_text(part[key])
    return health
