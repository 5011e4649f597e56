"""Readiness through a real ``rexlabel serve``: the model loads in the background
from start-up, /health says ``loading``, ``ready`` or ``failed`` (with the
reason) as Label Studio's "Connect model" sees it, and /predict never answers
a task with a model that is not there, nor hangs waiting for one.

The model is the openai engine (the real in-process load path through
``worker.engines.registry.create_engine``) against a loopback server whose
``/v1/models``, asked at load, is held back or names another model.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from tests.security.conftest import MODEL_ID, FakeChat, Seen, png_bytes, serve

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="shape"/>'
    "</RectangleLabels></View>"
)
IMAGE = "/data/local-files/?d=shape.png"
"""An image under LOCAL_FILES_DOCUMENT_ROOT (see env_for): no image host needed."""
WAIT_S = 60.0
"""Longest wait for a state change of the served backend (a loaded CI box)."""


def predict_body(*ids: int) -> dict:
    return {
        "tasks": [{"id": i, "data": {"image": IMAGE}} for i in ids],
        "project": "1.1795697856",
        "label_config": CONFIG,
    }


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {WAIT_S:.0f} s")
        time.sleep(0.05)


class HeldModels(FakeChat):
    """A model server whose ``/v1/models`` (the load's check) waits for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.asked = threading.Event()

    def _reply(self, request: Seen) -> tuple[int, dict[str, str], bytes]:
        if request.path.rstrip("/").endswith("/models"):
            self.asked.set()
            self.gate.wait(WAIT_S)
        return super()._reply(request)


class OtherModel(FakeChat):
    """A model server that serves some other model: the load fails."""

    def _reply(self, request: Seen) -> tuple[int, dict[str, str], bytes]:
        body = json.dumps({"data": [{"id": "someone/else"}]}).encode()
        return 200, {"Content-Type": "application/json"}, body


def env_for(chat: FakeChat, files: Path) -> dict[str, str]:
    (files / "shape.png").write_bytes(png_bytes())
    return {
        "LOCAL_FILES_DOCUMENT_ROOT": str(files),
        "REXLABEL_ENGINE": "openai",
        "REXLABEL_OPENAI_URL": chat.api_url,
        "REXLABEL_MODEL": MODEL_ID,
        "REXLABEL_PREDICT_TIMEOUT": "1",  # a /predict while loading waits this long
    }


def test_health_says_loading_until_the_model_is_ready(tmp_path):
    with HeldModels() as chat, serve(tmp_path, env_for(chat, tmp_path)) as served:
        # Loading starts at start-up, before anyone asked for the model.
        assert chat.asked.wait(WAIT_S), "the model load did not start by itself"
        health = served.get("/health")
        assert health.status_code == 503
        assert health.reason == "Model still loading"
        assert health.json()["status"] == "LOADING"
        assert health.json()["model"]["state"] == "loading"

        reply = served.post("/predict", predict_body(1, 2)).json()
        assert all("result" not in item for item in reply["results"])
        assert [e["task"] for e in reply["errors"]] == [1, 2]
        assert all("model still loading" in e["error"] for e in reply["errors"])

        chat.gate.set()
        wait_until(lambda: served.get("/health").status_code == 200, "ready")
        health = served.get("/health").json()
        assert (health["status"], health["model"]["state"]) == ("UP", "ready")
        reply = served.post("/predict", predict_body(3)).json()
        assert "errors" not in reply
        assert reply["results"][0]["result"]
    log = served.log
    assert "model: loading in the background" in log
    assert "model: ready (loaded in " in log


def test_a_model_that_cannot_load_fails_health_and_every_task_at_once(tmp_path):
    with OtherModel() as chat, serve(tmp_path, env_for(chat, tmp_path)) as served:
        wait_until(
            lambda: served.get("/health").json()["model"]["state"] == "failed",
            "failed",
        )
        health = served.get("/health")
        assert health.status_code == 503
        assert health.reason == "Model failed to load"
        reason = health.json()["model"]["reason"]
        assert f"does not serve model {MODEL_ID!r}" in reason
        assert reason in health.json()["message"]
        assert chat.url not in health.text  # the model server's URL is in the log
        assert chat.url in served.log

        reply = served.post("/predict", predict_body(1, 2)).json()
        assert all("result" not in item for item in reply["results"])
        assert [e["task"] for e in reply["errors"]] == [1, 2]
        for error in reply["errors"]:
            assert "model failed to load: OpenAIEngineError" in error["error"]
    assert "model: failed to load after" in served.log


def test_health_through_redis_says_why_the_workers_have_no_model(tmp_path):
    """A queued worker whose load fails exits (its supervisor restarts it);
    what it published tells /health, and Label Studio, why none is ready."""
    import subprocess

    from tests.backend.redis_helpers import redis_or_skip, redis_url
    from tests.security.conftest import BIN, clean_env

    redis_or_skip()  # the backend tests' database, emptied: no worker registered
    with OtherModel() as chat:
        env = {**env_for(chat, tmp_path), "REDIS_URL": redis_url()}
        worker = subprocess.run(
            [str(BIN / "rexlabel"), "worker", "--burst"],
            env=clean_env(**env, REXLABEL_WORKER_METRICS_PORT="0"),
            capture_output=True,
            text=True,
            timeout=WAIT_S,
        )
        assert worker.returncode != 0, worker.stderr
        with serve(tmp_path, env) as served:
            wait_until(lambda: served.get("/health").status_code == 503, "503")
            health = served.get("/health")
            assert health.reason == "Model failed to load"
            model = health.json()["model"]
            assert (model["state"], model["ready"], model["failed"]) == ("failed", 0, 1)
            assert f"does not serve model {MODEL_ID!r}" in model["reason"]
