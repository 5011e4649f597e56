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

from collections.abc import Mapping
from typing import Any

from common.setting_spec import Setting, SettingsError
from converters.geometry import MAX_IMAGE_PIXELS, MAX_PIXELS, MIN_PIXELS
from converters.prompts import SYSTEM_PROMPT
from converters.tiling import MAX_TILE_OVERLAP, TILE_MODES

__all__ = ["SETTINGS", "Setting", "SettingsError", "get", "read_all", "setting"]

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
DEFAULT_TILE_MODE = "auto"
"""REXLABEL_TILE's default: only images far past the model's 2 MP are tiled,
so everyday photos keep their one call (a tiled image costs a call per tile)."""
DEFAULT_TILE_SIZE = 1400
"""REXLABEL_TILE_SIZE's default, pixels of the image: the largest multiple of
28 whose square fits upstream's max_pixels (1400^2 = 1.96 MP), so the model
sees each tile unshrunk in the fewest tiles (2,500 visual tokens each)."""
MIN_TILE_SIZE = 112
"""Smallest tile side: the processor scales anything smaller up to its
min_pixels (112^2), so a smaller tile shows nothing more."""
DEFAULT_TILE_OVERLAP = 0.2
"""REXLABEL_TILE_OVERLAP's default, a share of the tile side (280 px of 1400):
an object up to that size is whole in some tile; SAHI's default too."""
DEFAULT_TILE_WHOLE_IMAGE = True
"""REXLABEL_TILE_WHOLE_IMAGE's default: one more call over the whole image
finds the objects larger than the overlap, which tiles cut."""
DEFAULT_TILE_AUTO_SHRINK = 3.0
"""REXLABEL_TILE_AUTO_SHRINK's default: ``auto`` tiles an image whose sides
the resize to max_pixels divides by more than this, above 18 MP at 2 MP
(a 24 MP camera frame, aerial photos; a 12 MP phone photo, 2.4, is not)."""
DEFAULT_TILE_MAX_TILES = 64
"""REXLABEL_TILE_MAX_TILES's default: a 64 MP decode of camera proportions
(9800 x 6550) in default tiles needs 54 (the worst 64 MP shape, 1401 x 45842,
82: ``auto`` grows its tiles to fit, ``on`` fails); far more means a tile size
too small for the image."""


def _check_label_studio_url(url: str) -> None:
    """Parsed as the HTTP client parses it (credentials go only there)."""
    from common.urls import parse_http_url

    parse_http_url(url)


def _check_allowed_hosts(raw: str) -> None:
    """Every entry is host, host:port, *.suffix[:port] or *."""
    from common.images.hosts import parse_allowed_hosts

    parse_allowed_hosts(raw)


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
    Setting(
        "REXLABEL_MODELS_DIR",
        str,
        "",
        "Where Label Studio's Start Training writes a project's fine-tuned "
        "models (<dir>/project-<id>/<run>, with a current pointer); empty means "
        "~/.local/share/rexlabel/models.",
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
        "2 MP input; a 61 MP photo fits. Untiled images are held at 2 MP, tiled "
        "ones at up to this.",
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
        "auto",
        "auto: vllm where the worker has a GPU and vLLM is installed (and the "
        "model is not a LoRA adapter), else transformers; transformers runs "
        "everywhere; vllm is faster on GPUs; openai calls a served model.",
        choices=("auto", "transformers", "vllm", "openai"),
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
        "REXLABEL_TRANSFORMERS_STATIC_CACHE",
        bool,
        False,
        "transformers engine: a static KV cache, which on CUDA compiles the "
        "decoding step into CUDA graphs (a minute per new batch size); off until "
        "bench/gpu_check.sh shows it faster on your GPU.",
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
    # Tiled inference ----------------------------------------------------------
    Setting(
        "REXLABEL_TILE",
        str,
        DEFAULT_TILE_MODE,
        "Tiled inference: auto tiles an image the model would shrink more than "
        "REXLABEL_TILE_AUTO_SHRINK times; on tiles all, off none.",
        choices=TILE_MODES,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_TILE_SIZE",
        int,
        DEFAULT_TILE_SIZE,
        "Tile side in image pixels: the largest multiple of 28 whose square "
        "fits max_pixels, so the model sees a tile unshrunk.",
        minimum=MIN_TILE_SIZE,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_TILE_OVERLAP",
        float,
        DEFAULT_TILE_OVERLAP,
        "Share of a tile its neighbours overlap (280 px of 1400): an object "
        "that small is whole in some tile.",
        minimum=0.0,
        maximum=MAX_TILE_OVERLAP,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_TILE_WHOLE_IMAGE",
        bool,
        DEFAULT_TILE_WHOLE_IMAGE,
        "Add a call on the whole image to the tiles: it finds objects larger "
        "than the overlap whole.",
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_TILE_AUTO_SHRINK",
        float,
        DEFAULT_TILE_AUTO_SHRINK,
        "auto tiles an image whose sides the resize to max_pixels divides by "
        "more than this: above 18 MP at 2 MP; a 12 MP photo stays one call.",
        minimum=1.0,
        changes_predictions=True,
    ),
    Setting(
        "REXLABEL_TILE_MAX_TILES",
        int,
        DEFAULT_TILE_MAX_TILES,
        "Most tiles per image: a 64 MP image in default tiles needs 54; a call "
        "needing more fails, naming its count.",
        minimum=1,
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
