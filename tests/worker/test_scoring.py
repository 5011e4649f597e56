"""Scores from what the tokens say about the whole region, through the parser's
spans (unit tests) and through ``rexlabel predict`` on an OpenAI-compatible
server that returns log-probabilities (the public path)."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from converters.parser import parse_output
from converters.prediction import Prediction, RegionType
from worker.scoring import (
    SCORE_BIN_RADIUS,
    bin_masses,
    bin_value,
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


def spread(chosen: int, mass: float, width: int = 10) -> dict[str, float]:
    """Alternatives of a soft-target model: ``mass`` spread evenly over the
    bins within ``width`` of ``chosen`` (the chosen bin gets no more than the
    others, so its own probability is small)."""
    bins = range(chosen - width, chosen + width + 1)
    return {f"<{b}>": math.log(mass / len(bins)) for b in bins}


def with_alternatives(texts, alternatives_by_index):
    return [alternatives_by_index.get(i, {}) for i in range(len(texts))]


def test_offsets_and_span_lookup():
    offsets = token_offsets(["ab", "c", "", "def"])
    assert offsets == [0, 2, 3, 3, 6]
    assert list(tokens_in_span(offsets, (0, 2))) == [0]
    assert list(tokens_in_span(offsets, (1, 4))) == [0, 1, 2, 3]
    assert list(tokens_in_span(offsets, (3, 6))) == [3]
    assert list(tokens_in_span(offsets, (4, 4))) == []


def test_a_sure_but_spread_box_scores_high():
    """The tiny model's case: each coordinate's mass spread over 21 bins, so
    the written bin has under 5% (the old mean-probability score), yet all of
    it is within the radius: the region is certain."""
    logprobs = list(LOGPROBS)
    top = {i: spread(10 * (i - 3), 1.0) for i in range(4, 8)}
    for i in range(4, 8):
        logprobs[i] = top[i][TEXTS[i]]
    parsed = parse_output(TEXT, "detection", 1000, 1000)
    first, _ = score_predictions(
        parsed.predictions, TEXTS, logprobs, with_alternatives(TEXTS, top)
    )
    assert math.exp(logprobs[4]) < 0.05
    assert first.score == pytest.approx(1.0)


def test_start_is_the_mass_of_bins_against_none():
    """At the first coordinate the model weighed ``None`` (absent) against
    writing a box: the share it gave to bins caps the score."""
    top = {4: {**spread(10, 0.3), "None": math.log(0.7)}}
    for i in range(5, 8):
        top[i] = spread(10 * (i - 3), 1.0)
    parsed = parse_output(TEXT, "detection", 1000, 1000)
    first, _ = score_predictions(
        parsed.predictions, TEXTS, LOGPROBS, with_alternatives(TEXTS, top)
    )
    assert first.score == pytest.approx(0.3)


def test_a_later_instance_also_pays_for_its_separator():
    top = {i: spread(10 * (i - 3), 1.0) for i in range(4, 8)}
    top.update({i: spread(10 * (i - 4), 1.0) for i in range(9, 13)})
    parsed = parse_output(TEXT, "detection", 1000, 1000)
    first, second = score_predictions(
        parsed.predictions, TEXTS, LOGPROBS, with_alternatives(TEXTS, top)
    )
    assert first.score == pytest.approx(1.0)
    assert second.score == pytest.approx(0.5)  # P(",") = 0.5: going on at all


def test_a_hesitant_coordinate_pulls_the_score_down():
    """Mass split between two places far apart: precision 0.5 on that
    coordinate, the geometric mean of the four is 0.5 ** 0.25."""
    top = {i: spread(10 * (i - 3), 1.0) for i in range(4, 8)}
    top[6] = {**spread(30, 0.5, width=2), **spread(500, 0.5, width=2)}
    parsed = parse_output(TEXT, "detection", 1000, 1000)
    first, _ = score_predictions(
        parsed.predictions, TEXTS, LOGPROBS, with_alternatives(TEXTS, top)
    )
    assert first.score == pytest.approx(0.5**0.25)


def test_window_mass_counts_bins_within_the_radius():
    near = f"<{100 + SCORE_BIN_RADIUS}>"
    far = f"<{100 + SCORE_BIN_RADIUS + 1}>"
    alternatives = {"<100>": math.log(0.5), near: math.log(0.2), far: math.log(0.1)}
    alternatives["<|box_end|>"] = math.log(0.2)
    window, bins = bin_masses("<100>", math.log(0.5), alternatives)
    assert window == pytest.approx(0.7)
    assert bins == pytest.approx(0.8)
    # the chosen token counts even when the top k left it out
    window, bins = bin_masses("<100>", math.log(0.5), {near: math.log(0.2)})
    assert (window, bins) == (pytest.approx(0.7), pytest.approx(0.7))


def test_without_alternatives_the_own_probabilities_bound_the_score():
    """A server returning only the chosen tokens' log-probs: precision falls
    back to each bin's own probability (geometric mean), start to 1."""
    parsed = parse_output(TEXT, "detection", 1000, 1000)
    first, second = score_predictions(parsed.predictions, TEXTS, LOGPROBS)
    assert first.score == pytest.approx((0.9 * 0.8 * 0.7 * 0.6) ** 0.25)
    assert second.score == pytest.approx(0.5 * (0.2 * 0.2 * 0.4 * 0.4) ** 0.25)


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
    top = {
        i: {f" <{i - 4}>": math.log(probs[i]), " <9>": math.log(0.2)}
        for i in (5, 6, 7, 8)
    }
    top[5]["None"] = math.log(0.7)
    parsed = parse_output("".join(texts), "detection", 100, 100)
    (scored,) = score_predictions(
        parsed.predictions,
        texts,
        [math.log(p) for p in probs],
        with_alternatives(texts, top),
    )
    # start: bins 0.1 + 0.2 against None 0.7; then the mass near each bin
    near = [1.0, 0.3 + 0.2, 0.5 + 0.2, 0.7 + 0.2]
    assert scored.score == pytest.approx(0.3 * math.prod(near) ** 0.25)


def test_without_logprobs_or_span_predictions_pass_through():
    box = Prediction(RegionType.BOX, "cat", (0, 0, 5, 5))
    assert score_predictions([box], TEXTS, None) == [box]
    assert score_predictions([box], TEXTS, LOGPROBS)[0].score is None


@pytest.mark.parametrize(
    "alternatives",
    [
        {"<10>": 1e-7, "<11>": 5.0, "<12>": 0.0},  # rounding above 0, nonsense
        {"<10>": float("nan"), "<500>": float("nan")},
        {f"<{b}>": 0.0 for b in range(0, 1000, 7)},  # "certain" of 143 bins
        {"<10>": float("-inf")},
    ],
)
def test_scores_stay_in_unit_interval(alternatives):
    for own in (1e-7, 0.0, -1e9, float("nan"), float("-inf")):
        score = span_score((0, 4), ["<10>"], [own], [alternatives])
        assert 0.0 <= score <= 1.0, (alternatives, own)
    assert span_score((0, 4), ["<10>"], [1e-7]) == 1.0
    assert span_score((0, 4), ["<10>"], [-1e9]) == 0.0


def test_a_server_cannot_break_scoring_with_odd_tokens():
    """Alternatives are a server's text: a 5000-digit "bin" (past int()'s
    digit limit) or non-ASCII digits are no bins, and the score stays sane."""
    alternatives = {"<" + "9" * 5000 + ">": 0.0, "<\u0663>": 0.0, "<11>": -0.1}
    score = span_score((0, 4), ["<10>"], [math.log(0.5)], [alternatives])
    assert score == pytest.approx(1.0)  # the known bins <10>, <11> are near
    assert bin_value("<" + "9" * 5000 + ">") is None and bin_value("<\u0663>") is None
    assert bin_value(" <999> ") == 999


def test_mismatched_lengths_are_an_error():
    box = Prediction(RegionType.BOX, "cat", (0, 0, 5, 5), span=(0, 3))
    with pytest.raises(ValueError, match="log-probabilities"):
        score_predictions([box], TEXTS, LOGPROBS[:-1])
    with pytest.raises(ValueError, match="top-log-probability entries"):
        score_predictions([box], TEXTS, LOGPROBS, [{}])


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


# The public path: ``rexlabel predict`` on an OpenAI-compatible server --------

SURE = ("cat", (100, 200, 300, 400), 0.0)
"""A phrase the model is sure of: all bin mass near each written bin."""
DOUBTFUL = ("dog", (600, 600, 700, 700), 0.7)
"""A phrase where the model gave ``None`` (absent) 70% at the first coordinate."""


def _entries(phrase, bins, none_mass):
    """OpenAI ``logprobs.content`` entries of one group; coordinate tokens
    carry ``top_logprobs`` spread over 19 bins (4.7% on each, as the soft-
    target tiny model does), the first one also ``None``."""
    entries = [
        {"token": t, "logprob": 0.0, "top_logprobs": []}
        for t in ("<|object_ref_start|>", phrase, "<|object_ref_end|>", "<|box_start|>")
    ]
    for k, value in enumerate(bins):
        share = 1.0 - none_mass if k == 0 else 1.0
        top = spread(value, share * 0.9, width=9)  # 19 bins (+ None): a top 20
        if k == 0 and none_mass:
            top["None"] = math.log(none_mass)
        entries.append(
            {
                "token": f"<{value}>",
                "logprob": top[f"<{value}>"],
                "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()],
            }
        )
    entries.append({"token": "<|box_end|>", "logprob": 0.0, "top_logprobs": []})
    return entries


def _scored_chat():
    from tests.security.conftest import MODEL_ID, Listener

    entries = _entries(*SURE)
    entries.append({"token": ", ", "logprob": 0.0, "top_logprobs": []})
    entries += _entries(*DOUBTFUL)
    content = "".join(e["token"] for e in entries)

    def reply(request):
        if request.method == "GET" and request.path.rstrip("/").endswith("/models"):
            data = {"data": [{"id": MODEL_ID}]}
        else:
            data = {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                        "logprobs": {"content": entries},
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": len(entries)},
            }
        return 200, {"Content-Type": "application/json"}, json.dumps(data).encode()

    return Listener(reply=reply)


def test_predict_scores_a_sure_box_high_and_a_doubtful_one_low(
    tmp_path, capsys, monkeypatch
):
    """Before, a score was the mean probability of the written bins: under 0.05
    for both boxes here, below any useful ``model_score_threshold``."""
    from backend.cli import main
    from tests.security.conftest import MODEL_ID

    image = tmp_path / "shapes.png"
    Image.new("RGB", (1000, 1000), (90, 90, 90)).save(image)
    with _scored_chat() as chat:
        monkeypatch.setenv("REXLABEL_OPENAI_URL", f"{chat.url}/v1")
        code = main(
            [
                "predict",
                str(image),
                "--engine",
                "openai",
                "--model",
                MODEL_ID,
                "--task",
                "detection",
                "--categories",
                "cat, dog",
                "--json",
            ]
        )
        body = json.loads([s for s in chat.seen if s.method == "POST"][-1].body)
    out, err = capsys.readouterr()
    assert code == 0, err
    (item,) = json.loads(out)["images"]
    scores = {p["label"]: p["score"] for p in item["predictions"]}
    rest = 0.9 ** (3 / 4)  # 0.9 of the mass near the 2nd to 4th coordinates
    assert scores["cat"] == pytest.approx(0.9 * rest, abs=0.01)
    assert scores["dog"] == pytest.approx(0.27 * rest, abs=0.01)  # None 0.7
    assert body["top_logprobs"] >= 20  # the alternatives were asked for
