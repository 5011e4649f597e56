"""Hooks into ``transformers`` generation that record per-token log-probabilities.

Imported lazily by the transformers engine (it imports torch). The recorder
sits first in the logits-processor list, so it sees the raw logits before the
repetition penalty and sampling warpers change them; the collector runs as a
stopping criterion, after the step's token is chosen, and keeps that token's
log-probability. Memory: one ``(batch, vocab)`` tensor plus ``(batch,)`` per step.
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
    """After each step: the log-probability of the token just chosen, per row.

    Never stops a sequence itself."""

    def __init__(self, recorder: LogprobRecorder, batch_size: int) -> None:
        self.recorder = recorder
        self.batch_size = batch_size
        self.steps: list[Any] = []

    def __call__(self, input_ids, scores, **kwargs):
        if self.recorder.current is None:
            raise RuntimeError("LogprobRecorder must be in the logits processors")
        chosen = input_ids[:, -1:]
        self.steps.append(self.recorder.current.gather(1, chosen).squeeze(1))
        return torch.zeros(
            input_ids.shape[0], dtype=torch.bool, device=input_ids.device
        )

    def logprobs(self, length: int) -> list[list[float]]:
        """``(batch, length)`` as lists; steps past ``length`` (a deferred stop
        check's extra step, undone by generate) are dropped."""
        if length == 0 or not self.steps:
            return [[] for _ in range(self.batch_size)]
        return torch.stack(self.steps[:length], dim=1).cpu().tolist()
