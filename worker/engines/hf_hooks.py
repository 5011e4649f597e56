"""Hooks into ``transformers`` generation that record per-token log-probabilities.

Imported lazily by the transformers engine (it imports torch). The recorder
sits first in the logits-processor list, so it sees the raw logits before the
repetition penalty and sampling warpers change them; the collector runs as a
stopping criterion, after the step's token is chosen, and keeps that token's
log-probability and the step's top ``top_k`` alternatives (``worker.scoring``
reads them). Memory: one ``(batch, vocab)`` tensor plus ``(batch, 1 + 2 top_k)``
numbers per step.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LogitsProcessor, StoppingCriteria


class LogprobRecorder(LogitsProcessor):
    """Keeps log-softmax of the current step's raw logits."""

    def __init__(self) -> None:
        self.current: torch.Tensor | None = None

    def __call__(self, input_ids, scores):
        self.current = torch.log_softmax(scores.float(), dim=-1)
        return scores


class LogprobCollector(StoppingCriteria):
    """After each step: the log-probability of the token just chosen, per row,
    and the ``top_k`` most likely tokens with theirs (0: none).

    Never stops a sequence itself."""

    def __init__(
        self, recorder: LogprobRecorder, batch_size: int, top_k: int = 0
    ) -> None:
        self.recorder = recorder
        self.batch_size = batch_size
        self.top_k = top_k
        self.steps: list[Any] = []
        self.top: list[tuple[Any, Any]] = []

    def __call__(self, input_ids, scores, **kwargs):
        if self.recorder.current is None:
            raise RuntimeError("LogprobRecorder must be in the logits processors")
        chosen = input_ids[:, -1:]
        current = self.recorder.current
        self.steps.append(current.gather(1, chosen).squeeze(1))
        if self.top_k:
            values, ids = current.topk(min(self.top_k, current.shape[-1]), dim=-1)
            self.top.append((values, ids))
        return torch.zeros(
            input_ids.shape[0], dtype=torch.bool, device=input_ids.device
        )

    def logprobs(self, length: int) -> list[list[float]]:
        """``(batch, length)`` as lists; steps past ``length`` (a deferred stop
        check's extra step, undone by generate) are dropped."""
        if length == 0 or not self.steps:
            return [[] for _ in range(self.batch_size)]
        return torch.stack(self.steps[:length], dim=1).cpu().tolist()

    def alternatives(self, length: int) -> tuple[list, list]:
        """``(logprobs, ids)`` of the top tokens, each ``(batch, length, top_k)``
        as lists (empty rows without ``top_k``)."""
        if length == 0 or not self.top:
            empty = [[] for _ in range(self.batch_size)]
            return empty, empty
        kept = self.top[:length]
        values = torch.stack([v for v, _ in kept], dim=1).cpu().tolist()
        ids = torch.stack([i for _, i in kept], dim=1).cpu().tolist()
        return values, ids
