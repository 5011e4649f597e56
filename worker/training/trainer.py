"""A small supervised trainer for Qwen2.5-VL models that speak Rex-Omni's grammar.

Generic over the data: any iterable of :class:`TrainingExample` (an image, the
prompt and the answer text). It teaches the tiny test model on synthetic
shapes (``worker.training.synthetic``) and can fine-tune the real model on annotations
turned into answers by ``converters.format_answer``.

The loss is the causal-LM loss on the answer tokens only (the prompt and
image tokens are context). Coordinate tokens get Gaussian soft targets over
neighbouring bins, so a prediction one bin off costs little and the model
learns that bins are ordered. Training is seeded and runs a fixed number of
steps, so a given configuration always gives the same model.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from converters.grammar import IM_END, NUM_BINS
from converters.prompts import build_messages

IGNORE_INDEX = -100
"""Label of positions that carry no loss (prompt, image and padding tokens)."""

DEFAULT_BATCH_SIZE = 32
"""Examples per step: stable gradients for the 1M-parameter tiny model."""
DEFAULT_LEARNING_RATE = 2e-3
"""AdamW step size that trains the tiny model in a few hundred steps."""
DEFAULT_WARMUP_STEPS = 20
"""Linear warm-up, then cosine decay to zero: avoids early divergence at 2e-3."""
DEFAULT_BIN_SIGMA = 15.0
"""Width (in bins) of the Gaussian soft target of coordinate tokens (measured)."""
DEFAULT_MAX_GRAD_NORM = 1.0
"""Gradient clipping; keeps rare large steps from undoing progress."""
DEFAULT_WEIGHT_DECAY = 0.0
"""No decay: the tiny model underfits rather than overfits infinite data."""


@dataclass
class TrainingExample:
    """One supervised example.

    Attributes:
        image: the image the prompt is about.
        prompt: the user's question (``converters.build_prompt``).
        answer: the assistant's answer in the model's grammar, without the
            final ``<|im_end|>`` (``converters.format_answer``).
    """

    image: Image.Image
    prompt: str
    answer: str


@dataclass
class TrainConfig:
    """Hyper-parameters; every default is the tiny model's measured recipe."""

    steps: int
    batch_size: int = DEFAULT_BATCH_SIZE
    learning_rate: float = DEFAULT_LEARNING_RATE
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    bin_sigma: float = DEFAULT_BIN_SIGMA
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.bin_sigma < 0:
            raise ValueError(f"bin_sigma must be >= 0, got {self.bin_sigma}")


@dataclass
class TrainStats:
    """What a training run did: losses every ``log_every`` steps, wall time."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        return self.losses[-1][1] if self.losses else math.nan


def encode_batch(processor, examples: list[TrainingExample]) -> dict[str, Any]:
    """Tokenise prompt + answer per example, left-padded, with labels.

    Returns the processor's tensors plus ``labels``: the answer's token ids
    (and the stop token), ``IGNORE_INDEX`` elsewhere. Left padding puts every
    answer at the end, so the loss needs logits for the last positions only.
    """
    import torch

    tokenizer = processor.tokenizer
    prompts = [
        processor.apply_chat_template(
            build_messages(e.prompt, e.image),
            tokenize=False,
            add_generation_prompt=True,
        )
        for e in examples
    ]
    inputs = processor(
        text=prompts,
        images=[e.image.convert("RGB") for e in examples],
        padding=False,
        return_tensors=None,
    )
    sequences, labels, answer_lengths = [], [], []
    for prompt_ids, example in zip(inputs["input_ids"], examples, strict=True):
        # every answer ends with the end-of-turn token: the model learns to stop
        answer = tokenizer(example.answer + IM_END, add_special_tokens=False)
        sequences.append(list(prompt_ids) + answer["input_ids"])
        labels.append([IGNORE_INDEX] * len(prompt_ids) + answer["input_ids"])
        answer_lengths.append(len(answer["input_ids"]))
    length = max(len(s) for s in sequences)

    def left_pad(rows, value):
        return torch.tensor([[value] * (length - len(r)) + list(r) for r in rows])

    batch = {
        "input_ids": left_pad(sequences, tokenizer.pad_token_id),
        "attention_mask": left_pad([[1] * len(s) for s in sequences], 0),
        "labels": left_pad(labels, IGNORE_INDEX),
        "pixel_values": torch.as_tensor(_stack(inputs["pixel_values"])),
        "image_grid_thw": torch.as_tensor(_stack(inputs["image_grid_thw"])),
    }
    if "mm_token_type_ids" in inputs:  # image/text type per token: answers are text
        types = [
            list(t) + [0] * n
            for t, n in zip(inputs["mm_token_type_ids"], answer_lengths, strict=True)
        ]
        batch["mm_token_type_ids"] = left_pad(types, 0)
    return batch


def answer_span(labels) -> int:
    """Positions from the end of the batch that hold the first labelled token."""
    labelled = (labels != IGNORE_INDEX).any(dim=0).nonzero()
    return int(labels.shape[1] - labelled[0]) if len(labelled) else 0


def _stack(values):
    import numpy as np

    if isinstance(values, list):
        return np.concatenate([np.asarray(v) for v in values], axis=0)
    return values


def soft_bin_loss(logits, labels, *, first_bin: int, sigma: float):
    """Mean loss over labelled positions of next-token ``logits``.

    ``logits``: (batch, seq, vocab) for positions predicting ``labels``
    (already shifted). Non-bin targets: cross-entropy. Bin targets: cross-
    entropy against a Gaussian over the 1000 bins centred on the target bin
    with ``sigma`` bins (sigma 0 is the plain one-hot loss).
    """
    import torch

    mask = labels != IGNORE_INDEX
    targets = labels[mask]
    log_probs = torch.log_softmax(logits[mask].float(), dim=-1)
    value = targets - first_bin
    is_bin = (value >= 0) & (value < NUM_BINS)
    losses = -log_probs.gather(1, targets[:, None]).squeeze(1)
    if sigma > 0 and bool(is_bin.any()):
        bins = torch.arange(NUM_BINS, device=logits.device, dtype=torch.float32)
        centres = value[is_bin].float()[:, None]
        weights = torch.exp(-0.5 * ((bins[None, :] - centres) / sigma) ** 2)
        weights = weights / weights.sum(dim=1, keepdim=True)
        bin_log_probs = log_probs[is_bin, first_bin : first_bin + NUM_BINS]
        losses = losses.clone()
        losses[is_bin] = -(weights * bin_log_probs).sum(dim=1)
    return losses.mean()


def _schedule(step: int, config: TrainConfig) -> float:
    """Learning-rate factor: linear warm-up then cosine decay to zero."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = (step - config.warmup_steps) / span
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(
    model,
    processor,
    examples: Iterable[TrainingExample],
    config: TrainConfig,
    *,
    log: Callable[[str], None] | None = None,
) -> TrainStats:
    """Train ``model`` in place for ``config.steps`` steps on ``examples``.

    ``examples`` is consumed ``batch_size`` at a time; an iterable that runs
    out is restarted (lists) or ends training early (generators). The model is
    left in eval mode.
    """
    import torch

    torch.manual_seed(config.seed)
    first_bin = processor.tokenizer.convert_tokens_to_ids("<0>")
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _schedule(step, config)
    )
    stream = _batches(examples, config.batch_size)
    stats = TrainStats()
    started = time.perf_counter()
    model.train()
    running = 0.0
    for step in range(config.steps):
        batch = next(stream, None)
        if batch is None:
            break
        inputs = {k: v.to(device) for k, v in encode_batch(processor, batch).items()}
        labels = inputs.pop("labels")
        keep = answer_span(labels) + 1  # the position before the first answer token
        logits = model(**inputs, logits_to_keep=keep).logits
        loss = soft_bin_loss(
            logits[:, :-1],
            labels[:, labels.shape[1] - keep + 1 :],
            first_bin=first_bin,
            sigma=config.bin_sigma,
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        running += float(loss.detach())
        stats.steps = step + 1
        if stats.steps % config.log_every == 0 or stats.steps == config.steps:
            count = (stats.steps - 1) % config.log_every + 1
            stats.losses.append((stats.steps, running / count))
            running = 0.0
            if log:
                elapsed = time.perf_counter() - started
                log(
                    f"step {stats.steps}/{config.steps} loss "
                    f"{stats.losses[-1][1]:.4f} ({elapsed:.0f} s)"
                )
    model.eval()
    stats.seconds = time.perf_counter() - started
    return stats


def _batches(examples: Iterable[TrainingExample], size: int):
    """Batches of ``size``; a re-iterable source (a list) repeats forever."""
    if isinstance(examples, (list, tuple)):
        if not examples:
            raise ValueError("no training examples")
        source = itertools.cycle(examples)
    else:
        source = iter(examples)
    while True:
        batch = list(itertools.islice(source, size))
        if len(batch) < size:
            return
        yield batch
