"""Character and word error rates of recognised text, on regions matched by IoU.

``jiwer`` computes both (Levenshtein over characters or words): the rate is
(substitutions + deletions + insertions) / length of the submitted text,
summed over all pairs, so 0 is perfect and it can exceed 1. Texts are compared
as they are (case and spaces count), as annotators typed them.
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
    """CER and WER over ``pairs`` (reference, hypothesis) texts; None with none."""

    pairs: int
    cer: float | None
    wer: float | None


def text_errors(references: Sequence[str], hypotheses: Sequence[str]) -> TextErrors:
    """CER and WER of ``hypotheses`` against ``references`` (same length)."""
    if len(references) != len(hypotheses):
        raise ValueError("references and hypotheses must pair up")
    if not references:
        return TextErrors(0, None, None)
    refs, hyps = list(references), list(hypotheses)
    return TextErrors(len(refs), jiwer.cer(refs, hyps), jiwer.wer(refs, hyps))


def ocr_errors(
    pairs: Sequence[ImagePair], matches: Iterable[ImageMatch]
) -> tuple[TextErrors, dict[str, TextErrors]]:
    """Overall and per-label errors of matched regions whose ground truth has
    text (a prediction without text reads as empty: all its text missed).
    ``matches`` are :func:`match_image` outcomes of ``pairs``, in order."""
    texts: dict[str, tuple[list[str], list[str]]] = defaultdict(lambda: ([], []))
    for pair, m in zip(pairs, matches, strict=True):
        for t in m.matches:
            reference = pair.ground_truth[t.gt].text
            if reference is None:
                continue
            refs, hyps = texts[t.label]
            refs.append(reference)
            hyps.append(pair.predictions[t.pred].text or "")
    all_refs = [r for refs, _ in texts.values() for r in refs]
    all_hyps = [h for _, hyps in texts.values() for h in hyps]
    per_label = {label: text_errors(*texts[label]) for label in sorted(texts)}
    return text_errors(all_refs, all_hyps), per_label
