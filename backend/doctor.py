"""Checks behind ``rexlabel doctor``: what is wrong with this set-up, and the fix.

Each check returns :class:`Check` rows (ok / warn / fail / skip) with a detail
and, when something is wrong, how to fix it. Checks never raise: an unexpected
error becomes a ``fail`` row naming the check.

- settings: every variable parses (``common.settings``);
- Redis: reachable, persistence on, RQ workers listening on rexlabel's queues;
- Label Studio: reachable, the token accepted (a personal access token is
  exchanged for an access token first), one task image downloaded;
- model: a local directory with config, processor and weights, the Hugging Face
  cache, or the OpenAI-compatible server and its model list;
- GPU: ``nvidia-smi``, else torch in a subprocess (this process never imports
  torch), against ``REXLABEL_DEVICE``;
- SAM: the checkpoint file and its model type.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import requests

from common import settings

HTTP_TIMEOUT_S = 5.0
"""Each HTTP probe waits this long: a healthy service answers in milliseconds."""
REDIS_TIMEOUT_S = 2.0
"""Connect/read timeout of the Redis probe."""
GPU_PROBE_TIMEOUT_S = 120.0
"""nvidia-smi or a torch import in a subprocess: importing torch with CUDA can
take tens of seconds on a cold disk."""
LS_PAGE_SIZE = 1
"""The image check needs one project and one task."""

HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
"""``owner/name`` on the Hugging Face hub; anything else must be a directory."""
MODEL_CONFIG_FILES = ("config.json",)
MODEL_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
MODEL_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MODEL_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


class Status(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Check:
    """One finding: ``name`` of the check, ``status``, ``detail``, ``fix``."""

    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        data = asdict(self)
        data["status"] = self.status.value
        return data


def _ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def _warn(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, Status.WARN, detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, Status.SKIP, detail)


# Settings ---------------------------------------------------------------------


def read_settings(
    environ: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], list[Check]]:
    """Every setting's value (the default where the value is bad) and a row per
    bad variable (or one ``ok`` row)."""
    values: dict[str, Any] = {}
    checks: list[Check] = []
    for item in settings.SETTINGS:
        try:
            values[item.name] = item.read(environ)
        except settings.SettingsError as exc:
            values[item.name] = item.default
            checks.append(
                _fail(
                    "settings",
                    str(exc),
                    f"fix {item.name} ({item.reason}); `rexlabel config` lists all",
                )
            )
    if not checks:
        checks.append(_ok("settings", f"{len(values)} variables parse"))
    return values, checks


# Redis ------------------------------------------------------------------------


def check_redis(url: str, queues: tuple[str, ...] | None = None) -> list[Check]:
    """Redis reachable, AOF persistence on, a worker listening on each queue."""
    if not url:
        return [
            _ok(
                "redis",
                "REDIS_URL is not set: jobs run inside the backend process "
                "(one machine, no queue)",
            )
        ]
    from redis.exceptions import RedisError

    from common.redis_conn import redis_connection

    shown = _redis_display(url)
    try:
        conn = redis_connection(url, purpose="doctor", timeout=REDIS_TIMEOUT_S)
        conn.ping()
    except (RedisError, OSError, ValueError) as exc:
        return [
            _fail(
                "redis",
                f"cannot reach Redis at {shown}: {exc}",
                "start Redis or fix REDIS_URL (in Docker Compose: "
                "redis://:PASSWORD@redis:6379/0; leave it empty to run jobs "
                "in-process)",
            )
        ]
    checks = [_ok("redis", f"Redis at {shown} answers")]
    checks.append(_check_persistence(conn))
    checks.append(_check_workers(conn, queues))
    return checks


def _redis_display(url: str) -> str:
    from common.redaction import redact_text

    return redact_text(url)


def _check_persistence(conn: Any) -> Check:
    try:
        appendonly = conn.config_get("appendonly").get("appendonly")
    except Exception as exc:  # managed Redis often forbids CONFIG
        return _skip("redis persistence", f"cannot read Redis' config: {exc}")
    if appendonly == "yes":
        return _ok("redis persistence", "append-only file on: job records survive")
    return _warn(
        "redis persistence",
        "append-only file off: bulk job progress is lost if Redis restarts",
        "start redis-server with --appendonly yes (the compose file does)",
    )


def _check_workers(conn: Any, queues: tuple[str, ...] | None) -> Check:
    from rq import Queue, Worker

    if queues is None:
        from common.queues import QUEUES as queues
    counts = {}
    depths = {}
    for name in queues:
        queue = Queue(name, connection=conn)
        counts[name] = Worker.count(connection=conn, queue=queue)
        depths[name] = queue.count
    waiting = ", ".join(f"{name}: {depths[name]} waiting" for name in queues)
    idle = [name for name, count in counts.items() if not count]
    if idle:
        return _fail(
            "workers",
            f"no worker listens on {', '.join(idle)} ({waiting})"
            + _unregistered_workers(conn),
            "start `rexlabel worker` with the same REDIS_URL (compose: the worker "
            "service); a worker registers once its model is loaded",
        )
    listening = ", ".join(f"{name}: {counts[name]}" for name in queues)
    return _ok("workers", f"workers listening ({listening}; {waiting})")


def _unregistered_workers(conn: Any) -> str:
    """What workers not registered yet published (``common.model_state``):
    still loading the model, or failed to load it and why; else ""."""
    from common.model_state import FAILED, LOADING, read_states, summarize_workers

    try:
        summary = summarize_workers(0, read_states(conn))
    except Exception:  # an extra hint only: the failure above stands without it
        return ""
    if summary["state"] == LOADING:
        return f"; {summary['loading']} worker(s) still loading the model"
    if summary["state"] == FAILED:
        return f"; a worker failed to load the model: {summary['reason']}"
    return ""


# Label Studio -----------------------------------------------------------------


def _image_key(label_config: str) -> str | None:
    """The task data key of the first ``<Image value="$key">`` in a config."""
    match = re.search(r"<Image\b[^>]*\bvalue=\"\$([\w.-]+)\"", label_config or "")
    return match.group(1) if match else None


def _first_task_image(
    session: requests.Session, url: str, headers: dict[str, str], project: int | None
) -> tuple[str, int] | None:
    """(image reference, task id) of the first task with an image, or None."""
    if project is None:
        response = session.get(
            f"{url}/api/projects/",
            params={"page_size": LS_PAGE_SIZE},
            headers=headers,
            timeout=HTTP_TIMEOUT_S,
        )
        response.raise_for_status()
        data = response.json()
        projects = data.get("results", []) if isinstance(data, dict) else data
        if not projects:
            return None
        project, label_config = projects[0]["id"], projects[0].get("label_config", "")
    else:
        response = session.get(
            f"{url}/api/projects/{int(project)}/",
            headers=headers,
            timeout=HTTP_TIMEOUT_S,
        )
        response.raise_for_status()
        label_config = response.json().get("label_config", "")
    response = session.get(
        f"{url}/api/tasks/",
        params={"project": project, "page_size": LS_PAGE_SIZE},
        headers=headers,
        timeout=HTTP_TIMEOUT_S,
    )
    response.raise_for_status()
    data = response.json()
    tasks = data.get("tasks", []) if isinstance(data, dict) else data
    if not tasks:
        return None
    task = tasks[0]
    task_data = task.get("data", {})
    key = _image_key(label_config)
    value = task_data.get(key) if key else None
    if not isinstance(value, str):
        value = next((v for v in task_data.values() if isinstance(v, str)), None)
    return (value, int(task["id"])) if value else None


def check_label_studio(
    values: Mapping[str, Any],
    *,
    image: str | None = None,
    task_id: int | None = None,
    project: int | None = None,
    session: requests.Session | None = None,
) -> list[Check]:
    """Label Studio reachable, token accepted, one task image downloaded.

    ``image`` (and ``task_id``) test that reference instead of the first task
    of ``project`` (default: the first project).
    """
    from common.labelstudio.auth import LabelStudioAuth, TokenExchangeError

    url = str(values["LABEL_STUDIO_URL"]).rstrip("/")
    token = str(values["LABEL_STUDIO_API_KEY"])
    session = session or requests.Session()
    if not url:
        return [
            _warn(
                "label studio",
                "LABEL_STUDIO_URL is not set: only local paths and allowed URLs "
                "can be loaded; project jobs cannot run",
                "set LABEL_STUDIO_URL to where this machine reaches Label Studio "
                "(compose: http://label-studio:8080)",
            )
        ]
    try:
        response = session.get(f"{url}/health", timeout=HTTP_TIMEOUT_S)
        up = response.ok and response.json().get("status") == "UP"
    except (requests.RequestException, ValueError) as exc:
        return [
            _fail(
                "label studio",
                f"cannot reach Label Studio at {url}: {exc}",
                "fix LABEL_STUDIO_URL; inside Docker use the service name "
                "(http://label-studio:8080), since localhost is the container itself",
            )
        ]
    if not up:
        return [
            _fail(
                "label studio",
                f"{url}/health answered HTTP {response.status_code}, not Label "
                "Studio's {'status': 'UP'}",
                "point LABEL_STUDIO_URL at Label Studio's base URL",
            )
        ]
    checks = [_ok("label studio", f"Label Studio at {url} is up")]

    if not token:
        checks.append(
            _fail(
                "label studio token",
                "LABEL_STUDIO_API_KEY is not set: task images stored in Label "
                "Studio cannot be downloaded",
                "create a Personal Access Token (Account & Settings) and set "
                "LABEL_STUDIO_API_KEY",
            )
        )
        return checks
    auth = LabelStudioAuth(url, token, session=session)
    try:
        headers = auth.headers()  # exchanges a personal access token
        response = session.get(
            f"{url}/api/current-user/whoami", headers=headers, timeout=HTTP_TIMEOUT_S
        )
    except TokenExchangeError as exc:
        checks.append(
            _fail(
                "label studio token",
                str(exc),
                "create a new Personal Access Token (Account & Settings) and set "
                "LABEL_STUDIO_API_KEY",
            )
        )
        return checks
    except requests.RequestException as exc:
        checks.append(_fail("label studio token", f"whoami failed: {exc}", "retry"))
        return checks
    kinds = {
        "legacy": "legacy token",
        "pat": "personal access token (exchanged for an access token)",
        "access": "access token (expires in minutes: prefer a personal access token)",
    }
    if response.status_code in (401, 403):
        fix = (
            "new organizations disable legacy tokens: use a Personal Access Token, "
            "or enable legacy tokens in Organization settings"
            if auth.kind == "legacy"
            else "create a new Personal Access Token and set LABEL_STUDIO_API_KEY"
        )
        checks.append(
            _fail(
                "label studio token",
                f"Label Studio rejected the {kinds[auth.kind]} in "
                f"LABEL_STUDIO_API_KEY (HTTP {response.status_code})",
                fix,
            )
        )
        return checks
    try:
        user = response.json().get("email") or response.json().get("username") or "?"
    except ValueError:
        user = "?"
    checks.append(
        _ok("label studio token", f"{kinds[auth.kind]} accepted (user {user})")
    )
    checks.append(
        _check_image(values, session, url, headers, image, task_id, project, auth)
    )
    return checks


def _check_image(
    values: Mapping[str, Any],
    session: requests.Session,
    url: str,
    headers: dict[str, str],
    image: str | None,
    task_id: int | None,
    project: int | None,
    auth: Any,
) -> Check:
    from common.images.decode import DEFAULT_MAX_IMAGE_PIXELS
    from common.images.errors import ImageLoadError
    from common.images.loader import ImageLoader

    if image is None:
        try:
            found = _first_task_image(session, url, headers, project)
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            return _fail(
                "image download",
                f"cannot list projects/tasks: {exc}",
                "check that the token's user can see the project",
            )
        if found is None:
            return _skip(
                "image download",
                "no task with an image yet: import one, or pass --image REF",
            )
        image, task_id = found
    loader = ImageLoader(
        label_studio_url=url,
        token=str(values["LABEL_STUDIO_API_KEY"]),
        allowed_hosts=values.get("REXLABEL_ALLOWED_HOSTS", ""),
        local_files_root=values.get("LOCAL_FILES_DOCUMENT_ROOT", ""),
        max_pixels=values.get("REXLABEL_MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
        cache_bytes=0,  # a cached image would prove nothing
        session=session,
    )
    try:
        picture = loader.load(image, task_id=task_id)
    except ImageLoadError as exc:
        return _fail(
            "image download",
            str(exc),
            "check the token and LABEL_STUDIO_URL; for local files set "
            "LOCAL_FILES_DOCUMENT_ROOT; for other hosts REXLABEL_ALLOWED_HOSTS",
        )
    where = f"task {task_id}" if task_id is not None else "given reference"
    return _ok(
        "image download",
        f"{image} ({where}) downloaded: {picture.width}x{picture.height}",
    )


# Model ------------------------------------------------------------------------


def _has_worker_install() -> bool:
    return importlib.util.find_spec("torch") is not None


def check_model(
    values: Mapping[str, Any], session: requests.Session | None = None
) -> Check:
    """The weights the worker will load, or the server the openai engine calls."""
    engine = values["REXLABEL_ENGINE"]
    model = str(values["REXLABEL_MODEL"])
    if engine == "openai":
        return _check_openai_server(values, session or requests.Session())
    if not _has_worker_install():
        return _skip(
            "model",
            "no worker install here (torch is missing): run `rexlabel doctor` "
            "where workers run",
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return _check_model_dir(path)
    if not HUB_ID.fullmatch(model):
        return _fail(
            "model",
            f"REXLABEL_MODEL={model} is not a directory",
            "point REXLABEL_MODEL at the downloaded weights, or use the hub id "
            "IDEA-Research/Rex-Omni",
        )
    return _check_hub_cache(model)


def _check_model_dir(path: Path) -> Check:
    missing = []
    for group in (MODEL_CONFIG_FILES, MODEL_PROCESSOR_FILES, MODEL_TOKENIZER_FILES):
        if not any((path / name).is_file() for name in group):
            missing.append(" or ".join(group))
    if not any(any(path.glob(p)) for p in MODEL_WEIGHT_PATTERNS):
        missing.append("weights (*.safetensors)")
    if missing:
        return _fail(
            "model",
            f"{path} lacks {', '.join(missing)}",
            "download the complete model (huggingface-cli download "
            "IDEA-Research/Rex-Omni --local-dir DIR)",
        )
    return _ok("model", f"local model directory {path}")


def _check_hub_cache(repo_id: str) -> Check:
    if importlib.util.find_spec("huggingface_hub") is None:
        return _skip("model", "huggingface_hub is not installed here")
    from huggingface_hub import constants, try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(config, str):
        snapshot = Path(config).parent
        if any(any(snapshot.glob(p)) for p in MODEL_WEIGHT_PATTERNS):
            return _ok("model", f"{repo_id} is in the Hugging Face cache ({snapshot})")
        return _warn(
            "model",
            f"{repo_id}: config cached in {snapshot} but no weights yet",
            "let the worker finish its first download, or run "
            f"huggingface-cli download {repo_id}",
        )
    cache = constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE:
        return _fail(
            "model",
            f"{repo_id} is not in the cache {cache} and HF_HUB_OFFLINE is set",
            f"download it first (huggingface-cli download {repo_id}) or unset "
            "HF_HUB_OFFLINE",
        )
    return _warn(
        "model",
        f"{repo_id} is not in the cache {cache}: the first worker start downloads "
        "it (about 8 GB)",
        "mount a persistent volume at HF_HOME so it is downloaded once",
    )


def _check_openai_server(values: Mapping[str, Any], session: requests.Session) -> Check:
    url = str(values["REXLABEL_OPENAI_URL"]).rstrip("/")
    if not url:
        return _fail(
            "model",
            "REXLABEL_ENGINE=openai but REXLABEL_OPENAI_URL is not set",
            "set REXLABEL_OPENAI_URL (compose vllm profile: http://vllm:8000/v1)",
        )
    headers = {"Authorization": f"Bearer {values['REXLABEL_OPENAI_API_KEY']}"}
    try:
        response = session.get(f"{url}/models", headers=headers, timeout=HTTP_TIMEOUT_S)
        response.raise_for_status()
        served = [m.get("id") for m in response.json().get("data", [])]
    except (requests.RequestException, ValueError, AttributeError) as exc:
        return _fail(
            "model",
            f"OpenAI-compatible server at {url} did not list its models: {exc}",
            "start it (vllm serve IDEA-Research/Rex-Omni --tokenizer-mode slow) "
            "or fix REXLABEL_OPENAI_URL / REXLABEL_OPENAI_API_KEY",
        )
    model = values["REXLABEL_MODEL"]
    if model not in served:
        return _fail(
            "model",
            f"{url} serves {served}, not REXLABEL_MODEL={model}",
            "set REXLABEL_MODEL to the served model name",
        )
    return _ok("model", f"{url} serves {model}")


# GPU --------------------------------------------------------------------------

_TORCH_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps({'cuda': n, 'names': "
    "[torch.cuda.get_device_name(i) for i in range(n)]}))\n"
)


def probe_gpus(
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> tuple[list[str], str]:
    """(GPU descriptions, how they were found); never imports torch here."""
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi:
        done = run(
            [
                nvidia_smi,
                "--query-gpu=name,memory.total",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=GPU_PROBE_TIMEOUT_S,
        )
        if done.returncode == 0:
            gpus = [line.strip() for line in done.stdout.splitlines() if line.strip()]
            return gpus, "nvidia-smi"
    if importlib.util.find_spec("torch") is None:
        return [], "no nvidia-smi and no torch"
    done = run(
        [sys.executable, "-c", _TORCH_PROBE],
        capture_output=True,
        text=True,
        timeout=GPU_PROBE_TIMEOUT_S,
    )
    if done.returncode != 0:
        return [], f"torch probe failed: {done.stderr.strip()[-300:]}"
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return list(found["names"]), "torch"


def check_gpu(
    values: Mapping[str, Any],
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> Check:
    """GPUs visible to this machine, against ``REXLABEL_DEVICE``."""
    device = str(values["REXLABEL_DEVICE"])
    if values["REXLABEL_ENGINE"] == "openai" and not values.get("SAM_CHECKPOINT"):
        return _skip("gpu", "the openai engine runs the model on its server")
    if not _has_worker_install():
        return _skip("gpu", "no worker install here: run doctor where workers run")
    if device == "cpu":
        return _ok("gpu", "REXLABEL_DEVICE=cpu: running on the CPU (slow, by choice)")
    try:
        gpus, how = probe_gpus(run)
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        gpus, how = [], f"probe failed: {exc}"
    if gpus:
        return _ok("gpu", f"{len(gpus)} GPU(s) via {how}: {'; '.join(gpus)}")
    if device.startswith("cuda"):
        return _fail(
            "gpu",
            f"REXLABEL_DEVICE={device} but no GPU is visible ({how})",
            "install the NVIDIA driver and container toolkit, and reserve a GPU "
            "(compose: deploy.resources.reservations.devices), or set "
            "REXLABEL_DEVICE=cpu",
        )
    return _warn(
        "gpu",
        f"no GPU visible ({how}): REXLABEL_DEVICE=auto will run on the CPU, "
        "minutes per image",
        "run workers on a GPU machine, or use REXLABEL_ENGINE=openai",
    )


# SAM --------------------------------------------------------------------------


def check_sam(values: Mapping[str, Any]) -> Check:
    """The segment-anything checkpoint exists and its model type is known."""
    checkpoint = str(values["SAM_CHECKPOINT"])
    if not checkpoint:
        return _skip(
            "sam",
            "SAM_CHECKPOINT is not set: Polygon/Brush labels and point clicks "
            "get no masks",
        )
    path = Path(checkpoint).expanduser()
    if not path.is_file() or path.stat().st_size == 0:
        return _fail(
            "sam",
            f"SAM_CHECKPOINT={checkpoint} is not a readable, non-empty file",
            "download a checkpoint (e.g. sam_vit_h_4b8939.pth) and mount it "
            "(compose: ./checkpoints -> /checkpoints)",
        )
    from worker.sam import model_type_from_checkpoint

    model_type = values.get("SAM_MODEL_TYPE") or model_type_from_checkpoint(path)
    if not model_type:
        return _fail(
            "sam",
            f"cannot tell the model type of {path.name}",
            "set SAM_MODEL_TYPE to vit_h, vit_l or vit_b",
        )
    if _has_worker_install() and importlib.util.find_spec("segment_anything") is None:
        return _fail(
            "sam", "segment_anything is not installed", "pip install '.[worker]'"
        )
    size_mb = path.stat().st_size / 1024**2
    return _ok("sam", f"{path} ({model_type}, {size_mb:.0f} MB)")


# All --------------------------------------------------------------------------


def run_checks(
    environ: Mapping[str, str] | None = None,
    *,
    image: str | None = None,
    task_id: int | None = None,
    project: int | None = None,
    queues: tuple[str, ...] | None = None,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
) -> list[Check]:
    """Every check, in the order a set-up is built."""
    values, checks = read_settings(environ)
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("redis", lambda: check_redis(values["REDIS_URL"], queues)),
        (
            "label studio",
            lambda: check_label_studio(
                values, image=image, task_id=task_id, project=project
            ),
        ),
        ("model", lambda: check_model(values)),
        ("gpu", lambda: check_gpu(values, run)),
        ("sam", lambda: check_sam(values)),
    ]
    for name, step in steps:
        try:
            found = step()
        except Exception as exc:  # a check must report, not crash the doctor
            found = _fail(name, f"the check itself failed: {exc!r}", "report a bug")
        checks.extend(found if isinstance(found, list) else [found])
    return checks


MARKS = {
    Status.OK: "OK  ",
    Status.WARN: "WARN",
    Status.FAIL: "FAIL",
    Status.SKIP: "SKIP",
}


def format_report(checks: list[Check]) -> str:
    """One line per check; a ``fix:`` line under each warning or failure."""
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{MARKS[check.status]}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status in (Status.WARN, Status.FAIL):
            lines.append(f"      {'':<{width}}  fix: {check.fix}")
    failed = sum(c.status is Status.FAIL for c in checks)
    warned = sum(c.status is Status.WARN for c in checks)
    lines.append(
        f"{failed} problem(s), {warned} warning(s)"
        if failed or warned
        else "everything checked is fine"
    )
    return "\n".join(lines)
