"""The session fixtures of a real Label Studio and a real rexlabel backend.

Registered for the whole test suite by ``tests/conftest.py``
(``pytest_plugins``), so the end-to-end tests (``tests/e2e``) and the browser
tests (``tests/ui``) share one Label Studio and one backend of each kind per
pytest session. What they run and how is in :mod:`tests.e2e.conftest`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    DATA_DIR_ENV,
    E2E_TIMINGS,
    LS_DATA_TEMPLATE,
    LS_DATA_TEMPLATE_STAMP,
    LS_EXECUTABLE,
    Backend,
    LabelStudio,
    redis_url_for_tests,
    start_backend,
    start_label_studio,
)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    if not LS_EXECUTABLE.exists():
        pytest.skip(
            f"no Label Studio at {LS_EXECUTABLE}: run scripts/setup-labelstudio-venv.sh"
        )
    root = tmp_path_factory.mktemp("label-studio")
    data_dir = Path(os.environ.get(DATA_DIR_ENV) or root / "data")
    if not data_dir.exists() and LS_DATA_TEMPLATE_STAMP.exists():
        shutil.copytree(LS_DATA_TEMPLATE, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    files_root = root / "files"
    files_root.mkdir()
    ls = start_label_studio(data_dir, files_root, root / "logs")
    if ls.fresh_data_dir:
        kind = "cold: fresh data dir, migrations"
    elif (data_dir / LS_DATA_TEMPLATE_STAMP.name).exists():
        kind = "migrated template copied"
    else:
        kind = "reused data dir"
    E2E_TIMINGS["Label Studio start"] = f"{ls.start_seconds:.1f} s ({kind})"
    try:
        yield ls
    finally:
        ls.process.stop()


@pytest.fixture(scope="session")
def backend_logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rexlabel-logs")


@pytest.fixture(scope="session")
def rexlabel_backend(
    label_studio: LabelStudio, trained_model_dir: Path, backend_logs_dir: Path
) -> Iterator[Backend]:
    """The backend with Label Studio's legacy token, jobs run in-process."""
    backend = start_backend(label_studio, trained_model_dir, backend_logs_dir)
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def rexlabel_backend_queue(
    label_studio: LabelStudio, trained_model_dir: Path, backend_logs_dir: Path
) -> Iterator[Backend]:
    """The backend with a personal access token, jobs through Redis + a worker."""
    backend = start_backend(
        label_studio,
        trained_model_dir,
        backend_logs_dir,
        token_kind="pat",
        redis_url=redis_url_for_tests(),
    )
    try:
        yield backend
    finally:
        backend.stop()


@pytest.fixture(scope="session")
def readme_backend(
    label_studio: LabelStudio, readme_model_dir: Path, backend_logs_dir: Path
) -> Iterator[Backend]:
    """The backend on the README model (``readme_model_dir``), jobs run
    in-process with a tiny random SAM (masks without Redis)."""
    backend = start_backend(
        label_studio,
        readme_model_dir,
        backend_logs_dir,
        name="README model",
        tiny_sam=True,
    )
    try:
        yield backend
    finally:
        backend.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if E2E_TIMINGS:
        terminalreporter.section("rexlabel e2e timings")
        for name, figure in E2E_TIMINGS.items():
            terminalreporter.write_line(f"{name}: {figure}")
