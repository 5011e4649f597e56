"""Runaway guard: stop a generation that loops on one item or writes too many.

Rex-Omni sometimes writes the same box over and over, or hundreds of boxes on
textured images, until the token cap (upstream issues #150, #178). The guard
watches the generated token ids as they come and stops a sequence when

- the same item was written ``max_repeats`` times in a row, or
- ``max_instances`` items were written.

What counts as an item, read cheaply from token ids (no decoding;
``worker.engines.runaway_guard_text`` applies the same rules to token texts):

- an item is a run of coordinate tokens ``<0>``..``<999>``, with only
  whitespace tokens allowed inside the run (vLLM-style spacing, and the
  keypoint JSON's ``" <1> <36> <987> <984> "``); any other token ends it;
- inside ``<|box_start|>`` .. ``<|box_end|>`` every run is one instance (a box,
  point or polygon, separated by ``,``);
- outside such a span (the keypoint JSON grammar) only runs of exactly 4 bins
  count: those are instance boxes; the 2-bin runs are joints of an instance.

Everything runs as tensor operations on the generation device, so the guard
adds no host/device synchronisation per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import StoppingCriteria

from converters.grammar import (
    BIN_TOKENS,
    BOX_END,
    BOX_START,
    KEYPOINT_BOX_BINS,
    MAX_BIN,
    NUM_BINS,
)

HASH_MODULUS = 2_147_483_647
"""A prime below 2**31: rolling hashes times HASH_BASE stay inside int64."""
HASH_BASE = 1_009
"""Prime base of the rolling hash of an item's bin values (> 1000 bins)."""

_BYTE_LEVEL_WHITESPACE = frozenset("ĠĊĉč")
"""Byte-level BPE spellings of space, newline, tab and carriage return."""


@dataclass(frozen=True)
class GrammarTokens:
    """The token ids the guard needs to know.

    ``whitespace`` holds ids whose text is only whitespace.
    """

    first_bin: int
    num_bins: int
    box_start: int
    box_end: int
    whitespace: frozenset[int]
    vocab_size: int

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int | None = None) -> GrammarTokens:
        """Read ids from a Qwen-style tokenizer; ``vocab_size`` is the model's
        (it may exceed the tokenizer's length)."""
        first = tokenizer.convert_tokens_to_ids(BIN_TOKENS[0])
        last = tokenizer.convert_tokens_to_ids(BIN_TOKENS[-1])
        if first is None or last is None or last - first != MAX_BIN:
            raise ValueError(
                "the tokenizer has no consecutive coordinate tokens <0>..<999>; "
                "is this a Rex-Omni model?"
            )
        whitespace = frozenset(
            idx
            for text, idx in tokenizer.get_vocab().items()
            if text and (set(text) <= _BYTE_LEVEL_WHITESPACE or text.isspace())
        )
        size = max(vocab_size or 0, len(tokenizer))
        return cls(
            first_bin=first,
            num_bins=NUM_BINS,
            box_start=tokenizer.convert_tokens_to_ids(BOX_START),
            box_end=tokenizer.convert_tokens_to_ids(BOX_END),
            whitespace=whitespace,
            vocab_size=size,
        )


class RunawayGuard(StoppingCriteria):
    """A ``StoppingCriteria`` for ``generate``: one instance per batch.

    ``prompt_length`` is the (padded) input length: only tokens after it are
    watched. After generation, ``triggered`` (bool per row) tells which rows
    the guard stopped; ``item_counts`` how many items each row wrote.
    """

    def __init__(
        self,
        grammar: GrammarTokens,
        *,
        max_repeats: int,
        max_instances: int,
        batch_size: int,
        device,
    ) -> None:
        if max_repeats < 2 or max_instances < 1:
            raise ValueError("max_repeats must be >= 2 and max_instances >= 1")
        self.grammar = grammar
        self.max_repeats = max_repeats
        self.max_instances = max_instances
        lookup = torch.zeros(grammar.vocab_size, dtype=torch.bool)
        if grammar.whitespace:
            lookup[torch.tensor(sorted(grammar.whitespace))] = True
        self._whitespace = lookup.to(device)
        zeros = torch.zeros(batch_size, dtype=torch.long, device=device)
        self._in_span = torch.zeros(batch_size, dtype=torch.bool, device=device)
        self._run_hash = zeros.clone()
        self._run_len = zeros.clone()
        self._prev_hash = zeros.clone() - 1
        self._prev_len = zeros.clone()
        self._repeats = zeros.clone()
        self.item_counts = zeros.clone()
        self.triggered = torch.zeros(batch_size, dtype=torch.bool, device=device)

    def __call__(self, input_ids, scores, **kwargs):
        g = self.grammar
        token = input_ids[:, -1]
        value = token - g.first_bin
        is_bin = (value >= 0) & (value < g.num_bins)
        safe = token.clamp(0, g.vocab_size - 1)
        is_space = self._whitespace[safe] & (token < g.vocab_size)
        ends_run = ~is_bin & ~is_space & (self._run_len > 0)
        counted = ends_run & (self._in_span | (self._run_len == KEYPOINT_BOX_BINS))
        same = (self._run_hash == self._prev_hash) & (self._run_len == self._prev_len)
        self._repeats = torch.where(
            counted, torch.where(same, self._repeats + 1, 1), self._repeats
        )
        self._prev_hash = torch.where(counted, self._run_hash, self._prev_hash)
        self._prev_len = torch.where(counted, self._run_len, self._prev_len)
        self.item_counts = self.item_counts + counted.long()
        # Extend or reset the current run.
        extended = (self._run_hash * HASH_BASE + value + 1) % HASH_MODULUS
        self._run_hash = torch.where(
            is_bin, extended, torch.where(is_space, self._run_hash, 0)
        )
        self._run_len = torch.where(
            is_bin, self._run_len + 1, torch.where(is_space, self._run_len, 0)
        )
        self._in_span = torch.where(
            token == g.box_start,
            True,
            torch.where(token == g.box_end, False, self._in_span),
        )
        stop = (self._repeats >= self.max_repeats) | (
            self.item_counts >= self.max_instances
        )
        self.triggered = self.triggered | stop
        return self.triggered
