"""How the tests run a real Label Studio and a real rexlabel backend.

The session fixtures built on this (``label_studio``, ``rexlabel_backend``,
``rexlabel_backend_queue``) are in :mod:`tests.e2e.fixtures`, registered for
the whole suite by ``tests/conftest.py``: ``tests/e2e`` and ``tests/ui`` share
them, so one pytest session runs one Label Studio.

One Label Studio 1.23.2 per test session (from ``.venv-ls``; create it with
``scripts/setup-labelstudio-venv.sh``), bound to 127.0.0.1 on a free port,
with a temporary data dir, and the environment ``label-studio-protocol.md`` §8
asks for. The rexlabel backend (``rexlabel serve``) and, for the queue path,
``rexlabel worker`` run as subprocesses of this session. Every wait is
bounded; every process is killed at teardown, also after a failure.

Label Studio's cold start is mostly database migrations (40 s to minutes on
2 cores). ``scripts/setup-labelstudio-venv.sh`` migrates an empty database
once into ``.venv-ls/e2e-data-template``; each session copies it into its
temporary data dir and starts in seconds (without it: a full cold start).
``REXLABEL_E2E_LS_DATA_DIR`` (test harness only) keeps a data dir across
sessions instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.e2e.lsclient import LabelStudioClient

REPO_ROOT = Path(__file__).resolve().parents[2]
LS_VENV = REPO_ROOT / ".venv-ls"
LS_EXECUTABLE = LS_VENV / "bin" / "label-studio"
REXLABEL_EXECUTABLE = Path(sys.executable).parent / "rexlabel"
"""The console script of the venv running pytest (``.venv/bin/rexlabel``)."""

LS_VERSION = "1.23.2"
"""The Label Studio release the protocol spec was read from."""
LS_DATA_TEMPLATE = LS_VENV / "e2e-data-template"
LS_DATA_TEMPLATE_STAMP = LS_DATA_TEMPLATE / f".migrated-{LS_VERSION}"
"""Written by the setup script once the template's migrations completed."""

LS_START_TIMEOUT_S = 300.0
"""A fresh data dir runs all migrations: 40-75 s measured on 2 busy cores;
the margin covers CI runners doing other work."""

LS_START_ATTEMPTS = 3
"""Label Studio moves to the next port when its port is taken (a race with
another process after we picked it); retry with a new port this many times."""

BACKEND_START_TIMEOUT_S = 180.0
"""``rexlabel serve`` imports Flask and the SDK (a few seconds); a worker also
loads the tiny model. Generous for a loaded CI runner."""

POLL_INTERVAL_S = 0.5
"""Between readiness probes."""

STOP_TIMEOUT_S = 15.0
"""SIGTERM grace period before SIGKILL at teardown."""

LOG_TAIL_CHARS = 4000
"""How much of a server log a failure message shows."""

LS_USERNAME = "e2e@rexlabel.test"
LS_PASSWORD = "rexlabel-e2e-password"
LS_LEGACY_TOKEN = "e2e0c0ffee0123456789abcdef0123456789abcd"
"""Fixed credentials: a reused data dir keeps the user created on first start."""

E2E_REDIS_DB = 14
"""A Redis database used only by these tests (flushed at start): job ids are
deterministic per (project, model_version, chunk) and Label Studio project ids
restart at 1 in every fresh data dir, so a stale record must not survive."""

DATA_DIR_ENV = "REXLABEL_E2E_LS_DATA_DIR"
PAT_FILE_NAME = "rexlabel-e2e-pat.txt"
"""Label Studio shows a PAT only once and allows one per user: kept beside the DB."""


# -- process helpers -------------------------------------------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: Path, chars: int = LOG_TAIL_CHARS) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as exc:
        return f"<no log: {exc}>"


@dataclass
class ManagedProcess:
    """A server subprocess in its own process group, with its log file."""

    name: str
    popen: subprocess.Popen
    log_path: Path

    @classmethod
    def start(
        cls, name: str, argv: list[str], env: dict[str, str], log_path: Path, cwd: Path
    ) -> ManagedProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log:
            popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: teardown kills children too
            )
        return cls(name, popen, log_path)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited {self.popen.returncode}"
        return f"{self.name} ({state}), log {self.log_path}:\n{tail(self.log_path)}"

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left."""
        if self.popen.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        # Children (e.g. an RQ work horse) may outlive the leader: kill the group.
        self._signal(signal.SIGKILL)
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # pragma: no cover - kernel trouble
            pass

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_until(
    probe: Callable[[], bool], timeout_s: float, what: str, process: ManagedProcess
) -> float:
    """Poll ``probe`` until true; fail naming ``what`` with the process log.

    Returns the seconds it took."""
    start = time.monotonic()
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"{what}: process died. {process.describe()}")
        try:
            if probe():
                return time.monotonic() - start
        except requests.RequestException:
            pass
        time.sleep(POLL_INTERVAL_S)
    raise TimeoutError(
        f"{what}: not ready after {timeout_s:.0f} s. {process.describe()}"
    )


def _http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    return requests.get(url, headers=headers, timeout=2.0).status_code == 200


# -- Label Studio ------------------------------------------------------------
@dataclass
class LabelStudio:
    """A running Label Studio: URL, credentials, dirs and a REST client."""

    url: str
    port: int
    legacy_token: str
    data_dir: Path
    files_root: Path
    process: ManagedProcess
    start_seconds: float
    fresh_data_dir: bool
    client: LabelStudioClient
    _pat: str | None = field(default=None, repr=False)

    def personal_access_token(self) -> str:
        """This user's PAT (created on first use, kept in the data dir)."""
        if self._pat is None:
            pat_file = self.data_dir / PAT_FILE_NAME
            if pat_file.exists():
                self._pat = pat_file.read_text().strip()
            else:
                self._pat = self.client.create_personal_access_token()
                pat_file.write_text(self._pat)
        return self._pat


def label_studio_env(files_root: Path) -> dict[str, str]:
    """The environment for ``label-studio start`` (protocol spec §8)."""
    env = {
        k: v
        for k, v in os.environ.items()
        # It reads these too; stray values would move its host, port or user.
        if k not in ("HOST", "PORT", "USERNAME", "PASSWORD")
    }
    env.update(
        LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
        # A backend on 127.0.0.1 is refused (403) unless both are off (1.23.1+).
        ML_BLOCK_LOCAL_IP="false",
        SSRF_PROTECTION_ENABLED="false",
        LOCAL_FILES_SERVING_ENABLED="true",
        LOCAL_FILES_DOCUMENT_ROOT=str(files_root),
        # No internet: no error reporting, version check or analytics.
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        LATEST_VERSION_CHECK="false",
        COLLECT_ANALYTICS="false",
        # Its version probe runs `git` from its package dir, which lies inside
        # this checkout: keep it out of our repository (and its index lock).
        GIT_CEILING_DIRECTORIES=str(REPO_ROOT),
    )
    return env


def _started_on(log_path: Path, port: int) -> bool:
    """Label Studio logs the address it really bound (it may silently move)."""
    return f"Starting development server at http://127.0.0.1:{port}/" in tail(
        log_path, 1_000_000
    )


def start_label_studio(data_dir: Path, files_root: Path, log_dir: Path) -> LabelStudio:
    fresh = not (data_dir / "label_studio.sqlite3").exists()
    last_error: Exception | None = None
    for attempt in range(1, LS_START_ATTEMPTS + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            str(LS_EXECUTABLE),
            "start",
            # --host is the public URL (sent to backends in /setup; must start
            # with http://); --internal-host is the bind address (default 0.0.0.0).
            "--host",
            url,
            "--internal-host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--no-browser",
            "--username",
            LS_USERNAME,
            "--password",
            LS_PASSWORD,
            "--user-token",
            LS_LEGACY_TOKEN,
            "--enable-legacy-api-token",
        ]
        process = ManagedProcess.start(
            "label-studio",
            argv,
            label_studio_env(files_root),
            log_dir / f"label-studio-{attempt}.log",
            cwd=data_dir,
        )
        try:
            client = LabelStudioClient(url, LS_LEGACY_TOKEN)
            seconds = wait_until(
                lambda: (
                    _started_on(process.log_path, port) and _http_ok(f"{url}/health")
                ),
                LS_START_TIMEOUT_S,
                f"Label Studio on {url}",
                process,
            )
            # Whoever answers must be ours: our user, our token, our version.
            whoami = client.whoami()
            if whoami.get("email") != LS_USERNAME:
                raise RuntimeError(f"{url} is not our Label Studio: {whoami}")
            version = client.get_json("/api/version").get("release")
            if version != LS_VERSION:
                raise RuntimeError(f"expected Label Studio {LS_VERSION}, got {version}")
            return LabelStudio(
                url=url,
                port=port,
                legacy_token=LS_LEGACY_TOKEN,
                data_dir=data_dir,
                files_root=files_root,
                process=process,
                start_seconds=seconds,
                fresh_data_dir=fresh,
                client=client,
            )
        except Exception as exc:
            process.stop()
            last_error = exc
            if "not ready after" in str(exc) or attempt == LS_START_ATTEMPTS:
                break
    raise RuntimeError(f"Label Studio did not start: {last_error}")


E2E_TIMINGS: dict[str, str] = {}
"""Figures printed in the terminal summary (never asserted on)."""


# -- rexlabel backend and worker --------------------------------------------
@dataclass
class Backend:
    """A running ``rexlabel serve`` (and optionally ``rexlabel worker``)."""

    url: str
    token_kind: str
    processes: list[ManagedProcess]
    env: dict[str, str]

    def logs(self) -> str:
        return "\n\n".join(p.describe() for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def backend_env(
    ls: LabelStudio,
    model_dir: Path | str,
    api_key: str,
    redis_url: str | None,
    jobs_dir: Path,
) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LABEL_STUDIO_", "REXLABEL_", "REDIS_"))
        and k not in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS")
    }
    env.update(
        LABEL_STUDIO_URL=ls.url,
        LABEL_STUDIO_API_KEY=api_key,
        REXLABEL_MODEL=str(model_dir),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        REXLABEL_DEVICE="cpu",
        # The worker's metrics server would bind all interfaces: off in tests.
        REXLABEL_WORKER_METRICS_PORT="0",
        # Bulk job ids come from project id, version and tasks; project ids
        # restart at 1 in every fresh Label Studio: no records from other runs.
        REXLABEL_JOBS_DIR=str(jobs_dir),
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


REDIS_BASE_URL = os.environ.get("REXLABEL_TEST_REDIS", "redis://127.0.0.1:6379")
"""Where the test Redis runs, without a database number (as in
tests/backend/redis_helpers.py; override for CI services or a private one)."""


def redis_url_for_tests() -> str:
    """The e2e Redis database, flushed; skips when Redis is not running."""
    import redis

    url = f"{REDIS_BASE_URL.rstrip('/')}/{E2E_REDIS_DB}"
    connection = redis.Redis.from_url(url, socket_timeout=5)
    try:
        connection.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {url} for the queue path: {exc}")
    connection.flushdb()
    return url


def start_backend(
    ls: LabelStudio,
    model_dir: Path | str,
    log_dir: Path,
    token_kind: str = "legacy",
    redis_url: str | None = None,
    extra_env: Mapping[str, str] | None = None,
    name: str | None = None,
    tiny_sam: bool = False,
) -> Backend:
    """``rexlabel serve`` on a free port; with ``redis_url`` also a worker.

    The worker runs ``rexlabel worker`` through :mod:`tests.e2e.tiny_sam_rexlabel`
    (a tiny random SAM installed), so Polygon/Brush projects get masks.
    ``extra_env`` is added to the backend's environment (another engine, for
    example; ``model_dir`` is then what REXLABEL_MODEL names); ``name`` tells
    this backend's logs and timings apart (default: ``token_kind``).
    ``tiny_sam`` (without ``redis_url``): the serve process itself runs the
    model with the tiny SAM (masks without Redis)."""
    if not REXLABEL_EXECUTABLE.exists():
        pytest.fail(f"{REXLABEL_EXECUTABLE} missing: pip install -e . into the venv")
    name = name or token_kind
    api_key = ls.legacy_token if token_kind == "legacy" else ls.personal_access_token()
    env = backend_env(ls, model_dir, api_key, redis_url, log_dir / f"jobs-{name}")
    env.update(extra_env or {})
    processes: list[ManagedProcess] = []
    backend = Backend("", token_kind, processes, env)
    try:
        if redis_url:
            worker = ManagedProcess.start(
                "rexlabel worker (tiny SAM)",
                [sys.executable, "-m", "tests.e2e.tiny_sam_rexlabel", "worker"],
                env,
                log_dir / f"worker-{name}.log",
                cwd=REPO_ROOT,
            )
            processes.append(worker)
        port = free_port()
        command = (
            [sys.executable, "-m", "tests.e2e.tiny_sam_rexlabel"]
            if tiny_sam
            else [str(REXLABEL_EXECUTABLE)]
        )
        serve = ManagedProcess.start(
            "rexlabel serve",
            [*command, "serve", "--host", "127.0.0.1", "--port", str(port)],
            env,
            log_dir / f"serve-{name}.log",
            cwd=REPO_ROOT,
        )
        processes.append(serve)
        backend.url = f"http://127.0.0.1:{port}"
        seconds = wait_until(
            lambda: _http_ok(f"{backend.url}/health"),
            BACKEND_START_TIMEOUT_S,
            f"rexlabel serve on {backend.url}",
            serve,
        )
        E2E_TIMINGS[f"rexlabel serve start ({name})"] = f"{seconds:.1f} s"
        if redis_url:
            seconds = wait_until(
                lambda: _worker_up(backend.url),
                BACKEND_START_TIMEOUT_S,
                "rexlabel worker registered (backend /health workers_up)",
                worker,
            )
            E2E_TIMINGS["rexlabel worker ready"] = f"{seconds:.1f} s"
        return backend
    except BaseException:
        backend.stop()
        raise


def _worker_up(url: str) -> bool:
    response = requests.get(f"{url}/health", timeout=2.0)
    return response.status_code == 200 and bool(response.json().get("workers_up"))
