"""``rexlabel doctor`` against a working and a broken set-up.

Real pieces: Redis on 127.0.0.1:6379 (its own database, so a registered test
worker never meets other tests' queues), a local HTTP server answering like
Label Studio 1.23 (health, token refresh, whoami, projects, tasks, uploads), the
tiny model directory, and subprocess probes for the GPU.
"""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image
from redis import Redis
from rq import Queue, Worker

from backend.cli import main
from backend.doctor import gpu as doctor_gpu
from backend.doctor.gpu import check_gpu, probe_gpus
from backend.doctor.labelstudio import check_label_studio
from backend.doctor.model import check_model, check_sam
from backend.doctor.report import Check, Status
from backend.doctor.run import read_settings
from backend.doctor.workers import check_redis, check_workers
from common.queues import QUEUES
from common.settings import SETTINGS
from tests.fake_label_studio import LEGACY_TOKEN, PAT, FakeLabelStudio, make_jwt

REDIS_DB_URL = "redis://127.0.0.1:6379/11"
"""A database no other test module uses (12: backend, 14: e2e, 1-9: worker)."""
LABEL_CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="cat"/>'
    "</RectangleLabels></View>"
)


def _cats(**options) -> FakeLabelStudio:
    """A Label Studio with project 3 "cats": task 17 and its uploaded 40x30 image."""
    ls = FakeLabelStudio(**options)
    ls.add_project(3, LABEL_CONFIG, title="cats")
    ls.add_task(3, 17, {"image": "/data/upload/1/cat.png"})
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buffer, "PNG")
    ls.files["1/cat.png"] = buffer.getvalue()
    return ls


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def redis_db():
    conn = Redis.from_url(REDIS_DB_URL)
    try:
        conn.ping()
    except Exception as exc:  # pragma: no cover - CI starts Redis
        pytest.skip(f"Redis is not running on 127.0.0.1:6379: {exc}")
    yield conn
    conn.close()


@pytest.fixture
def registered_worker(redis_db):
    """An RQ worker registered on rexlabel's queues (in the doctor's database)."""
    worker = Worker(
        [Queue(name, connection=redis_db) for name in QUEUES],
        connection=redis_db,
        name=f"doctor-test-{uuid.uuid4().hex[:8]}",
    )
    worker.register_birth()
    yield worker
    worker.register_death()


@pytest.fixture
def clean_env(monkeypatch):
    for item in SETTINGS:
        for name in (item.name, *item.aliases):
            monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def sam_checkpoint(tmp_path) -> Path:
    path = tmp_path / "sam_vit_b_test.pth"
    path.write_bytes(b"\0" * 2048)
    return path


def _by_name(checks) -> dict[str, Check]:
    return {check.name: check for check in checks}


def _working_env(env, ls, model_dir, sam_checkpoint) -> None:
    env.setenv("REDIS_URL", REDIS_DB_URL)
    env.setenv("LABEL_STUDIO_URL", ls.url)
    env.setenv("LABEL_STUDIO_API_KEY", PAT)
    env.setenv("REXLABEL_MODEL", str(model_dir))
    env.setenv("REXLABEL_DEVICE", "cpu")
    env.setenv("SAM_CHECKPOINT", str(sam_checkpoint))


def test_a_working_setup_passes(
    clean_env, registered_worker, tiny_model_dir, sam_checkpoint, capsys
):
    with _cats(legacy_enabled=False) as ls:
        _working_env(clean_env, ls, tiny_model_dir, sam_checkpoint)
        code = main(["doctor"])
        out = capsys.readouterr().out
        assert ls.access_tokens, "the personal access token was exchanged"
    assert code == 0, out
    assert "FAIL" not in out
    for line in (
        "OK    settings",
        "OK    redis ",
        "OK    workers",
        "OK    label studio ",
        "OK    label studio token",
        "OK    image download",
        "OK    model",
        "OK    gpu",
        "OK    sam",
    ):
        assert line in out, f"{line!r} missing from:\n{out}"
    assert "personal access token (exchanged for an access token) accepted" in out
    assert "/data/upload/1/cat.png (task 17) downloaded: 40x30" in out
    assert PAT not in out


def test_a_legacy_token_works_when_the_organization_allows_it(clean_env, redis_db):
    with _cats(legacy_enabled=True) as ls:
        values, _ = read_settings(
            {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": LEGACY_TOKEN}
        )
        checks = _by_name(check_label_studio(values))
    assert checks["label studio token"].status is Status.OK
    assert "legacy token accepted" in checks["label studio token"].detail
    assert checks["image download"].status is Status.OK


def test_a_broken_setup_fails_and_says_how_to_fix_it(clean_env, capsys):
    with _cats(legacy_enabled=False) as ls:
        clean_env.setenv("REDIS_URL", f"redis://:pw-secret@127.0.0.1:{_free_port()}/0")
        clean_env.setenv("LABEL_STUDIO_URL", ls.url)
        clean_env.setenv("LABEL_STUDIO_API_KEY", LEGACY_TOKEN)  # legacy disabled
        clean_env.setenv("REXLABEL_MAX_NEW_TOKENS", "many")
        clean_env.setenv("REXLABEL_DEVICE", "cpu")  # no GPU probe: seconds saved
        code = main(["doctor"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL  settings" in out and "REXLABEL_MAX_NEW_TOKENS='many'" in out
    assert "FAIL  redis" in out and "cannot reach Redis" in out
    assert "fix: start Redis or fix REDIS_URL" in out
    assert "FAIL  label studio token" in out
    assert "rejected the legacy token in LABEL_STUDIO_API_KEY (HTTP 401)" in out
    assert "use a Personal Access Token" in out
    assert LEGACY_TOKEN not in out and "pw-secret" not in out


def test_a_wrong_personal_access_token_is_reported(clean_env):
    wrong = make_jwt({"token_type": "refresh", "exp": int(time.time()) + 100, "u": 2})
    with _cats() as ls:
        values, _ = read_settings(
            {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": wrong}
        )
        checks = _by_name(check_label_studio(values))
    token = checks["label studio token"]
    assert token.status is Status.FAIL
    assert "rejected the personal access token" in token.detail
    assert "image download" not in checks


def test_unreachable_label_studio_and_missing_token(clean_env):
    values, _ = read_settings({"LABEL_STUDIO_URL": f"http://127.0.0.1:{_free_port()}"})
    (check,) = check_label_studio(values)
    assert check.status is Status.FAIL
    assert "service name" in check.fix
    with _cats() as ls:
        values, _ = read_settings({"LABEL_STUDIO_URL": ls.url})
        checks = _by_name(check_label_studio(values))
    assert checks["label studio"].status is Status.OK
    assert checks["label studio token"].status is Status.FAIL
    assert "LABEL_STUDIO_API_KEY is not set" in checks["label studio token"].detail


def test_a_missing_image_is_a_failure_and_no_task_a_skip(clean_env):
    with _cats() as ls:
        values, _ = read_settings(
            {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": LEGACY_TOKEN}
        )
        checks = _by_name(check_label_studio(values, image="/data/upload/1/gone.png"))
        assert checks["image download"].status is Status.FAIL
        assert "not found" in checks["image download"].detail
        ls.tasks = {}
        checks = _by_name(check_label_studio(values))
        assert checks["image download"].status is Status.SKIP


def test_redis_without_workers_fails(clean_env, redis_db):
    queues = (f"doctor-empty-{uuid.uuid4().hex}",)
    checks = _by_name(check_redis(REDIS_DB_URL, queues))
    assert checks["redis"].status is Status.OK
    assert checks["workers"].status is Status.FAIL
    assert "rexlabel worker" in checks["workers"].fix
    assert checks["redis persistence"].status in (Status.OK, Status.WARN)


def test_model_checks(tmp_path, tiny_model_dir):
    def model(**values):
        base = {
            "REXLABEL_ENGINE": "transformers",
            "REXLABEL_MODEL": "",
            "REXLABEL_OPENAI_URL": "",
            "REXLABEL_OPENAI_API_KEY": "EMPTY",
        }
        return check_model({**base, **values})

    assert model(REXLABEL_MODEL=str(tiny_model_dir)).status is Status.OK
    incomplete = tmp_path / "half"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    check = model(REXLABEL_MODEL=str(incomplete))
    assert check.status is Status.FAIL
    assert "weights" in check.detail and "preprocessor_config.json" in check.detail
    check = model(REXLABEL_MODEL=str(tmp_path / "nowhere" / "rex"))
    assert check.status is Status.FAIL and "not a directory" in check.detail

    with FakeLabelStudio(served_models=["IDEA-Research/Rex-Omni"]) as server:
        served = model(
            REXLABEL_ENGINE="openai",
            REXLABEL_OPENAI_URL=f"{server.url}/v1",
            REXLABEL_MODEL="IDEA-Research/Rex-Omni",
        )
        other = model(
            REXLABEL_ENGINE="openai",
            REXLABEL_OPENAI_URL=f"{server.url}/v1",
            REXLABEL_MODEL="someone/else",
        )
    assert served.status is Status.OK
    assert other.status is Status.FAIL and "served model name" in other.fix
    unset = model(REXLABEL_ENGINE="openai")
    assert unset.status is Status.FAIL and "REXLABEL_OPENAI_URL" in unset.detail


class _RunOnce:
    """subprocess.run that really runs the first probe and replays its answer
    (importing torch takes seconds; the answer cannot change within a test)."""

    def __init__(self) -> None:
        self.result: subprocess.CompletedProcess | None = None

    def __call__(self, *args, **kwargs) -> subprocess.CompletedProcess:
        if self.result is None:
            self.result = subprocess.run(*args, **kwargs)
        return self.result


def test_gpu_from_nvidia_smi(tmp_path, monkeypatch):
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 81559 MiB'\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    values = {"REXLABEL_ENGINE": "transformers", "SAM_CHECKPOINT": ""}
    check = check_gpu({**values, "REXLABEL_DEVICE": "cuda"})
    assert check.status is Status.OK
    assert "1 GPU(s) via nvidia-smi: NVIDIA H100 80GB HBM3, 81559 MiB" in check.detail


@pytest.mark.slow
def test_no_gpu_fails_for_cuda_and_warns_for_auto(monkeypatch):
    monkeypatch.setattr(doctor_gpu.shutil, "which", lambda name: None)  # no nvidia-smi
    run = _RunOnce()
    gpus, how = probe_gpus(run)  # torch in a subprocess decides
    if gpus:
        pytest.skip(f"this machine has a GPU: {gpus}")
    assert how == "torch"
    values = {"REXLABEL_ENGINE": "transformers", "SAM_CHECKPOINT": ""}
    check = check_gpu({**values, "REXLABEL_DEVICE": "cuda"}, run)
    assert check.status is Status.FAIL
    assert "REXLABEL_DEVICE=cuda but no GPU is visible (torch)" in check.detail
    check = check_gpu({**values, "REXLABEL_DEVICE": "auto"}, run)
    assert check.status is Status.WARN
    assert check_gpu({**values, "REXLABEL_DEVICE": "cpu"}, run).status is (Status.OK)


def test_sam_checks(tmp_path, sam_checkpoint):
    def sam(**values):
        return check_sam({"SAM_CHECKPOINT": "", "SAM_MODEL_TYPE": "", **values})

    assert sam().status is Status.SKIP
    ok = sam(SAM_CHECKPOINT=str(sam_checkpoint))
    assert ok.status is Status.OK and "vit_b" in ok.detail
    unnamed = tmp_path / "weights.pth"
    unnamed.write_bytes(b"\0" * 16)
    check = sam(SAM_CHECKPOINT=str(unnamed))
    assert check.status is Status.FAIL and "SAM_MODEL_TYPE" in check.fix
    assert sam(SAM_CHECKPOINT=str(unnamed), SAM_MODEL_TYPE="vit_l").status is (
        Status.OK
    )
    missing = sam(SAM_CHECKPOINT=str(tmp_path / "sam_vit_h.pth"))
    assert missing.status is Status.FAIL


@pytest.mark.slow
def test_the_doctor_never_imports_torch_in_its_own_process():
    code = (
        "import sys\n"
        "from backend.doctor.run import run_checks\n"
        "checks = run_checks({'REXLABEL_DEVICE': 'auto'})\n"
        "assert any(c.name == 'gpu' for c in checks)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_json_output_is_one_row_per_check(clean_env, capsys):
    clean_env.setenv("REXLABEL_DEVICE", "cpu")
    main(["doctor", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert {row["name"] for row in rows} >= {"settings", "redis", "model", "gpu", "sam"}
    assert all(row["status"] in ("ok", "warn", "fail", "skip") for row in rows)


def test_workers_that_load_or_failed_are_named_when_none_listens():
    """Workers register only once their model loaded; before that (or after a
    failed load) the doctor says what they published (common.model_state)."""
    from common.model_state import LoadReporter
    from tests.backend.redis_helpers import redis_or_skip

    conn = redis_or_skip()  # the backend tests' own database, emptied
    queues = (f"doctor-empty-{uuid.uuid4().hex}",)
    with LoadReporter(conn, "doctor-loading"):
        check = check_workers(conn, queues)
    assert check.status is Status.FAIL
    assert check.detail.endswith("; 1 worker(s) still loading the model")
    with pytest.raises(OSError), LoadReporter(conn, "doctor-failed"):
        raise OSError("no such model: nowhere/rex")
    check = check_workers(conn, queues)
    assert check.detail.endswith(
        "; a worker failed to load the model: OSError: no such model: nowhere/rex"
    )
