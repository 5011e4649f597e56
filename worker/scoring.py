"""Confidence scores for predictions from the probabilities of their tokens.

Rex-Omni writes boxes as text and gives no scores (upstream issues #76, #150).
Every generated token has a probability distribution behind it, though, and
the parser records which characters of the answer each prediction came from
(``Prediction.span``). A region's score says how sure the model was that the
region is there *and* where it is:

    score = start x geometric mean over the coordinates of precision_j

- ``precision_j`` for the j-th coordinate token ``<b>`` of the region: the
  probability mass of the bins within ``SCORE_BIN_RADIUS`` of ``b`` at that
  position (for the first coordinate, divided by the mass of all bins there,
  as ``start`` counts that). A model sure of the place puts its mass there
  even when it spreads it over neighbouring bins (as the tiny model, trained
  on soft targets, does); a model that hesitates between two places, or
  between a bin and another token, does not. The geometric mean keeps the
  score of a polygon comparable to a box's, and one loose coordinate still
  pulls it down. (Dividing every coordinate by its bins' mass ranked worse on
  the tiny model, ROC AUC 0.82 against 0.92: mass on other tokens in the
  middle of a box is doubt.)
- ``start``: the probability of starting the region at all: the mass of all
  bin tokens at the region's first coordinate (the alternative there is
  ``None``, "not in the image", or the end of the group), times the
  probability of the item separator ``,`` that precedes a second or later
  instance (its alternative is ``<|box_end|>``, "no more of these").

The score is in [0, 1]. It needs each position's alternatives
(``GenerationResult.token_top_logprobs``): the transformers engine keeps the
top ``TRANSFORMERS_TOP_LOGPROBS`` of the full distribution at coordinate
positions; vLLM and OpenAI-compatible servers return the top
``SCORE_TOP_LOGPROBS``. With only the top k known, mass outside them counts as
absent: ``start`` is a lower bound, and precision is measured among the known
bins (exact for a peaked model such as Rex-Omni, whose top k hold nearly all
the mass). Without any alternatives (a server that returns only the chosen
token's log-probability) precision_j falls back to the chosen bin's own
probability (a lower bound of the window's mass) and ``start`` to the
separator's probability. Items whose span holds no coordinate token (none in
the grammar today) score the geometric mean of their tokens' probabilities.

Pure Python: no torch.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
from collections.abc import Mapping, Sequence

from converters.prediction import Prediction

SCORE_BIN_RADIUS = 10
"""Bins (of 1000 per side) around a written coordinate that count as "the same
place": 1% of the image side, where an annotator sees the same edge. The
ranking hardly depends on it (tiny model, 1000 held-out images,
bench/bench_scores.py: ROC AUC 0.91 at 2 bins, 0.92 at 10 to 30); it sets
how a spread-out model's right boxes read (0.09 at 2, 0.37 at 10, 0.63 at
20 for the tiny model, whose soft targets spread each coordinate over about
15 bins), while a sharp model's read nearly 1 at any radius."""
SCORE_TOP_LOGPROBS = 20
"""Alternatives per position asked of vLLM and OpenAI-compatible servers:
OpenAI's ``top_logprobs`` maximum and vLLM's default ``max_logprobs``."""
TRANSFORMERS_TOP_LOGPROBS = 64
"""Alternatives the transformers engine keeps per coordinate position (from the
full distribution): the whole 21-bin window and more plus the rivals
(``None``, ``<|box_end|>``), even for the tiny model's spread-out
distributions."""
ITEM_SEPARATOR = ","
"""Token between two instances of one phrase (converters.answer's separator)."""

BIN_VALUE_CACHE = 4096
"""Token texts whose bin is remembered: the 1,000 bins and their spaced forms
come back at every coordinate of every answer (about 2,000 look-ups an answer
with 20 alternatives per position)."""
_COORDINATE_TOKEN = re.compile(r"\s*<([0-9]{1,9})>\s*")
"""A coordinate token; the digits are bounded so a server's token cannot make
int() work on thousands of digits (or raise past its digit limit)."""


def token_offsets(token_texts: Sequence[str]) -> list[int]:
    """Start offset of every token in the concatenated text (plus the end)."""
    offsets = [0]
    for text in token_texts:
        offsets.append(offsets[-1] + len(text))
    return offsets


def tokens_in_span(offsets: Sequence[int], span: tuple[int, int]) -> range:
    """Indices of the tokens overlapping characters ``span[0]:span[1]``."""
    start, end = span
    if end <= start:
        return range(0)
    first = bisect.bisect_right(offsets, start) - 1
    last = bisect.bisect_left(offsets, end)  # first token starting at/after end
    return range(max(first, 0), min(last, len(offsets) - 1))


@functools.lru_cache(maxsize=BIN_VALUE_CACHE)
def bin_value(token_text: str) -> int | None:
    """The bin of a coordinate token (``"<12>"``, ``" <12>"``), else None."""
    match = _COORDINATE_TOKEN.fullmatch(token_text)
    return int(match.group(1)) if match else None


def _probability(logprob: float) -> float:
    """exp(logprob) clamped to [0, 1]; NaN (a broken server's) counts as 0."""
    if math.isnan(logprob):
        return 0.0
    return math.exp(min(0.0, logprob))


def bin_masses(
    chosen_text: str,
    chosen_logprob: float,
    alternatives: Mapping[str, float] | None,
    radius: int = SCORE_BIN_RADIUS,
) -> tuple[float, float]:
    """``(window, bins)`` at one coordinate position whose token is
    ``chosen_text``: the probability of the bins within ``radius`` of it, and
    of all bins.

    ``alternatives`` maps token texts to log-probabilities (the top k); the
    chosen token counts even when it is missing there. Without alternatives
    both are the chosen bin's own probability and ``bins`` is taken as 1.
    """
    own = _probability(chosen_logprob)
    if not alternatives:
        return own, 1.0
    chosen = bin_value(chosen_text)
    known = dict(alternatives)
    known.setdefault(chosen_text, chosen_logprob)
    window = bins = 0.0
    low, high = chosen - radius, chosen + radius
    exp = math.exp
    for text, logprob in known.items():  # about 20 a position: kept lean
        value = bin_value(text)
        if value is None or logprob != logprob:  # not a bin, or NaN: 0
            continue
        probability = exp(logprob) if logprob < 0.0 else 1.0
        bins += probability
        if low <= value <= high:
            window += probability
    return window, bins


def _separator_probability(
    first: int, token_texts: Sequence[str], token_logprobs: Sequence[float]
) -> float:
    """The probability of the ``,`` just before token ``first`` (a later
    instance's decision to go on), else 1."""
    index = first - 1
    while index >= 0 and not token_texts[index].strip():
        index -= 1  # vLLM-style spacing tokens
    if index >= 0 and token_texts[index].strip() == ITEM_SEPARATOR:
        return _probability(token_logprobs[index])
    return 1.0


def _geometric_mean(values: Sequence[float]) -> float:
    if any(v <= 0.0 for v in values):
        return 0.0
    return math.exp(sum(math.log(v) for v in values) / len(values))


def region_score(
    indices: Sequence[int],
    token_texts: Sequence[str],
    token_logprobs: Sequence[float],
    token_top_logprobs: Sequence[Mapping[str, float] | None] | None = None,
    *,
    radius: int = SCORE_BIN_RADIUS,
) -> float | None:
    """Score of the region made of tokens ``indices`` (module docstring); None
    if there are no tokens."""
    if not indices:
        return None
    coordinates = [i for i in indices if bin_value(token_texts[i]) is not None]
    if not coordinates:
        return _geometric_mean([_probability(token_logprobs[i]) for i in indices])
    precisions = []
    start = _separator_probability(coordinates[0], token_texts, token_logprobs)
    for position, index in enumerate(coordinates):
        alternatives = token_top_logprobs[index] if token_top_logprobs else None
        window, bins = bin_masses(
            token_texts[index],
            token_logprobs[index],
            alternatives,
            radius,
        )
        if position == 0 and alternatives:
            start *= min(1.0, bins)  # counted once: the first is conditional
            window = window / bins if bins > 0 else 0.0
        precisions.append(window)
    value = start * _geometric_mean(precisions)
    return min(1.0, max(0.0, value))


def span_score(
    span: tuple[int, int],
    token_texts: Sequence[str],
    token_logprobs: Sequence[float],
    token_top_logprobs: Sequence[Mapping[str, float] | None] | None = None,
    *,
    offsets: Sequence[int] | None = None,
    radius: int = SCORE_BIN_RADIUS,
) -> float | None:
    """Score of the text ``span`` from its tokens (:func:`region_score`); None
    if the span covers no token."""
    offsets = offsets if offsets is not None else token_offsets(token_texts)
    return region_score(
        tokens_in_span(offsets, span),
        token_texts,
        token_logprobs,
        token_top_logprobs,
        radius=radius,
    )


def score_predictions(
    predictions: Sequence[Prediction],
    token_texts: Sequence[str],
    token_logprobs: Sequence[float] | None,
    token_top_logprobs: Sequence[Mapping[str, float] | None] | None = None,
    *,
    radius: int = SCORE_BIN_RADIUS,
) -> list[Prediction]:
    """Copies of ``predictions`` with ``score`` set from their spans.

    ``token_texts`` must concatenate to the text the spans index (the engine's
    ``GenerationResult`` guarantees it); ``token_top_logprobs`` (optional) has
    one mapping of alternatives per token. Without log-probabilities, or for
    a prediction without a span, the prediction is returned unchanged.
    """
    if token_logprobs is None:
        return list(predictions)
    if len(token_logprobs) != len(token_texts):
        raise ValueError(
            f"{len(token_logprobs)} log-probabilities for {len(token_texts)} tokens"
        )
    if token_top_logprobs is not None and len(token_top_logprobs) != len(token_texts):
        raise ValueError(
            f"{len(token_top_logprobs)} top-log-probability entries for "
            f"{len(token_texts)} tokens"
        )
    offsets = token_offsets(token_texts)
    scored = []
    for prediction in predictions:
        score = None
        if prediction.span is not None:
            score = span_score(
                prediction.span,
                token_texts,
                token_logprobs,
                token_top_logprobs,
                offsets=offsets,
                radius=radius,
            )
        scored.append(prediction if score is None else prediction.with_(score=score))
    return scored
