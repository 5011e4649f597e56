"""``rexlabel models``: list a project's runs, roll the pointer back."""

from __future__ import annotations

import json

import pytest

from backend.cli import main
from common.model_store import publish, read_pointer, write_card


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REXLABEL_MODELS_DIR", str(tmp_path))
    project = tmp_path / "project-3"
    for name in (
        "run-20260101-000000-a",
        "run-20260102-000000-b",
        "run-20260103-000000-c",
    ):
        (project / name).mkdir(parents=True)
        write_card(project / name, {"method": "lora", "base": "IDEA-Research/Rex-Omni"})
    (project / "run-20260104-000000-unfinished").mkdir()  # no card: not listed
    publish(project, "run-20260103-000000-c")
    return project


def test_list_marks_the_current_run(models_dir, capsys):
    assert main(["models", "list", "--project", "3"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "* run-20260103-000000-c  lora",
        "  run-20260102-000000-b  lora",
        "  run-20260101-000000-a  lora",
    ]
    assert main(["models", "list", "--project", "3", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [r["current"] for r in listing] == [True, False, False]


def test_rollback_goes_to_the_run_before_or_the_one_named(models_dir, capsys):
    assert main(["models", "rollback", "--project", "3"]) == 0
    assert read_pointer(models_dir) == "run-20260102-000000-b"
    assert "current -> run-20260102-000000-b" in capsys.readouterr().out
    assert main(["models", "rollback", "--project", "3"]) == 0
    assert read_pointer(models_dir) == "run-20260101-000000-a"
    assert main(["models", "rollback", "--project", "3"]) == 2
    assert "no finished run older" in capsys.readouterr().err
    assert (
        main(["models", "rollback", "--project", "3", "--to", "run-20260103-000000-c"])
        == 0
    )
    assert read_pointer(models_dir) == "run-20260103-000000-c"


def test_rollback_refuses_unfinished_or_foreign_runs(models_dir, capsys):
    for target in ("run-20260104-000000-unfinished", "../project-4/run-x", "nope"):
        assert main(["models", "rollback", "--project", "3", "--to", target]) == 2
    assert read_pointer(models_dir) == "run-20260103-000000-c"
    assert main(["models", "list", "--project", "9"]) == 2
    assert "project-9 does not exist" in capsys.readouterr().err
