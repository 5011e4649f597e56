"""The code style the project keeps (pyproject's ruff settings), checked where
CI runs: a lint or formatting slip fails the suite, not a later review."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = str(RUFF) if RUFF.exists() else shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is missing: pip install -e '.[dev]'")
    return subprocess.run(
        [ruff, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )


def test_ruff_check_passes():
    done = _ruff("check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_leaves_every_file_as_is():
    done = _ruff("format", "--check", ".")
    assert done.returncode == 0, done.stdout + done.stderr
