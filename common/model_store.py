"""Fine-tuned model directories: the model card, a project's models directory
and its ``current`` pointer (no torch here: the backend and the worker both
read them).

``rexlabel finetune --out DIR`` writes one model directory::

    DIR/rexlabel-model.json     the model card (what it is, what made it)
    DIR/adapter_config.json     method lora: a PEFT LoRA adapter; the card
    DIR/adapter_model.safetensors   names the base it applies to
    DIR/config.json, DIR/model*.safetensors, processor files   method full

Training jobs from Label Studio ("Start Training") write runs into the
project's models directory and move its pointer when a run succeeds::

    <REXLABEL_MODELS_DIR>/project-<id>/current          text: the run's name
    <REXLABEL_MODELS_DIR>/project-<id>/<run name>/      a model directory

``REXLABEL_MODEL`` may name a model directory or a project's models directory;
:func:`resolve_model` follows the pointer. The model version Label Studio sees
includes :func:`weights_identity`, so it changes when the weights change.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import settings

MODEL_CARD_NAME = "rexlabel-model.json"
"""The model card's file name in a fine-tuned model directory."""
CURRENT_POINTER = "current"
"""File in a project's models directory naming the run that is served."""
CARD_FORMAT = "rexlabel-model/1"
"""The card's ``format`` value; a reader refuses others."""
METHODS = ("lora", "full")
"""How a model directory holds its weights: a LoRA adapter over the card's
``base``, or every weight."""
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""What a run name (the pointer's content) may be: one path component, so a
pointer can never lead outside its models directory."""
MAX_BASE_DEPTH = 8
"""Most adapters stacked through ``base`` (a fine-tune of a fine-tune...);
deeper, or a loop, is refused instead of recursing forever."""
DEFAULT_MODELS_DIR = "~/.local/share/rexlabel/models"
"""XDG data directory: trained weights are data the user keeps, not a cache."""
CARD_MAX_BYTES = 1_000_000
"""A card larger than this is not one of ours (it holds counts and metrics)."""


class ModelStoreError(ValueError):
    """A model directory, card or pointer cannot be used; says which and why."""


def models_root() -> Path:
    """``REXLABEL_MODELS_DIR``, else :data:`DEFAULT_MODELS_DIR`."""
    return Path(settings.get("REXLABEL_MODELS_DIR") or DEFAULT_MODELS_DIR).expanduser()


def project_models_dir(project_id: int, root: Path | None = None) -> Path:
    """``<root>/project-<id>``: where a project's training jobs write runs."""
    if isinstance(project_id, bool) or not isinstance(project_id, int):
        raise ModelStoreError(f"project id must be an integer, got {project_id!r}")
    if project_id < 1:
        raise ModelStoreError(f"project id must be >= 1, got {project_id}")
    return (root or models_root()) / f"project-{project_id}"


def new_run_name(suffix: str = "") -> str:
    """``run-YYYYmmdd-HHMMSS[-suffix]`` (UTC), sortable by time."""
    name = time.strftime("run-%Y%m%d-%H%M%S", time.gmtime())
    suffix = re.sub(r"[^A-Za-z0-9]", "", suffix)[:16]
    return f"{name}-{suffix}" if suffix else name


def read_pointer(models_dir: Path) -> str | None:
    """The run name ``models_dir/current`` holds, None without a pointer."""
    pointer = Path(models_dir) / CURRENT_POINTER
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelStoreError(f"cannot read {pointer}: {exc}") from exc
    if not RUN_NAME.match(name):
        raise ModelStoreError(
            f"{pointer} holds {name[:80]!r}, not a run name (one directory name "
            "of letters, digits, '.', '_' or '-')"
        )
    return name


def publish(models_dir: Path, run_name: str) -> None:
    """Point ``models_dir/current`` at ``run_name`` (atomic: a reader sees the
    old run or the new one, never half a name)."""
    if not RUN_NAME.match(run_name):
        raise ModelStoreError(f"{run_name!r} is not a run name")
    run = Path(models_dir) / run_name
    if not (run / MODEL_CARD_NAME).is_file():
        raise ModelStoreError(f"{run} has no {MODEL_CARD_NAME}: not a finished run")
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=".current-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(run_name + "\n")
        os.replace(tmp, Path(models_dir) / CURRENT_POINTER)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_model(ref: str) -> str:
    """The model directory or hub id ``ref`` serves: a project's models
    directory (one with a ``current`` pointer) gives the run it points at;
    anything else is returned as it is."""
    path = Path(ref).expanduser()
    if not path.is_dir() or not (path / CURRENT_POINTER).exists():
        return ref
    name = read_pointer(path)
    run = path / str(name)
    if not run.is_dir():
        raise ModelStoreError(
            f"{path / CURRENT_POINTER} names {name!r}, which is missing"
        )
    return str(run)


def read_card(model_dir: str | Path) -> dict[str, Any] | None:
    """The model card of a local model directory, None when it has none (a hub
    id, or plain weights); raises :class:`ModelStoreError` on a bad card."""
    path = Path(model_dir).expanduser() / MODEL_CARD_NAME
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > CARD_MAX_BYTES:
            raise ModelStoreError(f"{path} is over {CARD_MAX_BYTES} bytes")
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelStoreError(f"cannot read {path}: {exc}") from exc
    if not isinstance(card, Mapping) or card.get("format") != CARD_FORMAT:
        raise ModelStoreError(f"{path} is not a {CARD_FORMAT} card")
    if card.get("method") not in METHODS:
        raise ModelStoreError(
            f"{path}: method {card.get('method')!r}, expected one of "
            f"{', '.join(METHODS)}"
        )
    if card["method"] == "lora" and not isinstance(card.get("base"), str):
        raise ModelStoreError(f"{path}: a LoRA adapter's card must name its base")
    return dict(card)


def write_card(model_dir: Path, card: Mapping[str, Any]) -> None:
    """Write the card (atomic); ``format`` is added."""
    body = {"format": CARD_FORMAT, **dict(card)}
    if body.get("method") not in METHODS:
        raise ModelStoreError(f"method {body.get('method')!r} is not one of {METHODS}")
    fd, tmp = tempfile.mkstemp(dir=model_dir, prefix=".card-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(body, out, indent=2, sort_keys=True, default=str)
            out.write("\n")
        os.replace(tmp, Path(model_dir) / MODEL_CARD_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def base_chain(model_dir: str) -> list[tuple[str, dict[str, Any] | None]]:
    """``[(dir, card), ...]`` from ``model_dir`` down to the first model with
    every weight (a hub id or a full fine-tune), each adapter's base after it.
    A relative ``base`` is read from its adapter's directory."""
    chain: list[tuple[str, dict[str, Any] | None]] = []
    ref = resolve_model(model_dir)
    seen: set[str] = set()
    while True:
        if ref in seen or len(chain) > MAX_BASE_DEPTH:
            raise ModelStoreError(
                f"{model_dir}: the adapters' bases loop or stack over "
                f"{MAX_BASE_DEPTH} deep"
            )
        seen.add(ref)
        card = read_card(ref) if Path(ref).expanduser().is_dir() else None
        chain.append((ref, card))
        if card is None or card["method"] != "lora":
            return chain
        base = str(card["base"])
        local = Path(ref).expanduser() / base
        ref = resolve_model(
            str(local) if not Path(base).is_absolute() and local.exists() else base
        )


def original_base(ref: str) -> str:
    """The model no run of ours made that ``ref`` descends from: the cards'
    ``base`` followed (LoRA and full fine-tunes alike) down to a hub id or a
    directory without a card. Training jobs start there, so runs never stack
    and one project's run never becomes another's starting point."""
    seen: set[str] = set()
    current = resolve_model(ref)
    while True:
        if current in seen or len(seen) > MAX_BASE_DEPTH:
            raise ModelStoreError(
                f"{ref}: the cards' bases loop or stack over {MAX_BASE_DEPTH} deep"
            )
        seen.add(current)
        path = Path(current).expanduser()
        card = read_card(path) if path.is_dir() else None
        base = card.get("base") if card else None
        if not isinstance(base, str) or not base:
            return current
        local = path / base
        current = resolve_model(
            str(local) if not Path(base).is_absolute() and local.exists() else base
        )


def weights_identity(ref: str) -> str | None:
    """What identifies the weights ``ref`` serves, for the model version: the
    card's ``weights_sha256`` (with its bases') for a fine-tuned directory,
    None for a hub id or a directory without a card (the setting's value
    already names those)."""
    try:
        chain = base_chain(ref)
    except ModelStoreError as exc:
        return f"unreadable: {exc}"
    digests = [str(card.get("weights_sha256", "")) for _, card in chain if card]
    return "+".join(digests) if digests else None
