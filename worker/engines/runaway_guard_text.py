"""The runaway guard's rules on token texts, in plain Python (no torch).

``worker.engines.runaway_guard_torch.RunawayGuard`` watches token ids inside
transformers' ``generate``. Engines that only see text (the OpenAI engine reads token
strings from streamed log-probs) or that see whole outputs afterwards (the
vLLM engine) use :class:`RunawayScanner`, which follows the same rules on
each token's text:

- an item is a run of coordinate tokens ``<0>``..``<999>``, with only
  whitespace tokens (texts made of spaces, newlines, tabs, carriage returns)
  allowed inside the run; any other token ends it;
- inside ``<|box_start|>`` .. ``<|box_end|>`` every run is one instance;
- outside such a span only runs of exactly 4 bins count (keypoint JSON
  instance boxes; 2-bin joints do not);
- the scanner triggers at the token that ends the ``max_repeats``-th
  identical item in a row, or the ``max_instances``-th item.

Items are compared exactly (the torch guard compares a rolling hash and the
length, equal barring a hash collision).

Servers that return no per-token texts give only content text;
:func:`split_pieces` cuts it into pieces that the rules treat as they would
treat the tokens (special tokens whole, whitespace runs, other characters one
by one), so a cut falls inside the token at which the guard would stop.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from converters.grammar import BOX_END, BOX_START, KEYPOINT_BOX_BINS, NUM_BINS

_BIN = re.compile(r"<(0|[1-9][0-9]{0,2})>")
"""A coordinate token's text: ``<0>`` .. ``<999>``, no leading zeros."""
_WHITESPACE = frozenset(" \n\t\r")
"""The characters of whitespace tokens, as ``GrammarTokens`` reads the
byte-level vocabulary (``Ġ``, ``Ċ``, ``ĉ``, ``č``)."""
_PIECES = re.compile(r"<\|[^<>|\s]*\|>|<[0-9]+>|\s+|\S")
"""Special tokens, bins, whitespace runs, then any other character alone (a
token's first character is where the rules see it)."""
_OPEN_TAG = re.compile(r"<[^<>\s]*$")
"""A ``<`` at the end of a text whose token may still be arriving."""


def bin_value(text: str) -> int | None:
    """The coordinate bin (0..999) a token's text spells, else None."""
    match = _BIN.fullmatch(text)
    if match is None:
        return None
    value = int(match.group(1))
    return value if value < NUM_BINS else None


def is_whitespace(text: str) -> bool:
    """Whether a token's text is only spaces, newlines, tabs and carriage returns."""
    return bool(text) and set(text) <= _WHITESPACE


def split_pieces(text: str) -> list[str]:
    """Cut text into token-like pieces; their concatenation is ``text``."""
    return _PIECES.findall(text)


class RunawayScanner:
    """Feed token texts one by one; ``feed`` says when the guard would stop.

    After a trigger, ``triggered_at`` is the 0-based index of the token that
    triggered (the one that ended the offending item); later tokens are
    ignored. ``item_count`` is the number of items written so far.
    """

    def __init__(self, *, max_repeats: int, max_instances: int) -> None:
        if max_repeats < 2 or max_instances < 1:
            raise ValueError("max_repeats must be >= 2 and max_instances >= 1")
        self.max_repeats = max_repeats
        self.max_instances = max_instances
        self.tokens_seen = 0
        self.item_count = 0
        self.triggered_at: int | None = None
        self._in_span = False
        self._run: list[int] = []
        self._previous: tuple[int, ...] | None = None
        self._repeats = 0

    @property
    def triggered(self) -> bool:
        return self.triggered_at is not None

    def feed(self, text: str) -> bool:
        """Take the next token's text; True once the guard has triggered."""
        if self.triggered_at is not None:
            return True
        index = self.tokens_seen
        self.tokens_seen += 1
        value = bin_value(text)
        space = value is None and is_whitespace(text)
        if value is None and not space and self._run:
            if self._in_span or len(self._run) == KEYPOINT_BOX_BINS:
                item = tuple(self._run)
                self._repeats = self._repeats + 1 if item == self._previous else 1
                self._previous = item
                self.item_count += 1
            self._run = []
        if value is not None:
            self._run.append(value)
        if text == BOX_START:
            self._in_span = True
        elif text == BOX_END:
            self._in_span = False
        if self._repeats >= self.max_repeats or self.item_count >= self.max_instances:
            self.triggered_at = index
            return True
        return False

    def feed_all(self, texts: Iterable[str]) -> int | None:
        """Feed texts until a trigger; its index (counted over all texts fed
        to this scanner), or None."""
        for text in texts:
            if self.feed(text):
                break
        return self.triggered_at


class ContentScanner:
    """A :class:`RunawayScanner` on content text that arrives in arbitrary
    chunks (servers without per-token texts).

    ``feed`` returns, once triggered, the number of characters of the whole
    content up to and including the triggering piece; else None. A trailing
    ``<...`` without ``>`` waits for the next chunk; call ``finish`` at the end.
    """

    def __init__(self, *, max_repeats: int, max_instances: int) -> None:
        self.scanner = RunawayScanner(
            max_repeats=max_repeats, max_instances=max_instances
        )
        self._pending = ""
        self._consumed = 0
        """Characters of content fed to the scanner so far."""
        self.cut_at: int | None = None

    def feed(self, chunk: str) -> int | None:
        """Take the next chunk of content; the cut position once triggered."""
        if self.cut_at is not None:
            return self.cut_at
        text = self._pending + chunk
        tail = _OPEN_TAG.search(text)
        self._pending = text[tail.start() :] if tail else ""
        return self._scan(text[: tail.start()] if tail else text)

    def finish(self) -> int | None:
        """Scan what is still pending; the cut position once triggered."""
        if self.cut_at is not None:
            return self.cut_at
        text, self._pending = self._pending, ""
        return self._scan(text)

    def _scan(self, text: str) -> int | None:
        for piece in split_pieces(text):
            self._consumed += len(piece)
            if self.scanner.feed(piece):
                self.cut_at = self._consumed
                return self.cut_at
        return None


class GuardTokenTexts:
    """Token id -> the text the guard's rules see, for engines that see ids
    one at a time outside transformers (vLLM's in-engine logits processor).

    A coordinate token reads as ``<v>``, a whitespace token as ``" "``,
    ``<|box_start|>`` and ``<|box_end|>`` as themselves, any other token as
    ``""`` (it ends a run), so :class:`RunawayScanner` stops exactly where
    ``worker.engines.runaway_guard_torch.RunawayGuard`` stops on the same ids.
    """

    def __init__(
        self,
        *,
        first_bin: int,
        num_bins: int,
        box_start: int,
        box_end: int,
        whitespace: frozenset[int],
    ) -> None:
        self.first_bin, self.num_bins = first_bin, num_bins
        self.specials = {box_start: BOX_START, box_end: BOX_END}
        self.whitespace = whitespace

    @classmethod
    def from_grammar(cls, grammar) -> GuardTokenTexts:
        """From a ``runaway_guard_torch.GrammarTokens`` (read from a tokenizer)."""
        return cls(
            first_bin=grammar.first_bin,
            num_bins=grammar.num_bins,
            box_start=grammar.box_start,
            box_end=grammar.box_end,
            whitespace=grammar.whitespace,
        )

    def __call__(self, token_id: int) -> str:
        value = token_id - self.first_bin
        if 0 <= value < self.num_bins:
            return f"<{value}>"
        if token_id in self.whitespace:
            return " "
        return self.specials.get(token_id, "")


class IdStreamGuard:
    """The guard on one request whose output ids grow in a list it reads.

    ``output_ids`` is the engine's live list of the request's generated ids
    (vLLM hands its logits processors a reference); :meth:`advance` feeds the
    ids added since the last call and says whether the guard has triggered.
    A negative id is a placeholder for a token not yet known (vLLM's
    asynchronous scheduling): reading stops there until it is filled.
    """

    def __init__(
        self,
        texts: GuardTokenTexts,
        output_ids: list[int],
        *,
        max_repeats: int,
        max_instances: int,
    ) -> None:
        self.texts = texts
        self.output_ids = output_ids
        self.scanner = RunawayScanner(
            max_repeats=max_repeats, max_instances=max_instances
        )

    def advance(self) -> bool:
        ids, scanner = self.output_ids, self.scanner
        while not scanner.triggered and scanner.tokens_seen < len(ids):
            token = ids[scanner.tokens_seen]
            if token < 0:
                break
            scanner.feed(self.texts(token))
        return scanner.triggered
