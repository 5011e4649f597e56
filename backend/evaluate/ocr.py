"""Character and word error rates of recognised text, on regions matched by IoU.

``jiwer`` aligns the texts (Levenshtein over characters or words): the rate is
(substitutions + deletions + insertions) / length of the submitted text,
summed over all pairs, so 0 is perfect and it can exceed 1. Texts are compared
as they are (case and spaces count), as annotators typed them.
:class:`TextTally` keeps only those sums per label, so images can stream.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import jiwer

from backend.evaluate.matching import ImageMatch
from backend.evaluate.pairs import ImagePair


@dataclass(frozen=True)
class TextErrors:
    """CER and WER over ``pairs`` (reference, hypothesis) texts; None with none
    (or when the references hold no characters, resp. words, to divide by)."""

    pairs: int
    cer: float | None
    wer: float | None


@dataclass
class _Sums:
    pairs: int = 0
    char_edits: int = 0
    chars: int = 0
    word_edits: int = 0
    words: int = 0

    def add(self, refs: list[str], hyps: list[str]) -> None:
        self.pairs += len(refs)
        for process, kind in (
            (jiwer.process_characters, "char"),
            (jiwer.process_words, "word"),
        ):
            out = process(refs, hyps)
            edits = out.substitutions + out.deletions + out.insertions
            length = out.substitutions + out.deletions + out.hits
            if kind == "char":
                self.char_edits, self.chars = (
                    self.char_edits + edits,
                    self.chars + length,
                )
            else:
                self.word_edits, self.words = (
                    self.word_edits + edits,
                    self.words + length,
                )

    def merged(self, other: _Sums) -> _Sums:
        return _Sums(
            *(a + b for a, b in zip(self._tuple(), other._tuple(), strict=True))
        )

    def _tuple(self) -> tuple[int, ...]:
        return (self.pairs, self.char_edits, self.chars, self.word_edits, self.words)

    def errors(self) -> TextErrors:
        if not self.pairs:
            return TextErrors(0, None, None)
        cer = self.char_edits / self.chars if self.chars else None
        wer = self.word_edits / self.words if self.words else None
        return TextErrors(self.pairs, cer, wer)


def text_errors(references: Sequence[str], hypotheses: Sequence[str]) -> TextErrors:
    """CER and WER of ``hypotheses`` against ``references`` (same length)."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses must pair up")
    sums = _Sums()
    if references:
        sums.add(list(references), list(hypotheses))
    return sums.errors()


class TextTally:
    """Per-label error sums of matched regions whose ground truth has text (a
    prediction without text reads as empty: all its text missed)."""

    def __init__(self) -> None:
        self._sums: dict[str, _Sums] = defaultdict(_Sums)

    def add(self, pair: ImagePair, m: ImageMatch) -> None:
        """One image; ``m`` is :func:`match_image` of ``pair``."""
        texts: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
        for t in m.matches:
            reference = pair.ground_truth[t.gt].text
            if reference is None:
                continue
            refs, hyps = texts[t.label]
            refs.append(reference)
            hyps.append(pair.predictions[t.pred].text or "")
        for label, (refs, hyps) in texts.items():
            self._sums[label].add(refs, hyps)

    def result(self) -> tuple[TextErrors, dict[str, TextErrors]]:
        """Overall and per-label (sorted) errors."""
        total = _Sums()
        for sums in self._sums.values():
            total = total.merged(sums)
        per_label = {label: self._sums[label].errors() for label in sorted(self._sums)}
        return total.errors(), per_label


def ocr_errors(
    pairs: Sequence[ImagePair], matches: Iterable[ImageMatch]
) -> tuple[TextErrors, dict[str, TextErrors]]:
    """Overall and per-label errors of ``pairs``; ``matches`` are their
    :func:`match_image` outcomes, in order."""
    tally = TextTally()
    for pair, m in zip(pairs, matches, strict=True):
        tally.add(pair, m)
    return tally.result()
