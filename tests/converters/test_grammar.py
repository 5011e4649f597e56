"""converters.grammar: the tokens and bins the parser reads and the writer writes."""

import json

import pytest

from converters.answer import format_answer
from converters.geometry import bin_to_pixel, pixel_to_bin
from converters.grammar import (
    BIN_TOKENS,
    BOX_END,
    BOX_START,
    END_TOKENS,
    FENCE,
    GRAMMAR_TOKENS,
    JSON_FENCE,
    KEYPOINT_BOX_BINS,
    MAX_BIN,
    NONE_ANSWER,
    NUM_BINS,
    OBJECT_REF_END,
    OBJECT_REF_START,
    UNVISIBLE,
    bin_token,
)
from converters.parser import parse_output
from converters.prediction import Prediction


def group(phrase: str, items: str) -> str:
    return f"{OBJECT_REF_START}{phrase}{OBJECT_REF_END}{BOX_START}{items}{BOX_END}"


def test_bin_token_bounds():
    assert bin_token(0) == "<0>"
    assert bin_token(MAX_BIN) == "<999>"
    for outside in (-1, NUM_BINS):
        with pytest.raises(ValueError, match=r"outside 0\.\.999"):
            bin_token(outside)


def test_bin_tokens_are_every_bin_in_order():
    assert len(BIN_TOKENS) == NUM_BINS == len(set(BIN_TOKENS))
    assert all(BIN_TOKENS[b] == bin_token(b) for b in range(NUM_BINS))


def test_last_bin_is_the_far_edge():
    assert pixel_to_bin(640, 640) == MAX_BIN
    assert bin_to_pixel(MAX_BIN, 640) == 640
    (box,) = parse_output(
        group("a", bin_token(0) * 2 + bin_token(MAX_BIN) * 2), "detection", 640, 480
    ).predictions
    assert box.coords == (0, 0, 640, 480)


def test_grammar_tokens_are_no_bins_and_include_the_end_tokens():
    assert set(END_TOKENS) <= set(GRAMMAR_TOKENS)
    assert not set(GRAMMAR_TOKENS) & set(BIN_TOKENS)


@pytest.mark.parametrize("end", END_TOKENS)
def test_text_after_an_end_token_is_not_read(end):
    answer = group("a", "<1><2><3><4>") + end + ", " + group("b", "<5><6><7><8>")
    result = parse_output(answer, "detection", 999, 999)
    assert [p.label for p in result.predictions] == ["a"]
    assert result.warnings == []


def test_none_answer_is_written_and_read_as_absent():
    answer = format_answer("detection", [], 640, 480, categories=["cat"])
    assert answer == group("cat", NONE_ANSWER)
    result = parse_output(answer, "detection", 640, 480)
    assert result.predictions == [] and result.warnings == []


def test_keypoint_answer_is_fenced_json_with_box_and_joint_bins():
    person = Prediction(
        type="keypoint",
        label="person",
        coords=(10, 20, 300, 400),
        keypoints={"nose": (100, 50), "left eye": None},
    )
    answer = format_answer("keypoint", [person], 640, 480)
    assert answer.startswith(JSON_FENCE) and answer.endswith(FENCE)
    (instance,) = json.loads(answer[len(JSON_FENCE) : -len(FENCE)]).values()
    bins = instance["bbox"].split()
    assert bins == [bin_token(b) for b in (15, 41, 468, 832)]
    assert len(bins) == KEYPOINT_BOX_BINS
    assert len(instance["keypoints"]["nose"].split()) == 2
    assert instance["keypoints"]["left eye"] == UNVISIBLE
    (back,) = parse_output(answer, "keypoint", 640, 480).predictions
    assert back.keypoints["left eye"] is None
