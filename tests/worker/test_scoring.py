"""Scores from token probabilities, through the parser's spans."""

from __future__ import annotations

import math

import pytest

from converters.parser import parse_output
from converters.prediction import Prediction, RegionType
from worker.scoring import (
    ScoreReduction,
    score_predictions,
    span_score,
    token_offsets,
    tokens_in_span,
)

ANSWER = [
    ("<|object_ref_start|>", 0.9),
    ("cat", 0.8),
    ("<|object_ref_end|>", 0.99),
    ("<|box_start|>", 0.99),
    ("<10>", 0.9),
    ("<20>", 0.8),
    ("<30>", 0.7),
    ("<40>", 0.6),
    (",", 0.5),
    ("<50>", 0.2),
    ("<60>", 0.2),
    ("<70>", 0.4),
    ("<80>", 0.4),
    ("<|box_end|>", 0.9),
    ("<|im_end|>", 0.9),
]
TEXTS = [t for t, _ in ANSWER]
LOGPROBS = [math.log(p) for _, p in ANSWER]
TEXT = "".join(TEXTS[:-1])


def test_offsets_and_span_lookup():
    offsets = token_offsets(["ab", "c", "", "def"])
    assert offsets == [0, 2, 3, 3, 6]
    assert list(tokens_in_span(offsets, (0, 2))) == [0]
    assert list(tokens_in_span(offsets, (1, 4))) == [0, 1, 2, 3]
    assert list(tokens_in_span(offsets, (3, 6))) == [3]
    assert list(tokens_in_span(offsets, (4, 4))) == []


def test_parsed_boxes_score_by_their_coordinate_tokens():
    parsed = parse_output(TEXT, "detection", 1000, 1000)
    assert len(parsed.predictions) == 2
    scored = score_predictions(parsed.predictions, TEXTS, LOGPROBS)
    assert scored[0].score == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)
    assert scored[1].score == pytest.approx((0.2 + 0.2 + 0.4 + 0.4) / 4)
    assert scored[0].coords == parsed.predictions[0].coords
    assert scored[0].span == parsed.predictions[0].span


def test_min_reduction():
    parsed = parse_output(TEXT, "detection", 1000, 1000)
    scored = score_predictions(
        parsed.predictions, TEXTS, LOGPROBS, reduction=ScoreReduction.MIN
    )
    assert [p.score for p in scored] == pytest.approx([0.6, 0.2])


def test_spaced_tokens_as_vllm_writes_them():
    texts = [
        "<|object_ref_start|>",
        " dog",
        "<|object_ref_end|>",
        " ",
        "<|box_start|>",
        " <1>",
        " <2>",
        " <3>",
        " <4>",
        " ",
        "<|box_end|>",
    ]
    probs = [0.5, 0.5, 0.5, 0.5, 0.5, 0.1, 0.3, 0.5, 0.7, 0.5, 0.5]
    parsed = parse_output("".join(texts), "detection", 100, 100)
    (scored,) = score_predictions(
        parsed.predictions, texts, [math.log(p) for p in probs]
    )
    assert scored.score == pytest.approx(0.4)


def test_without_logprobs_or_span_predictions_pass_through():
    box = Prediction(RegionType.BOX, "cat", (0, 0, 5, 5))
    assert score_predictions([box], TEXTS, None) == [box]
    assert score_predictions([box], TEXTS, LOGPROBS)[0].score is None


def test_scores_stay_in_unit_interval():
    # a log-prob rounding above 0 must not make a score above 1
    score = span_score((0, 4), ["<10>"], [1e-7])
    assert score == 1.0
    assert span_score((0, 4), ["<10>"], [-1e9]) == 0.0


def test_mismatched_lengths_are_an_error():
    box = Prediction(RegionType.BOX, "cat", (0, 0, 5, 5), span=(0, 3))
    with pytest.raises(ValueError, match="log-probabilities"):
        score_predictions([box], TEXTS, LOGPROBS[:-1])


def test_keypoint_instance_scores_its_coordinate_tokens():
    texts = ['{"person1": {"bbox": "', "<1>", "<2>", "<3>", "<4>", '", "keypoints": ']
    texts += ['{"nose": "', "<5>", "<6>", '"}}}']
    probs = [0.01, 0.5, 0.5, 0.5, 0.5, 0.01, 0.01, 1.0, 1.0, 0.01]
    text = "".join(texts)
    parsed = parse_output(text, "keypoint", 999, 999)
    assert len(parsed.predictions) == 1
    (scored,) = score_predictions(
        parsed.predictions, texts, [math.log(p) for p in probs]
    )
    assert 0.5 <= scored.score <= 1.0
