"""How the transformers engine splits requests into ``generate`` calls: how
many fit in GPU memory, and which go together. Pure functions (no torch).

Memory, per request, for a batch padded to its longest prompt (left padding):

- the KV cache: ``2 x layers x kv_heads x head_dim x dtype bytes`` per token,
  for the prompt and every output token (``max_new_tokens``: rows that finish
  early keep their cache until the batch ends);
- prefill's activations, held one layer at a time: per prompt token the
  layer's input, output and attention (``4 x hidden``) and the MLP's gate, up
  and product (``3 x intermediate``); the vision tower the same per patch,
  ``merge**2`` patches per visual token. An estimate: sizes are rounded up by
  :data:`MEMORY_SAFETY`, and :func:`batch_size_for_memory` keeps a reserve.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from converters.geometry import IMAGE_FACTOR, MAX_PIXELS, MIN_PIXELS, smart_resize

MEMORY_SAFETY = 1.25
"""Estimated bytes are multiplied by this: allocator rounding, the logits
and log-prob buffers of a step, kernels' workspaces."""
RESERVE_BYTES = 2 * 2**30
"""Free memory never planned for: CUDA graphs, cuBLAS workspaces, and
fragmentation of PyTorch's caching allocator."""
MAX_BATCH_CAP = 64
"""Most requests per ``generate`` call however much memory is free: the best
batch measured for the transformers engine on an H100 (3B, 640x480, 128
tokens: 6.0 images/s at 64 against 3.4 at 32); ``bench/bench_gpu.py`` finds it
again on other cards."""
DEFAULT_MAX_PADDING = 0.5
"""Largest share of a batch's prompt tokens that may be padding: one batch
still beats two (half the decoding steps) until padding makes prefill the
larger cost; a 1280x960 request (about 1,650 tokens) takes up to two 640x480
ones (about 450) along, a third starts another batch."""


@dataclass(frozen=True)
class ModelFootprint:
    """Bytes the model holds per token of one request (see the module doc)."""

    kv_bytes_per_token: int
    prefill_bytes_per_token: int
    """Text layers' transient activations per prompt token."""
    vision_bytes_per_visual_token: int
    """Vision tower's transient activations per visual token."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any], dtype_bytes: int) -> ModelFootprint:
        """From a Qwen2.5-VL ``config.json`` (``text_config``/``vision_config``,
        or text fields at the top level as transformers 4.x writes them)."""
        text = config.get("text_config") or config
        vision = config.get("vision_config") or {}
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        head_dim = int(text.get("head_dim") or hidden // heads)
        kv_heads = int(text.get("num_key_value_heads") or heads)
        layers = int(text["num_hidden_layers"])
        merge = int(vision.get("spatial_merge_size", 2))
        vision_row = 4 * int(vision.get("hidden_size", 0)) + 3 * int(
            vision.get("intermediate_size", 0)
        )
        return cls(
            kv_bytes_per_token=2 * layers * kv_heads * head_dim * dtype_bytes,
            prefill_bytes_per_token=(4 * hidden + 3 * int(text["intermediate_size"]))
            * dtype_bytes,
            vision_bytes_per_visual_token=merge * merge * vision_row * dtype_bytes,
        )

    def request_bytes(
        self, prompt_tokens: int, visual_tokens: int, max_new_tokens: int
    ) -> int:
        """Peak bytes of one request (padded to ``prompt_tokens``)."""
        estimate = (
            self.kv_bytes_per_token * (prompt_tokens + max_new_tokens)
            + self.prefill_bytes_per_token * prompt_tokens
            + self.vision_bytes_per_visual_token * visual_tokens
        )
        return math.ceil(estimate * MEMORY_SAFETY)


def visual_tokens(
    width: int, height: int, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> int:
    """Visual tokens the model spends on a ``width`` x ``height`` image."""
    h, w = smart_resize(height, width, min_pixels=min_pixels, max_pixels=max_pixels)
    return (h // IMAGE_FACTOR) * (w // IMAGE_FACTOR)


def batch_size_for_memory(
    free_bytes: int,
    request_bytes: int,
    *,
    reserve_bytes: int = RESERVE_BYTES,
    cap: int = MAX_BATCH_CAP,
) -> int:
    """Requests of ``request_bytes`` each that fit in ``free_bytes`` less the
    reserve, between 1 (a request always runs; too large fails as it would
    alone) and ``cap``."""
    if request_bytes <= 0:
        raise ValueError(f"request_bytes must be positive, got {request_bytes}")
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    return max(1, min(cap, (free_bytes - reserve_bytes) // request_bytes))


def plan_batches(
    lengths: Sequence[int],
    *,
    max_batch_size: int,
    max_padding: float = DEFAULT_MAX_PADDING,
    fits: Callable[[int, int], bool] | None = None,
) -> list[list[int]]:
    """Indices of requests in batches, by prompt length (``lengths``, tokens).

    Requests go in order of length, longest first: a batch opens with the
    longest request left, which sets its padded length, and takes the next
    ones while it has fewer than ``max_batch_size`` rows, its padding (each
    row padded to the longest) stays within ``max_padding`` of its tokens, and
    ``fits(rows, longest)`` says that many rows of that length fit in memory
    (a ``max_padding`` of 1 never splits for padding). Each added row is
    shorter, so the padding share only grows: every batch is as large as the
    limits allow. Every index appears once; within a batch, in their given
    order; batches longest first.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    if not 0 <= max_padding <= 1:
        raise ValueError(f"max_padding must be in [0, 1], got {max_padding}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = total = 0
    for index in order:
        length = lengths[index]
        rows = len(current) + 1
        closes = current and (
            rows > max_batch_size
            or rows * longest - (total + length) > max_padding * rows * longest
            or (fits is not None and not fits(rows, longest))
        )
        if closes:
            batches.append(sorted(current))
            current, total = [], 0
        if not current:
            longest = length
        current.append(index)
        total += length
    if current:
        batches.append(sorted(current))
    return batches
