"""Fine-tune a Rex-Omni model on a prepared data directory (``rexlabel finetune``).

Reads the examples ``common.finetune_data`` describes, loads the base model
(``worker.engines.transformers_loading``, a fine-tuned directory's adapters
merged in), adds LoRA adapters through PEFT (``method="lora"``) or trains
every weight of the language model (``method="full"``), and runs
:class:`~worker.training.finetune_batches.BatchPlan`'s batches: new examples
mixed with replay. The loss is the trainer's (``worker.training.trainer``):
cross-entropy on the answer tokens, coordinates optionally with soft targets.

- A checkpoint (``<out>/checkpoint``: the trainable weights, the optimizer,
  the step) is written every ``checkpoint_every`` steps and when the run is
  interrupted (Ctrl-C, SIGINT, SIGTERM); ``resume=True`` continues from it
  with the very batches the run would have had.
- Out of memory stops the run (:class:`FinetuneOutOfMemory`) and keeps the
  last checkpoint.
- The result is written into ``<out>``: the adapter (LoRA) or the weights and
  processor (full, or LoRA with ``merge``); the caller writes the card.

torch, transformers and peft are imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from common.finetune_data import Record, data_dir, read_split
from worker.training.finetune_batches import REPLAY_POOL, BatchPlan
from worker.training.lora import LoraSettings, add_lora, load_lora, trainable_parameters
from worker.training.trainer import (
    DEFAULT_MAX_GRAD_NORM,
    TrainingExample,
    answer_span,
    encode_batch,
    soft_bin_loss,
)

METHODS = ("lora", "full")
CHECKPOINT_DIR_NAME = "checkpoint"
CHECKPOINT_STATE = "trainer_state.pt"
CHECKPOINT_META = "progress.json"
ADAPTER_SUBDIR = "adapter"
FULL_SUBDIR = "model"
FULL_WEIGHTS = "trainable.safetensors"
"""A full fine-tune's checkpoint: the trainable (language-model) weights
only, loaded back into the base model the run already holds (no second copy
of the model, and the base's processor stays)."""

DEFAULT_STEPS_PER_EPOCH_CAP = None
DEFAULT_EPOCHS = 3.0
"""Passes over the new examples when neither steps nor epochs are given: a few
passes teach a class; many more overfit a small project and forget more."""
DEFAULT_FINETUNE_BATCH_SIZE = 8
"""Examples per step: fits a 3B model with LoRA at 640x480 in bf16 on one
24 GB GPU (bench/bench_finetune.py measures it where a GPU is lent)."""
DEFAULT_LR = {"lora": 2e-4, "full": 1e-5}
"""Learning rates: the usual LoRA rate for 3B VLMs, and a full fine-tune's
20x smaller one (every weight moves, so each must move less)."""
DEFAULT_REPLAY_SHARE = 0.5
"""Half of each batch replays earlier behaviour: measured on the tiny model
(issue 14), a new class alone wiped the old classes out (IoU 0.45 -> 0.00);
with half of each batch replayed they kept it (0.45) and the new class still
reached 0.80."""
DEFAULT_CHECKPOINT_EVERY = 100
"""Steps between checkpoints: at most a few minutes lost to a crash on a GPU,
and few writes of the optimizer state (three times the adapter's size)."""
DEFAULT_WARMUP_SHARE = 0.05
"""Share of the steps spent warming the learning rate up (then cosine decay)."""
DEFAULT_BIN_SIGMA = 0.0
"""Plain cross-entropy on coordinate tokens, as upstream's SFT trains; the
tiny model learns faster with soft targets (its trainer uses 15 bins)."""
IMAGE_CACHE_SIZE = 512
"""Decoded images kept in memory: a small project's images are all reused
every pass; a large one's are read from disk (a stored image is < 2 MB)."""
LORA_HINT = " or --method lora"
"""What an out-of-memory message adds for a full fine-tune."""
OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory")
"""Texts of the errors torch raises when memory runs out (CUDA, CPU, MPS)."""


class FinetuneError(RuntimeError):
    """The run cannot go on; the message says why and what to do."""


class FinetuneOutOfMemory(FinetuneError):
    """Memory ran out; the last checkpoint is kept."""


class FinetuneInterrupted(FinetuneError):
    """Stopped by a signal; a checkpoint of the finished steps was written."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class FinetuneSettings:
    """What one run does (every default is a named constant above)."""

    base: str
    steps: int
    method: str = "lora"
    batch_size: int = DEFAULT_FINETUNE_BATCH_SIZE
    learning_rate: float | None = None
    replay_share: float = DEFAULT_REPLAY_SHARE
    bin_sigma: float = DEFAULT_BIN_SIGMA
    lora: LoraSettings = field(default_factory=LoraSettings)
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    warmup_share: float = DEFAULT_WARMUP_SHARE
    seed: int = 0
    device: str | None = "auto"
    merge: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"learning rate must be > 0, got {self.learning_rate}")
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        if not 0.0 <= self.replay_share < 1.0:
            raise ValueError(f"replay share must be in [0, 1), got {self.replay_share}")
        if not (self.bin_sigma >= 0 and math.isfinite(self.bin_sigma)):
            raise ValueError(f"bin sigma must be a number >= 0, got {self.bin_sigma}")

    @property
    def lr(self) -> float:
        return (
            self.learning_rate
            if self.learning_rate is not None
            else DEFAULT_LR[self.method]
        )


@dataclass(frozen=True)
class StepProgress:
    step: int
    steps: int
    loss: float
    steps_per_s: float
    eta_s: float


@dataclass
class FinetuneResult:
    steps: int
    seconds: float
    final_loss: float
    losses: list[tuple[int, float]]
    trainable_parameters: int
    total_parameters: int
    resumed_from: int
    weights_sha256: str
    files: list[str]


Events = Callable[[str, dict[str, Any]], None]
"""``on_event(name, fields)``: ``step`` (a :class:`StepProgress` as dict),
``checkpoint``, ``loaded``."""


def steps_for(
    train_size: int, batch_size: int, replay_share: float, epochs: float
) -> int:
    """Steps that make ``epochs`` passes over ``train_size`` new examples."""
    plan = BatchPlan(train_size, 1 if replay_share else 0, batch_size, replay_share)
    return max(1, math.ceil(epochs * train_size / plan.train_per_batch))


def load_base(base: str, device: str | None, *, dtype: Any = None):
    """``(model, processor)`` of ``base``: a hub id, a model directory, or a
    fine-tuned directory (its adapters merged into their base, in order)."""
    from worker.engines.transformers_loading import load_model

    return load_model(base, device, dtype=dtype)


class ImageCache:
    """Stored images of a data directory, decoded once and kept (LRU)."""

    def __init__(self, root: Path, size: int = IMAGE_CACHE_SIZE) -> None:
        self.root = Path(root)
        self.size = size
        self._images: OrderedDict[str, Image.Image] = OrderedDict()

    def get(self, relative: str) -> Image.Image:
        image = self._images.get(relative)
        if image is None:
            path = self.root / relative
            try:
                with Image.open(path) as opened:
                    image = opened.convert("RGB")
            except OSError as exc:
                raise FinetuneError(f"cannot read stored image {path}: {exc}") from exc
            self._images[relative] = image
            if len(self._images) > self.size:
                self._images.popitem(last=False)
        else:
            self._images.move_to_end(relative)
        return image


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch running out of memory (CUDA, CPU, MPS)."""
    name = type(exc).__name__
    return name == "OutOfMemoryError" or any(m in str(exc).lower() for m in OOM_MARKERS)


class _Signals:
    """SIGINT/SIGTERM become KeyboardInterrupt at the next safe point (after
    the step), so a checkpoint is never written from half an optimizer step."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.received is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def run_finetune(
    out_dir: Path,
    settings: FinetuneSettings,
    *,
    resume: bool = False,
    on_event: Events | None = None,
    loaded: tuple[Any, Any] | None = None,
) -> tuple[FinetuneResult, Any, Any]:
    """Train on ``<out_dir>/data`` and write the result into ``out_dir``.

    Returns ``(result, model, processor)``: the trained model (adapters merged,
    in eval mode), for held-out predictions. ``loaded`` is the base's
    ``(model, processor)`` when the caller has it already.
    """
    import torch

    emit = on_event or (lambda name, fields: None)
    out_dir = Path(out_dir)
    data = data_dir(out_dir)
    train = read_split(data, "train")
    replay = read_split(data, "replay") + [
        r for r in read_split(data, "replay_answers") if not r.held_out
    ]
    if not train:
        raise FinetuneError(f"{data} holds no training examples")
    plan = BatchPlan(
        len(train),
        len(replay),
        settings.batch_size,
        settings.replay_share,
        settings.seed,
    )
    torch.manual_seed(settings.seed)
    model, processor = loaded or load_base(settings.base, settings.device)
    device = next(model.parameters()).device
    checkpoint = out_dir / CHECKPOINT_DIR_NAME
    previous = checkpoint.with_name(checkpoint.name + ".old")
    if resume and not checkpoint.exists() and previous.is_dir():
        os.replace(previous, checkpoint)  # a crash between a save's two renames
    start = 0
    if settings.method == "lora":
        if resume and (checkpoint / ADAPTER_SUBDIR).is_dir():
            model = load_lora(model, str(checkpoint / ADAPTER_SUBDIR), trainable=True)
        else:
            model = add_lora(model, settings.lora)
    else:
        _freeze_vision(model)
        if resume and (checkpoint / FULL_SUBDIR).is_dir():
            _load_trainable(model, checkpoint / FULL_SUBDIR / FULL_WEIGHTS)
    model.to(device)
    trainable, total = trainable_parameters(model)
    emit("loaded", {"trainable_parameters": trainable, "total_parameters": total})
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    warmup = max(1, round(settings.steps * settings.warmup_share))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup, settings.steps)
    )
    losses: list[tuple[int, float]] = []
    if resume and (checkpoint / CHECKPOINT_META).is_file():
        start, losses = _load_state(checkpoint, optimizer, scheduler, settings)
    elif resume:  # stopped before the first checkpoint: the same run from step 1
        emit("checkpoint", {"step": 0, "path": "none yet: starting at step 1"})
    first_bin = processor.tokenizer.convert_tokens_to_ids("<0>")
    images = ImageCache(data)
    pools = {"train": train, REPLAY_POOL: replay}
    started = time.perf_counter()
    step = start
    model.train()
    with _Signals() as signals:
        try:
            for step in range(start, settings.steps):
                batch = [
                    _example(pools[pool][i], images) for pool, i in plan.batch(step)
                ]
                loss = _train_step(
                    model, processor, batch, optimizer, first_bin, settings, device
                )
                scheduler.step()
                losses.append((step + 1, loss))
                done = step + 1 - start
                rate = done / max(time.perf_counter() - started, 1e-9)
                emit(
                    "step",
                    StepProgress(
                        step + 1,
                        settings.steps,
                        loss,
                        rate,
                        (settings.steps - step - 1) / rate,
                    ).__dict__,
                )
                if (
                    step + 1
                ) % settings.checkpoint_every == 0 and step + 1 < settings.steps:
                    _save_checkpoint(
                        checkpoint,
                        model,
                        optimizer,
                        scheduler,
                        step + 1,
                        losses,
                        settings,
                    )
                    emit("checkpoint", {"step": step + 1, "path": str(checkpoint)})
                if signals.received is not None:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            finished = losses[-1][0] if losses else start
            if finished > start or not checkpoint.exists():
                _save_checkpoint(
                    checkpoint, model, optimizer, scheduler, finished, losses, settings
                )
            emit("checkpoint", {"step": finished, "path": str(checkpoint)})
            raise FinetuneInterrupted(
                f"interrupted after step {finished} of {settings.steps}; the "
                f"checkpoint is in {checkpoint}: run the same command with "
                "--resume to go on",
                finished,
            ) from None
        except Exception as exc:
            if is_out_of_memory(exc):
                kept = (
                    f"the last checkpoint ({checkpoint}) is kept; --resume goes "
                    "on from it at the same batch size (on a GPU with more memory "
                    "free)"
                    if checkpoint.exists()
                    else "no checkpoint was written yet"
                )
                raise FinetuneOutOfMemory(
                    f"out of memory at step {step + 1} (batch size "
                    f"{settings.batch_size}, method {settings.method}): try a smaller "
                    f"--batch-size{LORA_HINT if settings.method == 'full' else ''} "
                    f"into a new --out (a run keeps its batch size); {kept}"
                ) from exc
            raise
    model.eval()
    files = _save_result(out_dir, model, processor, settings)
    seconds = time.perf_counter() - started
    if settings.method == "lora":
        model = model.merge_and_unload()
    model.eval()
    result = FinetuneResult(
        steps=settings.steps,
        seconds=seconds,
        final_loss=losses[-1][1] if losses else math.nan,
        losses=_thin(losses),
        trainable_parameters=trainable,
        total_parameters=total,
        resumed_from=start,
        weights_sha256=files_sha256(out_dir, files),
        files=files,
    )
    return result, model, processor


def drop_checkpoint(out_dir: Path) -> None:
    """Remove the run's checkpoint once its result and card are written."""
    for name in (CHECKPOINT_DIR_NAME, CHECKPOINT_DIR_NAME + ".old"):
        shutil.rmtree(Path(out_dir) / name, ignore_errors=True)


def _save_trainable(model, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            name: p.detach().contiguous()
            for name, p in model.named_parameters()
            if p.requires_grad
        },
        str(path),
    )


def _load_trainable(model, path: Path) -> None:
    """Copy a full fine-tune checkpoint's weights into ``model`` in place."""
    import torch
    from safetensors.torch import load_file

    if not path.is_file():
        raise FinetuneError(f"--resume: the checkpoint has no {path.name} ({path})")
    saved = load_file(str(path))
    parameters = dict(model.named_parameters())
    unknown = sorted(set(saved) - {n for n, p in parameters.items() if p.requires_grad})
    if unknown:
        raise FinetuneError(
            f"--resume: {path} holds weights this model does not train: "
            f"{', '.join(unknown[:3])}"
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            parameters[name].copy_(tensor)


def _freeze_vision(model) -> None:
    """A full fine-tune trains the language model; the vision tower stays."""
    for name, parameter in model.named_parameters():
        if ".visual." in f".{name}" or name.startswith("visual."):
            parameter.requires_grad_(False)


def _lr_factor(step: int, warmup: int, steps: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _example(record: Record, images: ImageCache) -> TrainingExample:
    return TrainingExample(
        image=images.get(record.image), prompt=record.prompt, answer=record.answer
    )


def _train_step(
    model, processor, batch, optimizer, first_bin, settings, device
) -> float:
    import torch

    inputs = {k: v.to(device) for k, v in encode_batch(processor, batch).items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(
            next(model.parameters()).dtype
        )
    labels = inputs.pop("labels")
    keep = answer_span(labels) + 1
    logits = model(**inputs, logits_to_keep=keep).logits
    loss = soft_bin_loss(
        logits[:, :-1],
        labels[:, labels.shape[1] - keep + 1 :],
        first_bin=first_bin,
        sigma=settings.bin_sigma,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], DEFAULT_MAX_GRAD_NORM
    )
    optimizer.step()
    return float(loss.detach())


def _save_checkpoint(
    checkpoint, model, optimizer, scheduler, step, losses, settings
) -> None:
    """Write the checkpoint beside the old one, then swap (a crash mid-write
    leaves the previous checkpoint whole)."""
    import torch

    tmp = checkpoint.with_name(checkpoint.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if settings.method == "lora":
        model.save_pretrained(tmp / ADAPTER_SUBDIR)
    else:
        _save_trainable(model, tmp / FULL_SUBDIR / FULL_WEIGHTS)
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_state(),
        },
        tmp / CHECKPOINT_STATE,
    )
    meta = {
        "step": step,
        "steps": settings.steps,
        "method": settings.method,
        "batch_size": settings.batch_size,
        "seed": settings.seed,
        "replay_share": settings.replay_share,
        "base": settings.base,
        "learning_rate": settings.lr,
        "lora_rank": settings.lora.rank,
        "bin_sigma": settings.bin_sigma,
        "losses": losses,
    }
    (tmp / CHECKPOINT_META).write_text(json.dumps(meta))
    old = checkpoint.with_name(checkpoint.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if checkpoint.exists():
        os.replace(checkpoint, old)
    os.replace(tmp, checkpoint)
    shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict[str, Any]:
    """torch's random state (CPU and every GPU): LoRA's dropout draws from it,
    so a resumed run draws the masks the uninterrupted run would have."""
    import torch

    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def _set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


RESUME_MUST_MATCH = (
    "method",
    "batch_size",
    "seed",
    "replay_share",
    "base",
    "learning_rate",
    "lora_rank",
    "bin_sigma",
)
"""Settings a resumed run must share with its checkpoint: they decide the
batches, the schedule and the weights trained (the optimizer and adapter come
back from the checkpoint, so a changed value would be recorded but not used)."""


def _load_state(checkpoint: Path, optimizer, scheduler, settings) -> tuple[int, list]:
    import torch

    meta_path = checkpoint / CHECKPOINT_META
    if not meta_path.is_file():
        raise FinetuneError(f"--resume: no checkpoint in {checkpoint}")
    meta = json.loads(meta_path.read_text())
    asked = {
        **{key: getattr(settings, key, None) for key in RESUME_MUST_MATCH},
        "learning_rate": settings.lr,
        "lora_rank": settings.lora.rank,
    }
    for key in RESUME_MUST_MATCH:
        if key in meta and meta[key] != asked[key]:
            raise FinetuneError(
                f"--resume: the checkpoint was trained with {key}={meta.get(key)!r}, "
                f"this run asks {asked[key]!r}; use the same value"
            )
    state = torch.load(checkpoint / CHECKPOINT_STATE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if "rng" in state:
        _set_rng_state(state["rng"])
    step = int(meta["step"])
    if step >= settings.steps:
        raise FinetuneError(
            f"--resume: the checkpoint is at step {step}, the run asks "
            f"{settings.steps} steps"
        )
    return step, [tuple(x) for x in meta.get("losses", [])]


def _save_result(out_dir: Path, model, processor, settings) -> list[str]:
    """The adapter (LoRA) or every weight and the processor; returns the files."""
    before = {p.name for p in out_dir.iterdir()}
    if settings.method == "lora" and not settings.merge:
        model.save_pretrained(out_dir)
    else:
        merged = model.merge_and_unload() if settings.method == "lora" else model
        merged.save_pretrained(out_dir)
        processor.save_pretrained(out_dir)
    return sorted(
        p.name
        for p in out_dir.iterdir()
        if p.is_file()
        and (p.name not in before or p.suffix in (".safetensors", ".json"))
        and not p.name.startswith(".")
    )


def files_sha256(directory: Path, names: Sequence[str]) -> str:
    """SHA-256 over the weight files (``*.safetensors``) among ``names``."""
    digest = hashlib.sha256()
    for name in sorted(names):
        if not name.endswith(".safetensors"):
            continue
        digest.update(name.encode() + b"\0")
        with open(directory / name, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _thin(losses: list[tuple[int, float]], keep: int = 200) -> list[tuple[int, float]]:
    """At most ``keep`` (step, loss) points, evenly spaced, the last included."""
    if len(losses) <= keep:
        return list(losses)
    stride = len(losses) / keep
    picked = [losses[int(i * stride)] for i in range(keep - 1)]
    return [*picked, losses[-1]]
