"""Confidence scores for predictions from the probabilities of their tokens.

Rex-Omni writes boxes as text and gives no scores (upstream issues #76, #150).
Every generated token has a probability, though, and the parser records which
characters of the answer each prediction came from (``Prediction.span``). A
prediction's score is the **mean probability of the coordinate tokens**
(``<0>``..``<999>``) inside its span: high when the model was sure where the
item is, low when it hesitated. ``min`` (the least sure token) is available as
an alternative reduction; mean ranks better on the tiny model and is less
harsh on long polygons. Items whose span holds no coordinate token (none in
the grammar today) fall back to all tokens of the span.

Scores are in 0..1. Pure Python: no torch.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Sequence
from enum import Enum

from converters.prediction import Prediction


class ScoreReduction(str, Enum):
    """How a prediction's token probabilities become one score."""

    MEAN = "mean"
    MIN = "min"


SCORE_REDUCTION = ScoreReduction.MEAN
"""Mean probability of an item's coordinate tokens (see module docstring)."""

_COORDINATE_TOKEN = re.compile(r"\s*<\d+>\s*")


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


def span_score(
    span: tuple[int, int],
    token_texts: Sequence[str],
    token_logprobs: Sequence[float],
    *,
    reduction: ScoreReduction = SCORE_REDUCTION,
    offsets: Sequence[int] | None = None,
) -> float | None:
    """Score of the text ``span`` from its tokens' log-probabilities; None if
    the span covers no token."""
    offsets = offsets if offsets is not None else token_offsets(token_texts)
    indices = tokens_in_span(offsets, span)
    if not indices:
        return None
    coordinate = [i for i in indices if _COORDINATE_TOKEN.fullmatch(token_texts[i])]
    chosen = coordinate or list(indices)
    probabilities = [math.exp(min(0.0, token_logprobs[i])) for i in chosen]
    if reduction is ScoreReduction.MIN:
        value = min(probabilities)
    else:
        value = sum(probabilities) / len(probabilities)
    return min(1.0, max(0.0, value))


def score_predictions(
    predictions: Sequence[Prediction],
    token_texts: Sequence[str],
    token_logprobs: Sequence[float] | None,
    *,
    reduction: ScoreReduction = SCORE_REDUCTION,
) -> list[Prediction]:
    """Copies of ``predictions`` with ``score`` set from their spans.

    ``token_texts`` must concatenate to the text the spans index (the engine's
    ``GenerationResult`` guarantees it). Without log-probabilities, or for a
    prediction without a span, the prediction is returned unchanged.
    """
    if token_logprobs is None:
        return list(predictions)
    if len(token_logprobs) != len(token_texts):
        raise ValueError(
            f"{len(token_logprobs)} log-probabilities for {len(token_texts)} tokens"
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
                reduction=reduction,
                offsets=offsets,
            )
        scored.append(prediction if score is None else prediction.with_(score=score))
    return scored
