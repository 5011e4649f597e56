"""Engine names -> implementations, imported only when asked for.

``create_engine()`` with no arguments builds the engine the settings name
(``REXLABEL_ENGINE``, ``REXLABEL_MODEL``, ``REXLABEL_DEVICE``) with the options
:func:`engine_options` reads (pixel bounds, system prompt, quantization, the
vLLM and OpenAI-server settings); :func:`base_sampling` reads the generation
caps. These are the only places the engines' settings are read: engines and
the pipeline take explicit arguments. Importing this module imports no torch,
transformers, vLLM or HTTP client.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from worker.engines.base import Engine, SamplingSettings

log = logging.getLogger(__name__)

ENGINES: dict[str, str] = {
    # name: "module:ClassName" (imported lazily by create_engine)
    "transformers": "worker.engines.transformers_engine:TransformersEngine",
    # --- openai / vllm engines (owned by the openai/vllm helper) -------------
    "vllm": "worker.engines.vllm_engine:VLLMEngine",
    "openai": "worker.engines.openai_engine:OpenAIEngine",
    # --- end of openai / vllm engines ------------------------------------------
}
"""Every engine rexlabel can run (REXLABEL_ENGINE also takes :data:`AUTO_ENGINE`)."""
AUTO_ENGINE = "auto"
"""REXLABEL_ENGINE's default: :func:`choose_engine` picks an engine of
:data:`ENGINES` where the model runs."""
ENGINE_CHOICES = (AUTO_ENGINE, *ENGINES)
"""Every value REXLABEL_ENGINE takes."""
VLLM_DEVICES = ("", "auto", "cuda", "cuda:0")
"""REXLABEL_DEVICE values under which ``auto`` may pick vLLM: vLLM places
itself on the first visible GPU (CUDA_VISIBLE_DEVICES picks another), so a
device naming a later GPU keeps the transformers engine, which goes there."""


class UnknownEngineError(ValueError):
    """The engine name is not one of :data:`ENGINES`."""


def _check_known(name: str) -> None:
    if name not in ENGINES:
        raise UnknownEngineError(
            f"unknown engine {name!r}; expected one of: {', '.join(ENGINES)}"
        )


def engine_class(name: str) -> type[Engine]:
    """The class registered as ``name`` (imports its module)."""
    _check_known(name)
    module_name, _, class_name = ENGINES[name].partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


ENGINE_PACKAGES: dict[str, tuple[str, ...]] = {
    AUTO_ENGINE: ("torch", "transformers"),  # what its fallback needs
    "transformers": ("torch", "transformers"),
    "vllm": ("vllm",),
    "openai": (),  # HTTP only: the base install has what it needs
}
"""Top-level packages each engine imports beyond the base install."""
ENGINE_INSTALL_HINT: dict[str, str] = {
    AUTO_ENGINE: "pip install 'rexlabel[worker]' (and 'rexlabel[vllm]' on GPUs)",
    "transformers": "pip install 'rexlabel[worker]'",
    "vllm": "pip install 'rexlabel[worker,vllm]'",
    "openai": "nothing to install",
}
"""How to install each engine's packages (pyproject's extras)."""


def missing_packages(name: str) -> list[str]:
    """The packages engine ``name`` (or ``auto``) needs that are not installed
    here, found without importing them (a backend must not import torch to ask)."""
    if name != AUTO_ENGINE:
        _check_known(name)
    return [p for p in ENGINE_PACKAGES[name] if importlib.util.find_spec(p) is None]


def choose_engine(
    *, device: str, cuda_visible: bool, vllm_installed: bool, whole_weights: bool
) -> tuple[str, str]:
    """``auto``'s rule: ``(engine, why)``.

    vLLM (continuous batching, paged KV cache: several times the transformers
    engine's throughput on a GPU) when a GPU is visible, ``device`` lets vLLM
    have it (:data:`VLLM_DEVICES`), vLLM is installed and the model is whole
    weights (vLLM serves no LoRA adapter here); else transformers, which runs
    everywhere.
    """
    if not cuda_visible:
        return "transformers", "no GPU is visible"
    if device not in VLLM_DEVICES:
        return "transformers", f"REXLABEL_DEVICE={device} (vLLM takes the first GPU)"
    if not vllm_installed:
        return "transformers", "vLLM is not installed"
    if not whole_weights:
        return "transformers", "the model is a LoRA adapter (vLLM needs merged weights)"
    return "vllm", "a GPU is visible and vLLM is installed"


def cuda_visible() -> bool:
    """Whether torch is installed and sees a CUDA GPU (imports torch)."""
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_engine(name: str, model: str, device: str) -> str:
    """``name``, or for ``auto`` the engine :func:`choose_engine` picks here
    (imports torch to look for a GPU; logs the choice and why)."""
    if name != AUTO_ENGINE:
        _check_known(name)
        return name
    from common.model_store import base_chain

    chosen, why = choose_engine(
        device=str(device or ""),
        cuda_visible=cuda_visible(),
        vllm_installed=importlib.util.find_spec("vllm") is not None,
        whole_weights=len(base_chain(model)) == 1,
    )
    log.info("REXLABEL_ENGINE=auto: %s engine (%s)", chosen, why)
    return chosen


class EngineSettingsError(ValueError):
    """Engine settings that cannot work together; the message names them."""


class EngineSetting(NamedTuple):
    """A setting ``create_engine`` passes to engines as a keyword argument."""

    keyword: str
    engines: tuple[str, ...] = ()
    """The engines that take it; empty: every engine."""


QUANTIZED_ENGINES = ("transformers", "vllm")
"""Engines that load the weights themselves, so REXLABEL_QUANTIZATION applies;
the openai engine's server loads them (start it with ``--quantization awq``)."""
ENGINE_SETTINGS: dict[str, EngineSetting] = {
    "REXLABEL_MIN_PIXELS": EngineSetting("min_pixels"),
    "REXLABEL_MAX_PIXELS": EngineSetting("max_pixels"),
    "REXLABEL_SYSTEM_PROMPT": EngineSetting("system_prompt"),
    "REXLABEL_QUANTIZATION": EngineSetting("quantization", QUANTIZED_ENGINES),
    "REXLABEL_TRANSFORMERS_STATIC_CACHE": EngineSetting(
        "static_cache", ("transformers",)
    ),
    "REXLABEL_VLLM_MAX_MODEL_LEN": EngineSetting("max_model_len", ("vllm",)),
    "REXLABEL_VLLM_GPU_MEMORY_UTILIZATION": EngineSetting(
        "gpu_memory_utilization", ("vllm",)
    ),
    "REXLABEL_OPENAI_URL": EngineSetting("base_url", ("openai",)),
    "REXLABEL_OPENAI_API_KEY": EngineSetting("api_key", ("openai",)),
    "REXLABEL_OPENAI_CONCURRENCY": EngineSetting("concurrency", ("openai",)),
}
"""Every setting an engine takes, by name (whether it changes predictions, and
so ``model_version``, is marked in ``common.settings``)."""


def engine_options(
    name: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The engine arguments the settings give ``name``, as the engine takes them.

    The :data:`ENGINE_SETTINGS` that apply to ``name``: ``min_pixels`` /
    ``max_pixels`` (REXLABEL_MIN_PIXELS / _MAX_PIXELS, areas in pixels),
    ``system_prompt`` (REXLABEL_SYSTEM_PROMPT; empty means upstream's), for
    engines that load weights ``quantization`` (REXLABEL_QUANTIZATION: None or
    ``"awq"``), and the vLLM and OpenAI-server options.

    Raises:
        EngineSettingsError: min above max, or a quantization for openai.
    """
    from common import settings

    options: dict[str, Any] = {
        entry.keyword: settings.get(setting, environ)
        for setting, entry in ENGINE_SETTINGS.items()
        if not entry.engines or name in entry.engines
    }
    low, high = options["min_pixels"], options["max_pixels"]
    if low > high:
        raise EngineSettingsError(
            f"REXLABEL_MIN_PIXELS={low} is above REXLABEL_MAX_PIXELS={high}"
        )
    if name in QUANTIZED_ENGINES:
        if options["quantization"] == "none":
            options["quantization"] = None
    elif (quantization := settings.get("REXLABEL_QUANTIZATION", environ)) != "none":
        raise EngineSettingsError(
            f"REXLABEL_QUANTIZATION={quantization} does not apply to the {name} "
            "engine: its server loads the model (e.g. vllm serve --quantization "
            f"{quantization}); unset it"
        )
    return options


def base_sampling(environ: Mapping[str, str] | None = None) -> SamplingSettings:
    """Upstream's sampling with the caps the settings give (REXLABEL_MAX_NEW_TOKENS,
    REXLABEL_MAX_INSTANCES): what a chunk's and a call's overrides go on."""
    from common import settings

    return SamplingSettings(
        max_new_tokens=settings.get("REXLABEL_MAX_NEW_TOKENS", environ),
        max_instances=settings.get("REXLABEL_MAX_INSTANCES", environ),
    )


def create_engine(
    name: str | None = None,
    model: str | None = None,
    device: str | None = None,
    **kwargs: Any,
) -> Engine:
    """Build an engine; unset arguments come from the settings.

    Args:
        name: ``auto`` (:func:`resolve_engine` picks), ``transformers``,
            ``vllm`` or ``openai`` (REXLABEL_ENGINE).
        model: hub id, local directory or served model name (REXLABEL_MODEL);
            a project's models directory (one with a ``current`` pointer)
            loads the run the pointer names (``common.model_store.resolve_model``).
        device: ``auto``, ``cpu``, ``cuda`` ... (REXLABEL_DEVICE); engines that
            do not place the model themselves ignore it.
        kwargs: engine-specific options, passed through; they win over
            :func:`engine_options` (pixel bounds, system prompt, quantization,
            the vLLM and OpenAI-server settings).
    """
    from common import settings
    from common.model_store import resolve_model

    model = resolve_model(model or settings.get("REXLABEL_MODEL"))
    device = device or settings.get("REXLABEL_DEVICE")
    name = resolve_engine(name or settings.get("REXLABEL_ENGINE"), model, device)
    cls = engine_class(name)
    return cls(model=model, device=device, **{**engine_options(name), **kwargs})
