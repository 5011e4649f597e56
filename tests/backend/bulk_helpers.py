"""Shared pieces of the bulk-job tests: Redis database, images, worker processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.worker.rq_helpers import (
    FAST_WORKER,
    REPO_ROOT,
    empty_db,
    redis_or_skip,
    redis_url,
    start_worker,
    stop_worker,
    wait_for,
    worker_env,
)

__all__ = [
    "FAST_WORKER",
    "REPO_ROOT",
    "Workers",
    "cli",
    "coco_file_names",
    "empty_db",
    "make_images",
    "raw_lines",
    "redis_or_skip",
    "redis_url",
    "start_worker",
    "stop_worker",
    "wait_for",
]


def make_images(
    folder: Path, count: int, *, nested: bool = True, size: tuple[int, int] = (112, 96)
) -> list[Path]:
    """``count`` small PNGs, half of them in a subfolder; sorted as a walk yields."""
    rng = random.Random(count)
    paths = []
    for i in range(count):
        sub = folder / "sub" if nested and i % 2 else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:03d}.png"
        Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3))).save(path)
        paths.append(path.resolve())
    return paths


def coco_file_names(path: Path) -> list[str]:
    return [image["file_name"] for image in json.loads(path.read_text())["images"]]


def raw_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child, before exec: SIGINT at its default, as a command typed in
    a terminal has it. A test suite started in the background of a script
    (``bash .ci/run &``) hands its children SIGINT ignored, and Python then
    raises no KeyboardInterrupt: the Ctrl-C test's job ran to the end."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    wait: bool = True,
    log: Path | None = None,
):
    """``rexlabel ARGS`` in a new process (from the repo root); with ``wait``
    its output (when not sent to ``log``) is in ``.output``."""
    out = open(log, "ab") if log else subprocess.PIPE
    process = subprocess.Popen(
        [sys.executable, "-m", "backend.cli", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdout=out,
        stderr=subprocess.STDOUT,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    process.output = b""
    if wait:
        process.output = process.communicate(timeout=600)[0] or b""
    return process


class Workers:
    """``rexlabel worker`` processes on the bulk test database."""

    def __init__(self, connection, model_dir: Path, log_dir: Path) -> None:
        self.connection = connection
        self.env = worker_env(model_dir)
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen:
        proc = start_worker(
            self.connection,
            self.env,
            *FAST_WORKER,
            *args,
            name=name,
            log_path=self.log_dir / f"{name}.log",
        )
        self.procs[name] = proc
        return proc

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                stop_worker(proc)


@pytest.fixture
def no_pytest_env(monkeypatch):
    """Nothing from the developer's environment leaks into a job."""
    for name in (
        "REDIS_URL",
        "LABEL_STUDIO_URL",
        "LABEL_STUDIO_HOST",
        "LABEL_STUDIO_API_KEY",
        "LABEL_STUDIO_ACCESS_TOKEN",
        "SAM_CHECKPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
