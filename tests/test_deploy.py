"""The compose backend and worker, run outside Docker as the compose file runs them.

The commands and environments come from docker/docker-compose.yml itself
(``docker compose config`` when the Compose CLI is here, else the YAML read with
Compose's ``${VAR:-default}`` rules), with a ``.env`` that points the stack at
this machine: Redis on 127.0.0.1 (its own database), a local stand-in for Label
Studio that serves the task image with the compose file's token, the tiny
test model (random weights: this checks the plumbing, not what it finds),
loopback ports. A prediction then goes Label Studio -> backend ->
Redis -> worker -> backend, and the operations side is checked on the way: the
JSON job line (task ids, timings, tokens, no token), both /metrics endpoints,
both health checks, and ``rexlabel doctor``.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from redis import Redis

from tests.fake_label_studio import FakeLabelStudio
from tests.test_compose import compose_cli

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
BIN = Path(sys.executable).parent
REDIS_URL = "redis://127.0.0.1:6379/13"
"""A database no other test module uses (12: backend, 14: e2e, 1-9: worker)."""
START_TIMEOUT_S = 180.0
"""Backend (Flask, SDK imports) and worker (torch, model load) start within this
on a busy 2-core machine."""
PREDICT_TIMEOUT_S = 180.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` (nested), innermost first."""
    pattern = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^${}]*))?\}")
    while True:
        new = pattern.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)
        if new == text:
            return new
        text = new


def compose_services(dotenv: Path) -> dict:
    """The services as Compose resolves them with ``dotenv`` as the .env."""
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    command = compose_cli()
    if command is not None:
        done = subprocess.run(
            [
                *command,
                "-f",
                str(COMPOSE_FILE),
                "--env-file",
                str(dotenv),
                "config",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            env=clean,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["services"]
    yaml = pytest.importorskip("yaml", reason="no Compose CLI and no PyYAML")
    env = dict(
        line.split("=", 1)
        for line in dotenv.read_text().splitlines()
        if line and not line.startswith("#")
    )
    return yaml.safe_load(_interpolate(COMPOSE_FILE.read_text(), env))["services"]


def _process_env(service: dict) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("LABEL_STUDIO_", "REXLABEL_", "REDIS_", "BASIC_AUTH_", "SAM_", "LOG_")
        )
        and k not in ("PORT", "LOCAL_FILES_DOCUMENT_ROOT")
    }
    given = {
        k: str(v)
        for k, v in (service.get("environment") or {}).items()
        if v is not None
    }
    return {**env, **given, "PYTHONUNBUFFERED": "1"}


def _executable(command: list[str]) -> list[str]:
    """The compose command with its program taken from this venv."""
    program = BIN / command[0]
    assert program.exists(), f"{command[0]} is not installed in {BIN}"
    return [str(program), *command[1:]]


class Service:
    def __init__(self, name: str, command: list[str], env: dict, log: Path) -> None:
        self.name, self.log = name, log
        self.handle = log.open("w")
        self.popen = subprocess.Popen(
            _executable(command),
            cwd=ROOT,
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        if not self.handle.closed:
            self.handle.flush()
        return self.log.read_text()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.handle.close()


def _wait(what: str, check, timeout: float, *services: Service) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            if service.popen.poll() is not None:
                pytest.fail(
                    f"{service.name} exited while waiting for {what}:\n"
                    f"{service.output()[-4000:]}"
                )
        try:
            if check():
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    logs = "\n".join(f"--- {s.name}\n{s.output()[-3000:]}" for s in services)
    pytest.fail(f"timed out waiting for {what}\n{logs}")


@pytest.fixture
def redis_db():
    conn = Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except Exception as exc:  # pragma: no cover - CI starts Redis
        pytest.skip(f"Redis is not running on 127.0.0.1:6379: {exc}")
    conn.flushdb()
    yield conn
    conn.flushdb()
    conn.close()


@pytest.mark.slow
def test_compose_commands_serve_a_prediction(tmp_path, redis_db, tiny_model_dir):
    from worker.synthetic import held_out_samples

    sample = held_out_samples(1)[0]
    buffer = io.BytesIO()
    sample.image.save(buffer, "PNG")
    config = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image">'
        f'<Label value="{sample.phrase}"/></RectangleLabels></View>'
    )
    backend_port, metrics_port = _free_port(), _free_port()
    dotenv = tmp_path / ".env"
    with FakeLabelStudio(legacy_enabled=True) as ls:
        dotenv.write_text(
            "\n".join(
                [
                    f"LABEL_STUDIO_URL={ls.url}",
                    f"REDIS_URL={REDIS_URL}",
                    f"PORT={backend_port}",
                    "REXLABEL_HOST=127.0.0.1",
                    f"REXLABEL_MODEL={tiny_model_dir}",
                    "REXLABEL_DEVICE=cpu",
                    "REXLABEL_MAX_NEW_TOKENS=48",  # random weights: keep it short
                    f"REXLABEL_WORKER_METRICS_PORT={metrics_port}",
                    "REXLABEL_WORKER_METRICS_HOST=127.0.0.1",
                    f"REXLABEL_JOBS_DIR={tmp_path / 'jobs'}",
                    f"LOCAL_FILES_DOCUMENT_ROOT={tmp_path / 'files'}",
                    "LOG_FORMAT=json",
                    "HF_HUB_OFFLINE=1",
                ]
            )
            + "\n"
        )
        services = compose_services(dotenv)
        backend_service, worker_service = services["backend"], services["worker"]
        # the compose file's own token for Label Studio reaches both services
        token = worker_service["environment"]["LABEL_STUDIO_API_KEY"]
        assert backend_service["environment"]["LABEL_STUDIO_API_KEY"] == token
        ls.legacy_token = token
        ls.files = {"1/shape.png": buffer.getvalue()}
        ls.add_project(1, config, title="shapes")
        task = {"id": 7, "data": {"image": "/data/upload/1/shape.png"}}
        ls.add_task(1, task["id"], task["data"])

        worker = Service(
            "worker",
            worker_service["command"],
            _process_env(worker_service),
            tmp_path / "worker.log",
        )
        backend = Service(
            "backend",
            backend_service["command"],
            _process_env(backend_service),
            tmp_path / "backend.log",
        )
        url = f"http://127.0.0.1:{backend_port}"
        try:
            _wait(
                "backend /health with a worker listening",
                lambda: requests.get(f"{url}/health", timeout=2).json()["workers_up"],
                START_TIMEOUT_S,
                worker,
                backend,
            )
            body = {
                "tasks": [task],
                "project": "1.1700000000",
                "label_config": config,
                "params": {"login": None, "password": None, "context": None},
            }
            reply = requests.post(
                f"{url}/predict", json=body, timeout=PREDICT_TIMEOUT_S
            )
            assert reply.status_code == 200, reply.text
            answer = reply.json()
            (result,) = answer["results"]
            assert result["model_version"] == answer["model_version"]
            assert "errors" not in answer, answer
            for region in result["result"]:  # whatever random weights wrote
                assert region["value"]["rectanglelabels"] == [sample.phrase]

            # operations: metrics on both sides, health checks, doctor
            backend_metrics = requests.get(f"{url}/metrics", timeout=10).text
            assert re.search(
                r'rexlabel_requests_total\{endpoint="/predict",method="POST",'
                r'status="200"\} 1\.0',
                backend_metrics,
            )
            assert "rexlabel_redis_up 1.0" in backend_metrics
            assert 'rexlabel_workers{queue="rexlabel:interactive"} 1.0' in (
                backend_metrics
            )
            worker_metrics = requests.get(
                f"http://127.0.0.1:{metrics_port}/metrics", timeout=10
            ).text
            assert re.search(
                r'rexlabel_jobs_total\{queue="rexlabel:interactive",status="done"\} '
                r"1\.0",
                worker_metrics,
            )
            assert 'rexlabel_images_total{status="ok"} 1.0' in worker_metrics
            for role, service in (
                ("backend", backend_service),
                ("worker", worker_service),
            ):
                check = subprocess.run(
                    [sys.executable, "docker/healthcheck.py", role],
                    cwd=ROOT,
                    env=_process_env(service),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert check.returncode == 0, (role, check.stderr)
            doctor = subprocess.run(
                [str(BIN / "rexlabel"), "doctor"],
                cwd=ROOT,
                env=_process_env(worker_service),
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert doctor.returncode == 0, doctor.stdout + doctor.stderr
            assert "OK    image download" in doctor.stdout
        finally:
            backend.stop()
            worker.stop()
        worker_log = worker.output()

    # one JSON job line in the worker's log, with the task id, timings and tokens
    lines = [
        json.loads(line) for line in worker_log.splitlines() if line.startswith("{")
    ]
    (job,) = [line for line in lines if line.get("event") == "job"]
    assert job["task_ids"] == [7] and job["images"] == 1
    assert job["generate_s"] > 0 and job["prompt_tokens"] > 0
    assert job["output_tokens"] > 0
    for phase in ("download_s", "preprocess_s", "parse_s", "sam_s", "write_s"):
        assert phase in job
    backend_log = backend.output()
    assert token not in worker_log and token not in backend_log
    # LOG_FORMAT=json: every backend line (gunicorn's own included) is JSON
    for line in backend_log.splitlines():
        assert json.loads(line)["level"], line
