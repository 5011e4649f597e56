"""docker/docker-compose.yml as Docker Compose itself resolves it.

Runs ``docker compose config --format json`` (the Compose v2 CLI: the ``docker``
plugin, a ``docker-compose`` v2 binary, or ``.venv-tools`` from
scripts/setup-docker-tools.sh; ``config`` needs no Docker engine) with a clean
environment, and checks what the set-up relies on: the services, Label Studio's
SSRF/local-files/legacy-token settings, Redis persistence, GPU reservations, the
rexlabel settings passed to backend and workers, and our entrypoints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from common import settings
from tests.test_docker_images import dockerfile_cmd

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker" / "docker-compose.yml"
SETTING_NAMES = {s.name for s in settings.SETTINGS}
BACKEND_COMMAND = [
    "gunicorn",
    "--config",
    "docker/gunicorn.conf.py",
    "backend.app:create_app()",
]
WORKER_COMMAND = ["rexlabel", "worker"]
GPU_RESERVATION = [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
PASSED_THROUGH = {"GUNICORN_CMD_ARGS", "HF_TOKEN", "HF_HUB_OFFLINE"}
"""Variables for libraries and tools that rexlabel services get besides settings."""
TEST_SECRETS = {
    "REDIS_PASSWORD": "test-redis-password-0f3a",
    "BASIC_AUTH_USER": "test-basic-user",
    "BASIC_AUTH_PASS": "test-basic-pass-8c1d",
    "REXLABEL_WEBHOOK_TOKEN": "test-webhook-token-5e2b",
    "LABEL_STUDIO_PASSWORD": "test-ls-password-77a0",
    "LABEL_STUDIO_USER_TOKEN": "test-ls-token-2b7e151628aed2a6",
}
"""Secrets the compose file requires (``${NAME:?...}``), given to every
``docker compose config`` here; a .env must set them."""


@cache
def compose_cli() -> tuple[str, ...] | None:
    """The Compose v2 command line available here, or None."""
    candidates = [("docker", "compose"), ("docker-compose",)]
    local = ROOT / ".venv-tools" / "bin" / "docker-compose"
    if local.exists():
        candidates.append((str(local),))
    for command in candidates:
        if shutil.which(command[0]) is None and not Path(command[0]).exists():
            continue
        try:
            done = subprocess.run(
                [*command, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0 and re.match(r"v?2\.", done.stdout.strip()):
            return command
    return None


def compose_config(
    *args: str, env: dict[str, str] | None = None, compose_file: Path = COMPOSE_FILE
) -> dict:
    command = compose_cli()
    if command is None:
        pytest.skip(
            "no Docker Compose v2 CLI (docker compose / docker-compose v2): run "
            "scripts/setup-docker-tools.sh"
        )
    clean = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(
        [*command, "-f", str(compose_file), *args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={**clean, **TEST_SECRETS, **(env or {})},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def config() -> dict:
    return compose_config("--profile", "vllm", "--profile", "dashboard")


def test_default_services_need_no_profile():
    services = compose_config()["services"]
    assert set(services) == {"label-studio", "redis", "backend", "worker"}


def test_all_services_with_profiles(config):
    assert set(config["services"]) == {
        "label-studio",
        "redis",
        "backend",
        "worker",
        "vllm",
        "worker-openai",
        "rq-dashboard",
    }


def test_label_studio_accepts_a_backend_on_the_compose_network(config):
    ls = config["services"]["label-studio"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    env = ls["environment"]
    assert env["ML_BLOCK_LOCAL_IP"] == "false"
    assert env["SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LOCAL_FILES_SERVING_ENABLED"] == "true"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    root = env["LOCAL_FILES_DOCUMENT_ROOT"]
    targets = {v["target"]: v for v in ls["volumes"]}
    assert targets["/label-studio/data"]["type"] == "volume"
    assert root in targets, "the local-files root is mounted"
    # the token Label Studio's first start creates is the one the backend uses
    token = env["LABEL_STUDIO_USER_TOKEN"]
    assert 5 < len(token) <= 40  # Label Studio ignores shorter, the DB holds 40
    for name in ("backend", "worker"):
        service_env = config["services"][name]["environment"]
        assert service_env["LABEL_STUDIO_API_KEY"] == token
        assert service_env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
        assert service_env["LOCAL_FILES_DOCUMENT_ROOT"] == root


def test_redis_keeps_job_records(config):
    redis = config["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert [v["target"] for v in redis["volumes"]] == ["/data"]
    assert "ports" not in redis, "Redis must not be published on the host"
    password = TEST_SECRETS["REDIS_PASSWORD"]
    assert command[command.index("--requirepass") + 1] == password
    url = f"redis://:{password}@redis:6379/0"
    for name in ("backend", "worker", "worker-openai"):
        service = config["services"][name]
        assert service["environment"]["REDIS_URL"] == url
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    dashboard = config["services"]["rq-dashboard"]["environment"]
    assert dashboard["RQ_DASHBOARD_REDIS_URL"] == url


def test_redis_needs_a_password():
    command = compose_cli()
    if command is None:
        pytest.skip("no Docker Compose v2 CLI: run scripts/setup-docker-tools.sh")
    done = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/tmp"),
            **{k: v for k, v in TEST_SECRETS.items() if k != "REDIS_PASSWORD"},
        },
        timeout=60,
    )
    assert not done.stdout.strip(), "the stack resolved without REDIS_PASSWORD"
    assert "REDIS_PASSWORD" in done.stderr and "openssl rand" in done.stderr


@pytest.mark.parametrize(
    "name",
    [
        "BASIC_AUTH_USER",
        "BASIC_AUTH_PASS",
        "REXLABEL_WEBHOOK_TOKEN",
        "LABEL_STUDIO_PASSWORD",
        "LABEL_STUDIO_USER_TOKEN",
    ],
)
def test_the_stack_has_no_default_credentials(name):
    """Each credential comes from .env: unset or empty, the stack does not
    resolve, and the error names it (no demo password or token to fall back on)."""
    command = compose_cli()
    if command is None:
        pytest.skip("no Docker Compose v2 CLI: run scripts/setup-docker-tools.sh")
    for given in ({}, {name: ""}):
        secrets = {k: v for k, v in TEST_SECRETS.items() if k != name}
        done = subprocess.run(
            [*command, "-f", str(COMPOSE_FILE), "config", "--format", "json"],
            capture_output=True,
            text=True,
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
            | secrets
            | given,
            timeout=60,
        )
        assert not done.stdout.strip(), f"the stack resolved without {name}"
        assert f"set {name} in docker/.env" in done.stderr


def test_the_backend_listens_on_all_interfaces_with_credentials(config):
    env = config["services"]["backend"]["environment"]
    assert env["REXLABEL_HOST"] == "0.0.0.0"  # Label Studio is another container
    for name in ("BASIC_AUTH_USER", "BASIC_AUTH_PASS", "REXLABEL_WEBHOOK_TOKEN"):
        assert env[name] == TEST_SECRETS[name]


def test_redis_health_check_logs_in(config, tmp_path):
    """The health check, run as Compose would, against a redis-server that
    requires the password: PONG with it, a failure without it."""
    from tests.security.conftest import redis_server

    redis = config["services"]["redis"]
    kind, script = redis["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    password = TEST_SECRETS["REDIS_PASSWORD"]
    with redis_server(tmp_path, password) as url:
        port = url.rsplit(":", 1)[1].split("/")[0]
        local = script.replace("redis-cli", f"redis-cli -p {port}")
        for env, healthy in ((redis["environment"], True), ({}, False)):
            done = subprocess.run(
                ["sh", "-c", local],
                env={"PATH": os.environ["PATH"], **env},
                capture_output=True,
                timeout=30,
            )
            assert (done.returncode == 0) is healthy, done


def test_gpu_reservations(config):
    services = config["services"]
    for name in ("worker", "vllm"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == GPU_RESERVATION, name
    assert services["worker"]["deploy"]["replicas"] == 1
    openai_deploy = services["worker-openai"]["deploy"]
    assert not openai_deploy.get("resources", {}).get("reservations")
    assert openai_deploy["replicas"] >= 1


def _documented_gpu_override() -> str:
    """The one-worker-per-GPU override file docs/deploy.md shows."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split("### Several workers, several GPUs", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_documented_override_pins_one_gpu_per_worker(tmp_path):
    stack = tmp_path / "docker"
    stack.mkdir()
    shutil.copy(COMPOSE_FILE, stack / "docker-compose.yml")
    (stack / "docker-compose.override.yml").write_text(_documented_gpu_override())
    services = compose_config(
        "-f",
        str(stack / "docker-compose.override.yml"),
        compose_file=stack / "docker-compose.yml",
    )["services"]
    for name, gpu in (("worker", "0"), ("worker-gpu1", "1")):
        deploy = services[name]["deploy"]
        assert deploy["replicas"] == 1
        (device,) = deploy["resources"]["reservations"]["devices"]
        assert device["device_ids"] == [gpu] and "count" not in device, name
        assert services[name]["command"] == services["worker"]["command"]
        assert services[name]["environment"] == services["worker"]["environment"]


def test_backend_and_workers_get_every_setting_and_valid_values(config):
    for name in ("backend", "worker", "worker-openai"):
        env = config["services"][name]["environment"]
        assert set(env) - PASSED_THROUGH == SETTING_NAMES, name
        given = {k: v for k, v in env.items() if v is not None}
        settings.read_all(given)  # raises SettingsError naming a bad value


def test_env_example_and_compose_agree_on_the_settings(config):
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
    env = config["services"]["backend"]["environment"]
    assert documented & set(env) == set(env), "backend variables in .env.example"
    for name, value in env.items():  # a compose default is shown in .env.example
        if value is not None and name in SETTING_NAMES:
            for secret, given in TEST_SECRETS.items():
                value = value.replace(given, "${" + secret + "}")
            assert f"(docker-compose.yml uses {value})" in example, name


def test_dotenv_values_reach_the_services(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "LOG_FORMAT=json\nREXLABEL_GPU_WORKERS=0\nPORT=9191\n"
        "LABEL_STUDIO_API_KEY=my-personal-access-token\n"
    )
    services = compose_config("--env-file", str(dotenv))["services"]
    assert services["worker"]["environment"]["LOG_FORMAT"] == "json"
    assert services["worker"]["deploy"]["replicas"] == 0
    assert services["backend"]["environment"]["PORT"] == "9191"
    assert services["backend"]["ports"][0]["target"] == 9191
    assert services["backend"]["environment"]["LABEL_STUDIO_API_KEY"] == (
        "my-personal-access-token"
    )


def test_services_run_our_entrypoints(config):
    services = config["services"]
    assert services["backend"]["command"] == BACKEND_COMMAND
    assert services["worker"]["command"] == WORKER_COMMAND
    assert services["worker-openai"]["command"] == WORKER_COMMAND
    # the same commands as the images' CMD
    assert dockerfile_cmd("backend.Dockerfile") == BACKEND_COMMAND
    assert dockerfile_cmd("worker.Dockerfile") == WORKER_COMMAND
    # and they name real code: the console script and the app factory
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'rexlabel = "backend.cli:main"' in pyproject
    from backend import app

    assert callable(app.create_app)


def test_vllm_profile_points_thin_workers_at_the_server(config):
    services = config["services"]
    command = services["vllm"]["command"]
    assert (
        command[command.index("--model") + 1]
        == settings.setting("REXLABEL_MODEL").default
    )
    assert command[command.index("--tokenizer-mode") + 1] == "slow"
    assert command[command.index("--max-model-len") + 1] == str(
        settings.setting("REXLABEL_VLLM_MAX_MODEL_LEN").default
    )
    assert json.loads(command[command.index("--limit-mm-per-prompt") + 1]) == {
        "image": 1
    }
    env = services["worker-openai"]["environment"]
    assert env["REXLABEL_ENGINE"] == "openai"
    assert env["REXLABEL_OPENAI_URL"] == "http://vllm:8000/v1"
    assert services["worker-openai"]["depends_on"]["vllm"]["condition"] == (
        "service_healthy"
    )


def test_weights_live_in_volumes(config):
    volumes = {v["target"]: v for v in config["services"]["worker"]["volumes"]}
    assert volumes["/models/hf"]["type"] == "volume"
    assert volumes["/checkpoints"]["read_only"] is True
    assert "hf-cache" in config["volumes"]
