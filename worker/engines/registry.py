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
from collections.abc import Mapping
from typing import Any

from worker.engines.base import Engine, SamplingSettings

ENGINES: dict[str, str] = {
    # name: "module:ClassName" (imported lazily by create_engine)
    "transformers": "worker.engines.transformers_engine:TransformersEngine",
    # --- openai / vllm engines (owned by the openai/vllm helper) -------------
    "vllm": "worker.engines.vllm_engine:VLLMEngine",
    "openai": "worker.engines.openai_engine:OpenAIEngine",
    # --- end of openai / vllm engines ------------------------------------------
}
"""Every engine rexlabel can run; the keys are REXLABEL_ENGINE's choices."""


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
    "transformers": ("torch", "transformers"),
    "vllm": ("vllm",),
    "openai": (),  # HTTP only: the base install has what it needs
}
"""Top-level packages each engine imports beyond the base install."""
ENGINE_INSTALL_HINT: dict[str, str] = {
    "transformers": "pip install 'rexlabel[worker]'",
    "vllm": "pip install 'rexlabel[worker,vllm]'",
    "openai": "nothing to install",
}
"""How to install each engine's packages (pyproject's extras)."""


def missing_packages(name: str) -> list[str]:
    """The packages engine ``name`` needs that are not installed here, found
    without importing them (a backend must not import torch to ask)."""
    _check_known(name)
    return [p for p in ENGINE_PACKAGES[name] if importlib.util.find_spec(p) is None]


class EngineSettingsError(ValueError):
    """Engine settings that cannot work together; the message names them."""


def engine_options(
    name: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The engine arguments the settings give ``name``, as the engine takes them.

    Every setting the registry gives an ``engine_option`` for this engine
    (``common.settings.engine_settings``): ``min_pixels`` / ``max_pixels``
    (REXLABEL_MIN_PIXELS / _MAX_PIXELS, areas in pixels), ``system_prompt``
    (REXLABEL_SYSTEM_PROMPT; empty means upstream's), for engines that load
    weights ``quantization`` (REXLABEL_QUANTIZATION: None or ``"awq"``), and the
    vLLM and OpenAI-server options (REXLABEL_VLLM_*, REXLABEL_OPENAI_*).

    Raises:
        EngineSettingsError: min above max, or a quantization for openai.
    """
    from common import settings

    options: dict[str, Any] = {
        s.engine_option: s.read(environ) for s in settings.engine_settings(name)
    }
    low, high = options["min_pixels"], options["max_pixels"]
    if low > high:
        raise EngineSettingsError(
            f"REXLABEL_MIN_PIXELS={low} is above REXLABEL_MAX_PIXELS={high}"
        )
    if "quantization" in options:
        quantization = options["quantization"]
        options["quantization"] = None if quantization == "none" else quantization
    else:
        quantization = settings.get("REXLABEL_QUANTIZATION", environ)
        if quantization != "none":
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
        name: ``transformers``, ``vllm`` or ``openai`` (REXLABEL_ENGINE).
        model: hub id, local directory or served model name (REXLABEL_MODEL).
        device: ``auto``, ``cpu``, ``cuda`` ... (REXLABEL_DEVICE); engines that
            do not place the model themselves ignore it.
        kwargs: engine-specific options, passed through; they win over
            :func:`engine_options` (pixel bounds, system prompt, quantization,
            the vLLM and OpenAI-server settings).
    """
    from common import settings

    name = name or settings.get("REXLABEL_ENGINE")
    cls = engine_class(name)
    return cls(
        model=model or settings.get("REXLABEL_MODEL"),
        device=device or settings.get("REXLABEL_DEVICE"),
        **{**engine_options(name), **kwargs},
    )
