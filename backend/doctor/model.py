"""The weights a worker loads: Rex-Omni's (a local directory, the Hugging Face
cache, or the OpenAI-compatible server's model list) and SAM's checkpoint."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from backend.doctor.report import HTTP_TIMEOUT_S, Check, fail, ok, skip, warn

HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
"""``owner/name`` on the Hugging Face hub; anything else must be a directory."""
MODEL_CONFIG_FILES = ("config.json",)
MODEL_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
MODEL_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
MODEL_WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def has_worker_install() -> bool:
    return importlib.util.find_spec("torch") is not None


def check_model(
    values: Mapping[str, Any], session: requests.Session | None = None
) -> Check:
    """The weights the worker will load, or the server the openai engine calls."""
    engine = values["REXLABEL_ENGINE"]
    model = str(values["REXLABEL_MODEL"])
    if engine == "openai":
        return _check_openai_server(values, session or requests.Session())
    if not has_worker_install():
        return skip(
            "model",
            "no worker install here (torch is missing): run `rexlabel doctor` "
            "where workers run",
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return _check_model_dir(path)
    if not HUB_ID.fullmatch(model):
        return fail(
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
        return fail(
            "model",
            f"{path} lacks {', '.join(missing)}",
            "download the complete model (huggingface-cli download "
            "IDEA-Research/Rex-Omni --local-dir DIR)",
        )
    return ok("model", f"local model directory {path}")


def _check_hub_cache(repo_id: str) -> Check:
    if importlib.util.find_spec("huggingface_hub") is None:
        return skip("model", "huggingface_hub is not installed here")
    from huggingface_hub import constants, try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(config, str):
        snapshot = Path(config).parent
        if any(any(snapshot.glob(p)) for p in MODEL_WEIGHT_PATTERNS):
            return ok("model", f"{repo_id} is in the Hugging Face cache ({snapshot})")
        return warn(
            "model",
            f"{repo_id}: config cached in {snapshot} but no weights yet",
            "let the worker finish its first download, or run "
            f"huggingface-cli download {repo_id}",
        )
    cache = constants.HF_HUB_CACHE
    if constants.HF_HUB_OFFLINE:
        return fail(
            "model",
            f"{repo_id} is not in the cache {cache} and HF_HUB_OFFLINE is set",
            f"download it first (huggingface-cli download {repo_id}) or unset "
            "HF_HUB_OFFLINE",
        )
    return warn(
        "model",
        f"{repo_id} is not in the cache {cache}: the first worker start downloads "
        "it (about 8 GB)",
        "mount a persistent volume at HF_HOME so it is downloaded once",
    )


def _check_openai_server(values: Mapping[str, Any], session: requests.Session) -> Check:
    url = str(values["REXLABEL_OPENAI_URL"]).rstrip("/")
    if not url:
        return fail(
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
        return fail(
            "model",
            f"OpenAI-compatible server at {url} did not list its models: {exc}",
            "start it (vllm serve IDEA-Research/Rex-Omni --tokenizer-mode slow) "
            "or fix REXLABEL_OPENAI_URL / REXLABEL_OPENAI_API_KEY",
        )
    model = values["REXLABEL_MODEL"]
    if model not in served:
        return fail(
            "model",
            f"{url} serves {served}, not REXLABEL_MODEL={model}",
            "set REXLABEL_MODEL to the served model name",
        )
    return ok("model", f"{url} serves {model}")


# SAM --------------------------------------------------------------------------


def check_sam(values: Mapping[str, Any]) -> Check:
    """The segment-anything checkpoint exists and its model type is known."""
    checkpoint = str(values["SAM_CHECKPOINT"])
    if not checkpoint:
        return skip(
            "sam",
            "SAM_CHECKPOINT is not set: Polygon/Brush labels and point clicks "
            "get no masks",
        )
    path = Path(checkpoint).expanduser()
    if not path.is_file() or path.stat().st_size == 0:
        return fail(
            "sam",
            f"SAM_CHECKPOINT={checkpoint} is not a readable, non-empty file",
            "download a checkpoint (e.g. sam_vit_h_4b8939.pth) and mount it "
            "(compose: ./checkpoints -> /checkpoints)",
        )
    from worker.sam import model_type_from_checkpoint

    model_type = values.get("SAM_MODEL_TYPE") or model_type_from_checkpoint(path)
    if not model_type:
        return fail(
            "sam",
            f"cannot tell the model type of {path.name}",
            "set SAM_MODEL_TYPE to vit_h, vit_l or vit_b",
        )
    if has_worker_install() and importlib.util.find_spec("segment_anything") is None:
        return fail(
            "sam", "segment_anything is not installed", "pip install '.[worker]'"
        )
    size_mb = path.stat().st_size / 1024**2
    return ok("sam", f"{path} ({model_type}, {size_mb:.0f} MB)")
