"""Every environment variable rexlabel reads: name, type, default and why.

One registry for the backend, the worker and the CLI. Nothing here imports torch
or Flask. A bad value fails at start-up with a message naming the variable.

Add a setting by adding one :class:`Setting` to ``SETTINGS``; read it with
``get("NAME")`` (typed, validated) or :func:`read_all` for all of them. Settings
are read at the edges only (``create_engine``, the worker's runtime loader,
``create_app``, the CLI); the code below them takes explicit arguments. A
default that code takes too is a named constant here, which the setting
references.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from converters.geometry import MAX_IMAGE_PIXELS, MAX_PIXELS, MIN_PIXELS
from converters.prompts import SYSTEM_PROMPT

DEFAULT_MAX_NEW_TOKENS = 4096
"""REXLABEL_MAX_NEW_TOKENS's default and ``SamplingSettings.max_new_tokens``'s:
upstream's wrapper default; dense scenes need thousands of tokens."""
DEFAULT_MAX_INSTANCES = 300
"""REXLABEL_MAX_INSTANCES's default and the runaway guard's item cap
(``SamplingSettings.max_instances``)."""
DEFAULT_OPENAI_API_KEY = "EMPTY"
"""REXLABEL_OPENAI_API_KEY's default and the openai engine's: vLLM accepts any
key unless started with one."""
DEFAULT_OPENAI_CONCURRENCY = 8
"""REXLABEL_OPENAI_CONCURRENCY's default and the openai engine's: enough
requests in flight for the server to batch them, few enough not to queue past
its own limits."""
DEFAULT_VLLM_MAX_MODEL_LEN = 8192
"""REXLABEL_VLLM_MAX_MODEL_LEN's default and the vllm engine's."""
DEFAULT_VLLM_GPU_MEMORY_UTILIZATION = 0.8
"""REXLABEL_VLLM_GPU_MEMORY_UTILIZATION's default and the vllm engine's."""
DEFAULT_PREDICT_TIMEOUT_S = 90.0
"""REXLABEL_PREDICT_TIMEOUT's default and the backend config's."""
DEFAULT_SYNC_TASK_LIMIT = 16
"""REXLABEL_SYNC_TASK_LIMIT's default and the backend config's."""
DEFAULT_PREDICT_CHUNK_SIZE = 4
"""REXLABEL_PREDICT_CHUNK_SIZE's default and the backend config's."""
DEFAULT_DOWNLOAD_DEADLINE_S = 120.0
"""REXLABEL_DOWNLOAD_DEADLINE_S's default and the image loader's."""
DEFAULT_IMAGE_CACHE_MB = 256
"""REXLABEL_IMAGE_CACHE_MB's default and the image loader's (in bytes there)."""


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


def _check_label_studio_url(url: str) -> None:
    """Parsed as the HTTP client parses it (credentials go only there)."""
    from common.urls import parse_http_url

    parse_http_url(url)


def _check_allowed_hosts(raw: str) -> None:
    """Every entry is host, host:port, *.suffix[:port] or *."""
    from common.images.hosts import parse_allowed_hosts

    parse_allowed_hosts(raw)


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
    ``secret`` masks the value in ``rexlabel config`` and logs;
    ``blank_is_default`` reads an empty value as the default (numbers and
    booleans always do; a text whose empty value would mean nothing useful
    sets it); ``check``
    raises ValueError (its message names the bad part) for a value of the
    right type that is still unusable, so start-up refuses it at once.
    ``changes_predictions`` marks a value that changes what the model answers,
    so ``model_version`` hashes it.
    """

    name: str
    type: type
    default: Any
    reason: str
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    secret: bool = False
    check: Callable[[Any], Any] | None = None
    blank_is_default: bool = False
    changes_predictions: bool = False

    def raw(self, environ: Mapping[str, str]) -> str | None:
        for key in (self.name, *self.aliases):
            if key in environ:
                return environ[key]
        return None

    def read(self, environ: Mapping[str, str] | None = None) -> Any:
        environ = os.environ if environ is None else environ
        raw = self.raw(environ)
        blank = raw is not None and raw.strip() == ""
        if raw is None or (blank and (self.type is not str or self.blank_is_default)):
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
        if self.check is not None and value != "":
            try:
                self.check(value)
            except ValueError as exc:
                raise SettingsError(f"{self.name} is not valid: {exc}") from None
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
        check=_check_label_studio_url,
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
        "User name Label Studio must send (basic auth); empty disables auth "
        "(loopback only).",
    ),
    Setting("BASIC_AUTH_PASS", str, "", "Password for BASIC_AUTH_USER.", secret=True),
    Setting(
        "PORT",
        int,
        9090,
        "Port of the backend: 9090 is what Label Studio's docs use for ML backends.",
        minimum=1,
    ),
    Setting(
        "REXLABEL_HOST",
        str,
        "127.0.0.1",
        "Interface `rexlabel serve` listens on: loopback, so a fresh start exposes "
        "nothing; 0.0.0.0 (the images) needs BASIC_AUTH_USER/PASS set.",
    ),
    Setting(
        "REXLABEL_WEBHOOK_TOKEN",
        str,
        "",
        "Secret /webhook accepts as ?token=... besides basic auth (Label Studio "
        "sends its webhooks without basic auth); empty: basic auth only.",
        secret=True,
    ),
    Setting(
        "REXLABEL_PREDICT_TIMEOUT",
        float,
        DEFAULT_PREDICT_TIMEOUT_S,
        "Seconds /predict waits for the model: under Label Studio's 100 s "
        "ML_TIMEOUT_PREDICT, so a late answer still arrives.",
        minimum=1,
    ),
    Setting(
        "REXLABEL_SYNC_TASK_LIMIT",
        int,
        DEFAULT_SYNC_TASK_LIMIT,
        "Most tasks one /predict answers while Label Studio waits (16 images at "
        "up to 5 s each fit the timeout); more become a background bulk job.",
        minimum=1,
    ),
    Setting(
        "REXLABEL_PREDICT_CHUNK_SIZE",
        int,
        DEFAULT_PREDICT_CHUNK_SIZE,
        "Images per queued job of a synchronous /predict: batched on one worker, "
        "yet spread over several workers.",
        minimum=1,
    ),
    Setting(
        "REXLABEL_STATE_PATH",
        str,
        "",
        "SQLite file for per-project state (extra params) without Redis; empty "
        "keeps it in memory (one backend process).",
    ),
    # Queue --------------------------------------------------------------------
    Setting(
        "REDIS_URL",
        str,
        "",
        "Redis for RQ jobs; empty runs jobs in-process so one command serves.",
        secret=True,
    ),
    Setting(
        "REXLABEL_JOBS_DIR",
        str,
        "",
        "Where bulk jobs keep their image list, part files and progress; empty "
        "means ~/.local/state/rexlabel/jobs (state that must survive a reboot).",
    ),
    # Images -------------------------------------------------------------------
    Setting(
        "REXLABEL_ALLOWED_HOSTS",
        str,
        "",
        "Comma-separated hosts image URLs may come from besides Label Studio: "
        "host (port 80/443 only), host:port, *.suffix[:port], or * for any public "
        "host; empty blocks others (SSRF).",
        check=_check_allowed_hosts,
    ),
    Setting(
        "REXLABEL_DOWNLOAD_DEADLINE_S",
        float,
        DEFAULT_DOWNLOAD_DEADLINE_S,
        "Total seconds for one image download, redirects included: 256 MB at "
        "50 Mbit/s fits; a host dripping bytes cannot hold a worker.",
        minimum=1,
    ),
    Setting(
        "LOCAL_FILES_DOCUMENT_ROOT",
        str,
        "",
        "Label Studio's local-files root, mounted here: read those files from "
        "disk instead of through Label Studio.",
    ),
    Setting(
        "REXLABEL_MAX_IMAGE_PIXELS",
        int,
        MAX_IMAGE_PIXELS,
        "Pixels decoded at once (a JPEG's after DCT scaling): 32x the model's "
        "2 MP input, more only costs memory; a 61 MP photo still fits.",
        minimum=1,
    ),
    Setting(
        "REXLABEL_IMAGE_CACHE_MB",
        int,
        DEFAULT_IMAGE_CACHE_MB,
        "Downloaded-image cache (LRU by URL): about a hundred photos; 0 disables.",
        minimum=0,
    ),
    # Model and engine ---------------------------------------------------------
    Setting(
        "REXLABEL_MODEL",
        str,
        "IDEA-Research/Rex-Omni",
        "Hub id or local directory of the Rex-Omni weights.",
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_ENGINE",
        str,
        "transformers",
        "transformers runs everywhere; vllm is faster on GPUs; openai calls a "
        "served model.",
        choices=("transformers", "vllm", "openai"),
        changes_predictions=True,
    ),
    Setting("REXLABEL_DEVICE", str, "auto", "auto picks cuda when visible, else cpu."),
    Setting(
        "REXLABEL_MIN_PIXELS",
        int,
        MIN_PIXELS,
        "Smallest area an image is resized to before the model sees it: "
        "upstream's min_pixels (16 visual tokens).",
        minimum=28 * 28,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_MAX_PIXELS",
        int,
        MAX_PIXELS,
        "Largest area an image is resized to: upstream's max_pixels (2,560 visual "
        "tokens); lower saves memory and time, higher helps small objects.",
        minimum=28 * 28,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_SYSTEM_PROMPT",
        str,
        SYSTEM_PROMPT,
        "The chat's system message: upstream's, as the model was evaluated with; "
        "empty means upstream's too.",
        blank_is_default=True,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_QUANTIZATION",
        str,
        "none",
        "awq for an AWQ checkpoint (IDEA-Research/Rex-Omni-AWQ, CUDA only): vLLM "
        "loads it with quantization=awq, transformers checks its config says awq; "
        "not for openai (the server loads the model).",
        choices=("none", "awq"),
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_OPENAI_URL",
        str,
        "",
        "Base URL (…/v1) of an OpenAI-compatible server for the openai engine.",
    ),
    Setting(
        "REXLABEL_OPENAI_API_KEY",
        str,
        DEFAULT_OPENAI_API_KEY,
        "API key for that server; vLLM accepts any value unless started with one.",
        secret=True,
    ),
    Setting(
        "REXLABEL_OPENAI_CONCURRENCY",
        int,
        DEFAULT_OPENAI_CONCURRENCY,
        "Requests in flight to the OpenAI-compatible server, which batches them.",
        minimum=1,
    ),
    Setting(
        "REXLABEL_VLLM_MAX_MODEL_LEN",
        int,
        DEFAULT_VLLM_MAX_MODEL_LEN,
        "Prompt (up to ~2,700 tokens with the image) plus 4,096 output tokens; "
        "upstream's 4,096 cuts dense scenes.",
        minimum=256,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_VLLM_GPU_MEMORY_UTILIZATION",
        float,
        DEFAULT_VLLM_GPU_MEMORY_UTILIZATION,
        "Upstream's share of GPU memory for vLLM.",
        minimum=0.05,
    ),
    Setting(
        "REXLABEL_MAX_NEW_TOKENS",
        int,
        DEFAULT_MAX_NEW_TOKENS,
        "Upstream's default output cap; dense scenes need it.",
        minimum=1,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_MAX_INSTANCES",
        int,
        DEFAULT_MAX_INSTANCES,
        "Runaway guard: stop a generation past this many items (upstream users "
        "see hundreds of boxes on textured images).",
        minimum=1,
        changes_predictions=True,
    ),
    # SAM ----------------------------------------------------------------------
    Setting(
        "SAM_CHECKPOINT",
        str,
        "",
        "Local path to a segment-anything checkpoint; empty disables masks.",
        changes_predictions=True,
    ),
    Setting(
        "SAM_MODEL_TYPE",
        str,
        "",
        "vit_h, vit_l or vit_b; empty guesses it from the checkpoint file name.",
        changes_predictions=True,
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
    # Metrics ------------------------------------------------------------------
    Setting(
        "REXLABEL_WORKER_METRICS_PORT",
        int,
        9191,
        "Port of a worker's Prometheus /metrics (the backend serves its own on "
        "PORT), clear of node_exporter's 9100; 0 turns it off. A second worker "
        "on the same host finds it taken and runs without one.",
        minimum=0,
    ),
    Setting(
        "REXLABEL_WORKER_METRICS_HOST",
        str,
        "0.0.0.0",
        "Interface of a worker's /metrics: all, since Prometheus scrapes workers "
        "from another container or host; 127.0.0.1 keeps it local.",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"{name} is not a rexlabel setting") from None


PREDICTION_SETTINGS = tuple(s.name for s in SETTINGS if s.changes_predictions)
"""Settings whose value changes what the model answers (the worker must run
with the same values as the backend; share one environment file)."""


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
