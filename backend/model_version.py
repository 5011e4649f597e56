"""The ``model_version`` string Label Studio files predictions under.

Label Studio skips tasks that already have a prediction of the current
version, so the version must change whenever predictions would: the model,
the engine, the prompt templates, the weights a fine-tuned model directory
holds (its card's digest, so a new training run that moves a project's
``current`` pointer gives a new version), a prediction-changing setting, the label
config or the project's extra params. It must also be *exactly* the same for
``/setup`` and the ``/predict`` that follows (a different string adds
duplicates on every "Retrieve Predictions"), so it is a pure function of those
inputs: ``rexlabel-<package version>-<12 hex digits>``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from functools import lru_cache
from importlib import metadata
from typing import Any

from common import settings
from common.model_store import weights_identity

VERSION_PREFIX = "rexlabel"
"""First part of every version string, so Label Studio users see whose it is."""

TRAINING_ONLY_PARAMS = ("finetune",)
"""Extra params that change training runs, not predictions: editing them must
not make Label Studio ask for every prediction again."""

DIGEST_CHARS = 12
"""Hex digits of the SHA-256 kept: 48 bits, no collision among a project's
versions in practice, short enough to read in Label Studio's UI."""


@lru_cache(maxsize=1)
def package_version() -> str:
    try:
        return metadata.version("rexlabel")
    except metadata.PackageNotFoundError:  # running from a plain checkout
        return "0"


@lru_cache(maxsize=1)
def prompts_fingerprint() -> str:
    """A hash of the prompt templates and system prompt in ``converters.prompts``."""
    from converters import prompts

    templates = {
        getattr(task, "value", str(task)): text
        for task, text in prompts.PROMPT_TEMPLATES.items()
    }
    text = json.dumps(
        {"templates": templates, "system": prompts.SYSTEM_PROMPT}, sort_keys=True
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def settings_fingerprint(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The prediction-changing settings (``settings.PREDICTION_SETTINGS``: the
    registry marks them, engine options among them), by name."""
    return {name: settings.get(name, environ) for name in settings.PREDICTION_SETTINGS}


def model_version(
    label_config: str | None = None,
    extra_params: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """``rexlabel-<version>-<digest>`` for this config, params and environment."""
    parts = {
        "package": package_version(),
        "prompts": prompts_fingerprint(),
        "settings": settings_fingerprint(environ),
        "label_config": (label_config or "").strip(),
        "extra_params": {
            key: value
            for key, value in dict(extra_params or {}).items()
            if key not in TRAINING_ONLY_PARAMS
        },
    }
    weights = weights_identity(settings.get("REXLABEL_MODEL", environ))
    if weights is not None:  # only fine-tuned directories: hub ids keep their versions
        parts["weights"] = weights
    text = json.dumps(parts, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_CHARS]
    return f"{VERSION_PREFIX}-{parts['package']}-{digest}"
