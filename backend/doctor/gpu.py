"""GPUs this machine shows, found without importing torch in this process."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

from backend.doctor.model import has_worker_install
from backend.doctor.report import Check, fail, ok, skip, warn

GPU_PROBE_TIMEOUT_S = 120.0
"""nvidia-smi or a torch import in a subprocess: importing torch with CUDA can
take tens of seconds on a cold disk."""

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
        return skip("gpu", "the openai engine runs the model on its server")
    if not has_worker_install():
        return skip("gpu", "no worker install here: run doctor where workers run")
    if device == "cpu":
        return ok("gpu", "REXLABEL_DEVICE=cpu: running on the CPU (slow, by choice)")
    try:
        gpus, how = probe_gpus(run)
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as exc:
        gpus, how = [], f"probe failed: {exc}"
    if gpus:
        return ok("gpu", f"{len(gpus)} GPU(s) via {how}: {'; '.join(gpus)}")
    if device.startswith("cuda"):
        return fail(
            "gpu",
            f"REXLABEL_DEVICE={device} but no GPU is visible ({how})",
            "install the NVIDIA driver and container toolkit, and reserve a GPU "
            "(compose: deploy.resources.reservations.devices), or set "
            "REXLABEL_DEVICE=cpu",
        )
    return warn(
        "gpu",
        f"no GPU visible ({how}): REXLABEL_DEVICE=auto will run on the CPU, "
        "minutes per image",
        "run workers on a GPU machine, or use REXLABEL_ENGINE=openai",
    )
