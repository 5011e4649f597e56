"""A bad setting stops the backend at start-up, with one line naming the variable.

Three ways the backend starts: ``rexlabel serve`` (the README), gunicorn with
``docker/gunicorn.conf.py`` (the compose file and the image) and
``create_app()`` (any WSGI server). Each must refuse a bad value before it
listens, including a worker-side setting the backend only reads when the model
runs in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from backend.app import create_app
from common.settings import SETTINGS, SettingsError

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
START_TIMEOUT_S = 60


def _env(**given: str) -> dict[str, str]:
    """This environment without any rexlabel setting, plus ``given``."""
    names = {n for s in SETTINGS for n in (s.name, *s.aliases)}
    env = {k: v for k, v in os.environ.items() if k not in names}
    return {**env, "REXLABEL_HOST": "127.0.0.1", **given}


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )


def test_create_app_names_every_bad_variable():
    with pytest.raises(SettingsError) as caught:
        create_app({"REXLABEL_MAX_NEW_TOKENS": "many", "LOG_FORMAT": "xml"})
    assert "REXLABEL_MAX_NEW_TOKENS='many'" in str(caught.value)
    assert "LOG_FORMAT='xml'" in str(caught.value)


@pytest.mark.parametrize("dev", [False, True], ids=["gunicorn", "dev-server"])
def test_rexlabel_serve_refuses_a_bad_value_before_listening(dev):
    env = _env(REXLABEL_PREDICT_TIMEOUT="soon", PORT="9")
    done = _run([str(BIN / "rexlabel"), "serve", *(["--dev"] if dev else [])], env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "rexlabel serve: bad configuration: REXLABEL_PREDICT_TIMEOUT='soon' is not "
        "valid: could not convert string to float: 'soon'"
    ]


def test_a_worker_side_setting_is_checked_by_the_backend_too():
    done = _run(
        [str(BIN / "rexlabel"), "serve", "--dev"],
        _env(REXLABEL_ENGINE="tensorrt", PORT="9"),
    )
    assert done.returncode == 2
    assert "REXLABEL_ENGINE='tensorrt'" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_compose_gunicorn_command_refuses_a_bad_value():
    """The backend service's command (docker-compose.yml), as the image runs it."""
    done = _run(
        [
            str(BIN / "gunicorn"),
            "--config",
            "docker/gunicorn.conf.py",
            "backend.app:create_app()",
        ],
        _env(PORT="ninety"),
    )
    assert done.returncode != 0
    assert "rexlabel backend: bad configuration: PORT='ninety'" in done.stderr
    assert "Traceback" not in done.stderr
