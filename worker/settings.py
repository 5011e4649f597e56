"""Every environment variable rexlabel reads: name, type, default and why.

One registry for the backend, the worker and the CLI. Nothing here imports torch
or Flask. A bad value fails at start-up with a message naming the variable.

Add a setting by adding one :class:`Setting` to ``SETTINGS``; read it with
``get("NAME")`` (typed, validated) or ``Settings.from_env()`` for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """An environment variable has a value rexlabel cannot use; names the variable."""


def _parse_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true/false (1/0, yes/no, on/off)")


def _parse_int(raw: str) -> int:
    return int(raw.strip())


def _parse_float(raw: str) -> float:
    return float(raw.strip())


def _parse_str(raw: str) -> str:
    return raw.strip()


_PARSERS: dict[type, Callable[[str], Any]] = {
    bool: _parse_bool,
    int: _parse_int,
    float: _parse_float,
    str: _parse_str,
}


@dataclass(frozen=True)
class Setting:
    """One environment variable.

    ``aliases`` are older names users know (read when ``name`` is unset);
    ``choices`` restricts the value; ``minimum`` bounds numbers from below;
    ``secret`` masks the value in ``rexlabel config`` and logs.
    """

    name: str
    type: type
    default: Any
    reason: str
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    secret: bool = False

    def raw(self, environ: Mapping[str, str]) -> str | None:
        for key in (self.name, *self.aliases):
            if key in environ:
                return environ[key]
        return None

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        environ = os.environ if environ is None else environ
        raw = self.raw(environ)
        if raw is None or (raw.strip() == "" and self.type is not str):
            return self.default
        try:
            value = _PARSERS[self.type](raw)
        except ValueError as exc:
            raise SettingsError(f"{self.name}={raw!r} is not valid: {exc}") from None
        if self.choices and value not in self.choices:
            raise SettingsError(
                f"{self.name}={raw!r} is not valid: "
                f"expected one of {', '.join(self.choices)}"
            )
        if self.minimum is not None and value < self.minimum:
            raise SettingsError(
                f"{self.name}={raw!r} is not valid: must be at least {self.minimum}"
            )
        return value


SETTINGS: tuple[Setting, ...] = (
    # Label Studio -------------------------------------------------------------
    Setting(
        "LABEL_STUDIO_URL",
        str,
        "",
        "Base URL of Label Studio, for image downloads and posting predictions; "
        "empty means task images must be local paths or allowed URLs.",
        aliases=("LABEL_STUDIO_HOST",),
    ),
    Setting(
        "LABEL_STUDIO_API_KEY",
        str,
        "",
        "Legacy token or personal access token (exchanged for a 5-minute access "
        "token as the SDK does).",
        aliases=("LABEL_STUDIO_ACCESS_TOKEN",),
        secret=True,
    ),
    # Backend server -----------------------------------------------------------
    Setting(
        "BASIC_AUTH_USER",
        str,
        "",
        "User name Label Studio must send (basic auth); empty disables auth.",
    ),
    Setting("BASIC_AUTH_PASS", str, "", "Password for BASIC_AUTH_USER.", secret=True),
    Setting(
        "PORT",
        int,
        9090,
        "Port of the backend: 9090 is what Label Studio's docs use for ML backends.",
        minimum=1,
    ),
    # Queue --------------------------------------------------------------------
    Setting(
        "REDIS_URL",
        str,
        "",
        "Redis for RQ jobs; empty runs jobs in-process so one command serves.",
        secret=True,
    ),
    # Model and engine ---------------------------------------------------------
    Setting(
        "REXLABEL_MODEL",
        str,
        "IDEA-Research/Rex-Omni",
        "Hub id or local directory of the Rex-Omni weights.",
    ),
    Setting(
        "REXLABEL_ENGINE",
        str,
        "transformers",
        "transformers runs everywhere; vllm is faster on GPUs; openai calls a "
        "served model.",
        choices=("transformers", "vllm", "openai"),
    ),
    Setting("REXLABEL_DEVICE", str, "auto", "auto picks cuda when visible, else cpu."),
    Setting(
        "REXLABEL_OPENAI_URL",
        str,
        "",
        "Base URL (…/v1) of an OpenAI-compatible server for the openai engine.",
    ),
    Setting(
        "REXLABEL_OPENAI_API_KEY",
        str,
        "EMPTY",
        "API key for that server; vLLM accepts any value unless started with one.",
        secret=True,
    ),
    Setting(
        "REXLABEL_MAX_NEW_TOKENS",
        int,
        4096,
        "Upstream's default output cap; dense scenes need it.",
        minimum=1,
    ),
    Setting(
        "REXLABEL_MAX_INSTANCES",
        int,
        300,
        "Runaway guard: stop a generation past this many items (upstream users "
        "see hundreds of boxes on textured images).",
        minimum=1,
    ),
    # SAM ----------------------------------------------------------------------
    Setting(
        "SAM_CHECKPOINT",
        str,
        "",
        "Local path to a segment-anything checkpoint; empty disables masks.",
    ),
    Setting(
        "SAM_MODEL_TYPE",
        str,
        "",
        "vit_h, vit_l or vit_b; empty guesses it from the checkpoint file name.",
    ),
    # Logging ------------------------------------------------------------------
    Setting(
        "LOG_LEVEL",
        str,
        "INFO",
        "Python logging level.",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
    ),
    Setting(
        "LOG_FORMAT",
        str,
        "text",
        "json gives one JSON object per line.",
        choices=("text", "json"),
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not a rexlabel setting") from None


def get(name: str, environ: Mapping[str, str] | None = None) -> Any:
    """The typed value of one setting from the environment (or ``environ``)."""
    return setting(name).read(environ)


def read_all(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every setting's value; raises SettingsError listing every bad variable."""
    values: dict[str, Any] = {}
    errors: list[str] = []
    for s in SETTINGS:
        try:
            values[s.name] = s.read(environ)
        except SettingsError as exc:
            errors.append(str(exc))
    if errors:
        raise SettingsError("; ".join(errors))
    return values


def masked(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` with secrets replaced by ``***`` (kept empty when empty)."""
    return {
        name: ("***" if _BY_NAME[name].secret and value else value)
        for name, value in values.items()
    }
