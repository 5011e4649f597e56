"""Every route that makes the backend act needs the credentials /predict needs.

A real ``rexlabel serve`` on loopback, the shared fake Label Studio
(tests/fake_label_studio.py) as the one Label Studio, FakeChat as the model:
requests without credentials are refused and nothing acts (no model call, no
request to Label Studio); a webhook with basic auth or its token works, with
the label config ``/setup`` stored, never the one in the webhook body. Started
beyond loopback without credentials, ``rexlabel serve`` and the image's
gunicorn refuse to start, naming what to set.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import requests

from backend.auth import CREDENTIAL_VARIABLES, is_loopback
from common import settings
from tests.fake_label_studio import FakeLabelStudio
from tests.security.conftest import (
    BIN,
    ROOT,
    START_TIMEOUT_S,
    FakeChat,
    clean_env,
    free_port,
    png_bytes,
    serve,
)
from tests.worker.rq_helpers import wait_for

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="shape"/>'
    "</RectangleLabels></View>"
)
FORGED_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="forged" toName="image"><Label value="shape"/>'
    "</RectangleLabels></View>"
)
PROJECT = 7
USER, PASSWORD, TOKEN = "ls", "basic-secret", "hook-secret"
AUTH = (USER, PASSWORD)
JOB_WAIT_S = 120.0
"""Generous bound for a background job of one image on a fake model."""


def _task(task_id: int) -> dict:
    return {"id": task_id, "data": {"image": f"/data/upload/{PROJECT}/{task_id}.png"}}


def _created(*task_ids: int, label_config: str = CONFIG) -> dict:
    return {
        "action": "TASKS_CREATED",
        "project": {"id": PROJECT, "label_config": label_config},
        "tasks": [_task(t) for t in task_ids],
    }


def _setup_body() -> dict:
    return {
        "project": f"{PROJECT}.1795697856",
        "schema": CONFIG,
        "extra_params": {"prelabel_on_import": True},
    }


@pytest.fixture
def ls():
    with FakeChat() as chat, FakeLabelStudio() as server:
        server.add_project(PROJECT, CONFIG)
        for task_id in (1, 2, 3):
            server.files[f"{PROJECT}/{task_id}.png"] = png_bytes()
            server.add_task(PROJECT, task_id, _task(task_id)["data"])
        server.chat = chat
        yield server


def _env(ls: FakeLabelStudio, tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.pat,
        "REXLABEL_ENGINE": "openai",
        "REXLABEL_OPENAI_URL": ls.chat.api_url,
        "REXLABEL_JOBS_DIR": str(tmp_path / "jobs"),
        "BASIC_AUTH_USER": USER,
        "BASIC_AUTH_PASS": PASSWORD,
        **more,
    }


def test_nothing_acts_without_credentials(ls, tmp_path):
    with serve(tmp_path, _env(ls, tmp_path)) as backend:
        assert backend.post("/setup", _setup_body()).status_code == 401
        assert backend.post("/predict", {"tasks": [_task(1)]}).status_code == 401
        assert backend.get("/metrics").status_code == 401
        assert backend.get("/versions").status_code == 401
        # the refused /setup stored nothing: /versions lists only the default
        versions = backend.get("/versions", auth=AUTH).json()["versions"]
        assert len(versions) == 1
        assert backend.post("/setup", _setup_body(), auth=AUTH).status_code == 200
        # a set-up project with pre-annotation on: a webhook needs credentials too
        refused = backend.post("/webhook", _created(1))
        assert refused.status_code == 401
        assert [s for s in ls.chat.seen if s.method == "POST"] == []  # no model call
        assert ls.requests == []  # Label Studio was never called
        accepted = backend.post("/webhook", _created(2), auth=AUTH)
        assert accepted.status_code == 200
        wait_for(lambda: ls.predictions_of(2), JOB_WAIT_S, "task 2's prediction")
    assert ls.predictions_of(1) == []


def test_a_webhook_uses_the_stored_config_and_its_token_works(ls, tmp_path):
    env = _env(ls, tmp_path, REXLABEL_WEBHOOK_TOKEN=TOKEN)
    with serve(tmp_path, env) as backend:
        # before /setup the project is unknown: its webhook does nothing
        assert backend.post(f"/webhook?token={TOKEN}", _created(1)).status_code == 200
        assert backend.post("/setup", _setup_body(), auth=AUTH).status_code == 200
        forged = _created(2, label_config=FORGED_CONFIG)
        assert backend.post(f"/webhook?token={TOKEN}", forged).status_code == 200
        wait_for(lambda: ls.predictions_of(2), JOB_WAIT_S, "task 2's prediction")
        log = backend.log
    (prediction,) = ls.predictions_of(2)
    assert {r["from_name"] for r in prediction["result"]} == {"label"}
    assert ls.predictions_of(1) == []
    assert "TASKS_CREATED for project 7 ignored: it was never set up" in log


@pytest.mark.parametrize(
    ("event", "bad"),
    [
        ({"tasks": [{"id": True, "data": {}}]}, "tasks[0].id"),
        ({"tasks": [_task(1), {"id": "2", "data": {}}]}, "tasks[1].id"),
        ({"tasks": [_task(1)], "project": {"id": True}}, "'project'"),
        ({"tasks": [_task(1)], "project": {"id": 7.5}}, "'project'"),
        ({"tasks": "1,2"}, "'tasks'"),
    ],
)
def test_a_malformed_tasks_created_is_400_naming_the_part(ls, tmp_path, event, bad):
    with serve(tmp_path, _env(ls, tmp_path)) as backend:
        body = {**_created(), **event}
        response = backend.post("/webhook", body, auth=AUTH)
    assert response.status_code == 400
    assert bad in response.json()["error"]


@pytest.mark.parametrize(
    "more", [{}, {"REXLABEL_WEBHOOK_TOKEN": TOKEN}], ids=["none", "webhook-token-only"]
)
def test_without_credentials_a_rebound_host_is_refused(ls, tmp_path, more):
    """No basic auth (loopback only; a webhook token guards /webhook alone):
    a web page whose domain now resolves to 127.0.0.1 (DNS rebinding)
    reaches the port with its own Host header."""
    env = {k: v for k, v in _env(ls, tmp_path, **more).items() if "BASIC_AUTH" not in k}
    with serve(tmp_path, env) as backend:
        rebound = {"Host": f"attacker.example:{backend.url.rsplit(':', 1)[1]}"}
        for path in ("/setup", "/webhook", "/predict"):
            response = backend.post(path, _setup_body(), headers=rebound)
            assert response.status_code == 403, path
            assert "127.0.0.1 or localhost" in response.json()["error"]
        assert backend.get("/versions", headers=rebound).status_code == 403
        assert [s for s in ls.chat.seen if s.method == "POST"] == []  # no model call
        assert backend.get("/versions").status_code == 200  # Host: 127.0.0.1
    assert ls.requests == []


def test_the_default_listen_address_is_loopback():
    assert is_loopback(settings.setting("REXLABEL_HOST").default)


def _refused(
    done: subprocess.CompletedProcess, names: tuple[str, ...] = CREDENTIAL_VARIABLES
) -> str:
    """The one line a refused start wrote (asserting there is one, no
    traceback, naming each of ``names``)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "bad configuration" in x]
    for name in names:
        assert name in line
    return line


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=clean_env(PORT=str(free_port()), **env),
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


@pytest.mark.parametrize("dev", [False, True], ids=["gunicorn", "dev-server"])
def test_serve_beyond_loopback_without_credentials_refuses_to_start(dev):
    dev_flag = ["--dev"] if dev else []
    done = _run([str(BIN / "rexlabel"), "serve", "--host", "0.0.0.0", *dev_flag])
    assert "0.0.0.0" in _refused(done)
    done = _run([str(BIN / "rexlabel"), "serve", *dev_flag], REXLABEL_HOST="::")
    _refused(done)
    # a webhook token alone leaves /predict open
    done = _run(
        [str(BIN / "rexlabel"), "serve", "--host", "0.0.0.0", *dev_flag],
        REXLABEL_WEBHOOK_TOKEN=TOKEN,
    )
    _refused(done)


def test_serve_beyond_loopback_with_credentials_starts(ls, tmp_path):
    with serve(tmp_path, _env(ls, tmp_path), "--host", "0.0.0.0") as backend:
        assert backend.get("/versions").status_code == 401
        assert backend.get("/versions", auth=AUTH).status_code == 200


GUNICORN = [str(BIN / "gunicorn"), "--config", "docker/gunicorn.conf.py"]
APP = "backend.app:create_app()"
HALF_PAIRS = [{"BASIC_AUTH_USER": USER}, {"BASIC_AUTH_PASS": PASSWORD}]
"""Half a basic-auth pair: it would accept ``ls:`` (or ``:password``)."""


@pytest.mark.parametrize("half", HALF_PAIRS, ids=["user-only", "password-only"])
@pytest.mark.parametrize(
    "command",
    [
        [str(BIN / "rexlabel"), "serve"],
        [str(BIN / "rexlabel"), "serve", "--dev"],
        [*GUNICORN, APP],
    ],
    ids=["serve", "serve-dev", "image-gunicorn"],
)
def test_half_a_basic_auth_pair_refuses_to_start_even_on_loopback(command, half):
    done = _run(command, REXLABEL_HOST="127.0.0.1", **half)
    _refused(done, names=("BASIC_AUTH_USER", "BASIC_AUTH_PASS"))


def test_the_image_gunicorn_refuses_an_open_bind_however_it_is_given():
    _refused(_run([*GUNICORN, APP], REXLABEL_HOST="0.0.0.0"))
    # GUNICORN_CMD_ARGS and -b change the bind after the config file is read
    port = free_port()
    _refused(
        _run(
            [*GUNICORN, APP],
            REXLABEL_HOST="127.0.0.1",
            GUNICORN_CMD_ARGS=f"--bind 0.0.0.0:{port}",
        )
    )
    _refused(_run([*GUNICORN, "-b", f"0.0.0.0:{port}", APP], REXLABEL_HOST="127.0.0.1"))


def test_the_image_gunicorn_with_credentials_listens(tmp_path):
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    env = clean_env(
        PORT=str(port),
        REXLABEL_HOST="0.0.0.0",
        BASIC_AUTH_USER=USER,
        BASIC_AUTH_PASS=PASSWORD,
        REXLABEL_ENGINE="openai",
        REXLABEL_OPENAI_URL="http://127.0.0.1:9/v1",
    )
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*GUNICORN, APP], cwd=ROOT, env=env, stdout=log_file, stderr=log_file
        )
    try:
        url = f"http://127.0.0.1:{port}/versions"

        def answered() -> int | None:
            if process.poll() is not None:
                raise AssertionError(log_path.read_text())
            try:
                return requests.get(url, auth=AUTH, timeout=5).status_code
            except requests.ConnectionError:
                return None

        assert wait_for(answered, START_TIMEOUT_S, "gunicorn to answer") == 200
        assert requests.get(url, timeout=5).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)
