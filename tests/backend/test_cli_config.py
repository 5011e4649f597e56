"""``rexlabel config``: every setting, its source, secrets masked, bad values exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backend.cli import main
from common.settings import SETTINGS


@pytest.fixture
def clean_env(monkeypatch):
    """No rexlabel variable (or alias) from the outer environment leaks in."""
    for item in SETTINGS:
        for name in (item.name, *item.aliases):
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _rows(text: str) -> dict[str, tuple[str, str]]:
    lines = text.splitlines()
    assert lines[0].split() == ["VARIABLE", "VALUE", "SOURCE"]
    rows = {}
    for line in lines[1:]:
        name, value, source = line.split(None, 2)
        rows[name] = (value, source)
    return rows


def test_lists_every_setting_with_value_and_source(clean_env, capsys):
    clean_env.setenv("LABEL_STUDIO_HOST", "http://ls.example:8080")  # an alias
    clean_env.setenv("PORT", "9191")
    assert main(["config"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert list(rows) == [item.name for item in SETTINGS]
    assert rows["LABEL_STUDIO_URL"] == (
        "http://ls.example:8080",
        "env LABEL_STUDIO_HOST",
    )
    assert rows["PORT"] == ("9191", "env PORT")
    assert rows["REXLABEL_ENGINE"] == ("auto", "default")
    assert rows["LABEL_STUDIO_API_KEY"] == ('""', "default")  # empty stays visible


def test_secrets_are_masked_in_table_and_json(clean_env, capsys):
    secrets = {
        "LABEL_STUDIO_ACCESS_TOKEN": "0123456789abcdef0123456789abcdef01234567",
        "BASIC_AUTH_PASS": "correct-horse-battery",
        "REDIS_URL": "redis://:hunter2hunter2@redis:6379/0",
    }
    for name, value in secrets.items():
        clean_env.setenv(name, value)
    assert main(["config"]) == 0
    table = capsys.readouterr().out
    assert main(["config", "--json"]) == 0
    as_json = capsys.readouterr().out
    for value in secrets.values():
        assert value not in table and value not in as_json
    values = json.loads(as_json)
    assert values["LABEL_STUDIO_API_KEY"] == "***"
    assert values["BASIC_AUTH_PASS"] == "***"
    assert values["REDIS_URL"] == "***"
    assert _rows(table)["LABEL_STUDIO_API_KEY"] == (
        "***",
        "env LABEL_STUDIO_ACCESS_TOKEN",
    )


def test_a_bad_value_names_the_variable_and_exits_2(clean_env, capsys):
    clean_env.setenv("REXLABEL_MAX_NEW_TOKENS", "lots")
    clean_env.setenv("REXLABEL_ENGINE", "tensorrt")
    assert main(["config"]) == 2
    captured = capsys.readouterr()
    rows = _rows(captured.out)
    assert rows["REXLABEL_MAX_NEW_TOKENS"] == (
        "<invalid>",
        "env REXLABEL_MAX_NEW_TOKENS",
    )
    assert "REXLABEL_MAX_NEW_TOKENS='lots' is not valid" in captured.err
    assert "REXLABEL_ENGINE='tensorrt' is not valid" in captured.err
    assert "transformers, vllm, openai" in captured.err


def test_the_installed_command_runs(clean_env):
    env = {**os.environ, "LOG_FORMAT": "xml"}
    done = subprocess.run(
        [sys.executable, "-m", "backend.cli", "config", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "LOG_FORMAT='xml' is not valid" in done.stderr
    assert "LOG_FORMAT" not in json.loads(done.stdout)
