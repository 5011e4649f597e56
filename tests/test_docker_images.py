"""The Dockerfiles, checked without a Docker engine.

What can be checked here: every COPY source exists, the images run as a
non-root user with a HEALTHCHECK, nothing model-sized is copied in, hadolint is
clean (when installed: scripts/setup-docker-tools.sh), the wheel builds from
exactly the files the Dockerfiles copy, and the health-check script answers
for a live backend and a live worker metrics endpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ("backend.Dockerfile", "worker.Dockerfile")


def _instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = (ROOT / "docker" / name).read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _final_stage(name: str) -> list[tuple[str, str]]:
    steps = _instructions(name)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def _copy_sources(name: str) -> list[str]:
    sources = []
    for keyword, args in _instructions(name):
        if keyword == "COPY" and not args.startswith("--from"):
            sources.extend(args.split()[:-1])
    return sources


def dockerfile_cmd(name: str) -> list[str]:
    """The final stage's CMD (exec form)."""
    (args,) = [a for k, a in _final_stage(name) if k == "CMD"]
    return json.loads(args)


def _healthcheck_cmd(name: str) -> list[str]:
    """The final stage's HEALTHCHECK command (exec form), without its options."""
    (args,) = [a for k, a in _final_stage(name) if k == "HEALTHCHECK"]
    return json.loads(args.split(" CMD ", 1)[1])


def _final_stage_copies(name: str) -> list[tuple[str, str]]:
    """(source, target directory) of the final stage's COPYs from the context."""
    copies = []
    for keyword, args in _final_stage(name):
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, target = args.split()
            copies.extend((source, target) for source in sources)
    return copies


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_files_exist_and_no_weights_are_copied(name):
    sources = _copy_sources(name)
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"{name}: COPY {source} does not exist"
        assert not re.search(r"\.(safetensors|pth|bin|pt)$", source)
    text = (ROOT / ".dockerignore").read_text().split()
    for heavy in (".venv", ".git", ".cache"):
        assert heavy in text, f".dockerignore must exclude {heavy}"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_final_image_is_non_root_with_a_healthcheck(name):
    final = _final_stage(name)
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    health = [args for keyword, args in final if keyword == "HEALTHCHECK"]
    assert len(health) == 1 and "docker/healthcheck.py" in health[0]
    assert any(k == "CMD" for k, _ in final)


def test_backend_image_is_slim_python_without_torch():
    steps = _instructions("backend.Dockerfile")
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim-bookworm") in steps
    installs = " ".join(
        args for k, args in _final_stage("backend.Dockerfile") if k == "RUN"
    )
    assert "pip install /wheels/*.whl" in installs and "[worker]" not in installs


def test_worker_image_installs_the_worker_extra_and_optionally_vllm():
    steps = _instructions("worker.Dockerfile")
    args = {a.split("=")[0] for k, a in steps if k == "ARG"}
    assert {"CUDA_IMAGE", "INSTALL_VLLM", "TORCH_INDEX_URL"} <= args
    assert any(k == "ARG" and a.startswith("CUDA_IMAGE=nvidia/cuda:") for k, a in steps)
    run = " ".join(a for k, a in steps if k == "RUN")
    assert '"${wheel}[worker]"' in run and '"${wheel}[vllm]"' in run
    assert "python3.11" in run
    final = dict((k, a) for k, a in _final_stage("worker.Dockerfile") if k == "VOLUME")
    assert "/models/hf" in final["VOLUME"]


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or ROOT / ".venv-tools" / "bin" / "hadolint"
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed: run scripts/setup-docker-tools.sh")
    done = subprocess.run(
        [str(hadolint), *(str(ROOT / "docker" / n) for n in DOCKERFILES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _build_image_wheel(tmp_path: Path) -> Path:
    """The build stage of both images: ``pip wheel --no-deps .`` on the COPYs."""
    context = tmp_path / "context"
    for source in set(_copy_sources("backend.Dockerfile")) | {"pyproject.toml"}:
        if source.startswith("docker/"):
            continue
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(
                src, context / source, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, context / source)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path / "wheels"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("rexlabel-*.whl")
    return wheel


@pytest.mark.slow
def test_the_wheel_builds_from_exactly_what_the_images_copy(tmp_path):
    wheel = _build_image_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "rexlabel = backend.cli:main" in archive.read(entry_points).decode()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA")))
    for module in ("backend/app.py", "backend/cli.py", "worker/process.py"):
        assert module in names
    assert "converters/prediction.py" in names
    requires = [
        line for line in metadata.decode().splitlines() if line.startswith("Requires")
    ]
    base = [r for r in requires if "extra ==" not in r]
    assert not any("torch" in r for r in base), "the base install must not pull torch"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthcheck(role: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "docker" / "healthcheck.py"), role],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
    )


def test_healthcheck_script_against_live_endpoints():
    from flask import Flask, abort
    from werkzeug.serving import make_server

    from worker import metrics_server

    port = metrics_server.start_worker_metrics_server(
        port=_free_port(), addr="127.0.0.1"
    )
    assert (
        _healthcheck("worker", REXLABEL_WORKER_METRICS_PORT=str(port)).returncode == 0
    )
    closed = str(_free_port())
    failed = _healthcheck("worker", REXLABEL_WORKER_METRICS_PORT=closed)
    assert failed.returncode == 1 and "not reachable" in failed.stderr
    assert _healthcheck("worker", REXLABEL_WORKER_METRICS_PORT="0").returncode == 0

    app = Flask("health")
    answers = {"status": 200}

    @app.get("/health")
    def health():
        if answers["status"] != 200:
            abort(answers["status"])
        return {"status": "UP"}

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend_port = str(server.server_port)
        assert _healthcheck("backend", PORT=backend_port).returncode == 0
        answers["status"] = 401  # basic auth on: alive
        assert _healthcheck("backend", PORT=backend_port).returncode == 0
        answers["status"] = 503
        down = _healthcheck("backend", PORT=backend_port)
        assert down.returncode == 1 and "HTTP 503" in down.stderr
    finally:
        server.shutdown()
    assert _healthcheck("backend", PORT=closed).returncode == 1
    assert _healthcheck("nonsense").returncode == 2


@pytest.mark.parametrize(
    ("mode", "state", "healthy"),
    [
        ("in-process", "loading", True),  # a 7 GB download: never restart midway
        ("in-process", "failed", False),  # a restart may cure it; say so
        ("redis", "loading", True),  # the workers load, in their own containers
        ("redis", "no_workers", True),
        ("redis", "failed", True),  # the workers failed, not this container
    ],
)
def test_backend_healthcheck_reads_the_model_state(mode, state, healthy):
    from flask import Flask
    from werkzeug.serving import make_server

    app = Flask("health")

    @app.get("/health")
    def health():
        body = {"model": {"state": state}, "queue": {"mode": mode}, "message": "why"}
        return body, 503

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        done = _healthcheck("backend", PORT=str(server.server_port))
    finally:
        server.shutdown()
    assert done.returncode == (0 if healthy else 1), done.stderr
    assert "why" in done.stderr


def test_backend_healthcheck_logs_in_to_read_the_model_state():
    """With basic auth on, the check stopped at 401 and called a backend whose
    model failed to load healthy: it now sends the backend's own credentials."""
    import base64

    from flask import Flask, request
    from werkzeug.serving import make_server

    expected = "Basic " + base64.b64encode(b"ls:pw").decode()
    app = Flask("health")

    @app.get("/health")
    def health():
        if request.headers.get("Authorization") != expected:
            return {"error": "authentication required"}, 401
        return {"model": {"state": "failed"}, "queue": {"mode": "in-process"}}, 503

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = str(server.server_port)
        done = _healthcheck(
            "backend", PORT=port, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="pw"
        )
        anonymous = _healthcheck(
            "backend", PORT=port, BASIC_AUTH_USER="", BASIC_AUTH_PASS=""
        )
    finally:
        server.shutdown()
    assert done.returncode == 1 and "HTTP 503" in done.stderr
    assert anonymous.returncode == 0  # 401: the app answered


IMAGE_REDIS_URL = "redis://127.0.0.1:6379/10"
"""A database no other test module uses."""
INSTALL_TIMEOUT_S = 900
"""pip installs the base dependencies (label-studio-sdk, OpenCV, ...): about a
minute from the registry's cache, several on a cold one."""


def _image_env(**overrides: str) -> dict[str, str]:
    """The backend image's ENV, then ``overrides``, and nothing of this shell's
    rexlabel settings."""
    (env_args,) = [a for k, a in _final_stage("backend.Dockerfile") if k == "ENV"]
    image_env = dict(pair.split("=", 1) for pair in env_args.split())
    base = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    return {**base, **image_env, **overrides}


@pytest.mark.slow
def test_the_backend_image_install_serves_without_torch(tmp_path):
    """The backend image's final stage, without Docker: the wheel with its base
    dependencies in a fresh venv (``pip install /wheels/*.whl``), a working
    directory holding only what the image copies into /app, and its CMD and
    HEALTHCHECK. With Redis it serves; without, it refuses in one line,
    since nothing in it can run the model."""
    wheel = _build_image_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "-c",
            str(ROOT / "requirements" / "test-constraints.txt"),
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    no_torch = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import torch"],
        capture_output=True,
        text=True,
    )
    assert "No module named 'torch'" in no_torch.stderr

    app_dir = tmp_path / "app"  # WORKDIR /app: COPY docker/gunicorn.conf.py ...
    for source, target in _final_stage_copies("backend.Dockerfile"):
        (app_dir / target).mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / source, app_dir / target)
    cmd = dockerfile_cmd("backend.Dockerfile")
    command = [str(venv / "bin" / cmd[0]), *cmd[1:]]
    port = _free_port()
    env = _image_env(
        PORT=str(port),
        REXLABEL_HOST="127.0.0.1",
        REXLABEL_JOBS_DIR=str(tmp_path / "jobs"),
        REDIS_URL=IMAGE_REDIS_URL,
    )
    log_path = tmp_path / "backend.log"
    log_file = log_path.open("w")
    server = subprocess.Popen(
        command, cwd=app_dir, env=env, stdout=log_file, stderr=subprocess.STDOUT
    )
    try:
        program, *args = _healthcheck_cmd("backend.Dockerfile")
        healthcheck = [str(venv / "bin" / program), *args]
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(
                healthcheck, cwd=app_dir, env=env, capture_output=True, text=True
            )
            if check.returncode == 0:
                break
            assert server.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, check.stderr
            time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log_file.close()

    env.pop("REDIS_URL")
    refused = subprocess.run(
        command, cwd=app_dir, env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines() == [
        "rexlabel backend: bad configuration: REDIS_URL is empty, so the model "
        "would run in this process, but REXLABEL_ENGINE=auto needs torch and "
        "transformers, which are not installed here: set REDIS_URL and run "
        "`rexlabel worker` where the model runs (the backend image works so), or "
        "install the engine here (pip install 'rexlabel[worker]' (and "
        "'rexlabel[vllm]' on GPUs))"
    ]
