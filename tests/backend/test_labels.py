"""Phrase -> label mapping: exact, case/space-insensitive, fuzzy, never silent."""

from __future__ import annotations

import difflib

import pytest

from backend.labels import (
    FUZZY_CUTOFF,
    LabelMap,
    Match,
    normalize_phrase,
    phrase_words,
    split_phrases,
)


def test_normalize_and_split() -> None:
    assert normalize_phrase("  Traffic\t  LIGHT ") == "traffic light"
    assert split_phrases("car, truck,, ") == ["car", "truck"]
    assert split_phrases(None) == []


def test_labels_without_aliases_are_their_own_phrases() -> None:
    m = LabelMap.from_labels(["Car", "Person"])
    assert m.categories == ["Car", "Person"]
    assert m.labels == ["Car", "Person"]
    assert m.resolve("Car") == "Car"


def test_predicted_values_aliases_replace_the_label_as_phrases() -> None:
    m = LabelMap.from_labels(["Vehicle", "Person"], {"Vehicle": ["car", "truck"]})
    assert m.categories == ["car", "truck", "Person"]
    assert m.resolve("truck") == "Vehicle"
    assert m.resolve("car") == "Vehicle"
    # The label itself still maps (the model may echo it).
    assert m.resolve("vehicle") == "Vehicle"


def test_case_and_space_insensitive() -> None:
    m = LabelMap.from_labels(["Traffic Light"])
    assert m.resolve("traffic   light") == "Traffic Light"
    assert m.resolve(" TRAFFIC LIGHT") == "Traffic Light"


def test_close_typo_maps_but_other_words_do_not() -> None:
    m = LabelMap.from_labels(["robot-shope", "car"])
    assert m.resolve("robot-shape") == "robot-shope"
    # "cat" is close to "car" by edit distance but below the cutoff.
    ratio = difflib.SequenceMatcher(None, "cat", "car").ratio()
    assert ratio < FUZZY_CUTOFF
    assert m.resolve("cat") is None


def test_free_map_keeps_unknown_phrases() -> None:
    m = LabelMap.free_phrases(["word"])
    assert m.free
    assert m.resolve("word") == "word"
    assert m.resolve("zebra") == "zebra"


def test_restricted_to_asks_only_given_phrases() -> None:
    m = LabelMap.from_labels(["Car", "Person"], {"Car": ["car", "auto"]})
    r = m.restricted_to(["auto", "person"])
    assert r.categories == ["auto", "person"]
    assert r.resolve("auto") == "Car"
    assert r.resolve("person") == "Person"
    with pytest.raises(ValueError, match="zebra"):
        m.restricted_to(["zebra"])


def test_fuzzy_match_only_when_one_label_is_close() -> None:
    """A phrase near two labels of the control picks neither (an annotator
    would accept the wrong one); near one label it maps and says how."""
    m = LabelMap.from_labels(["class 1", "class 2", "robot-shope"])
    assert m.match("robot-shope") == ("robot-shope", Match.EXACT)
    assert m.match("Robot-Shope") == ("robot-shope", Match.NORMALIZED)
    assert m.match("robot-shape") == ("robot-shope", Match.FUZZY)
    assert m.match("clas 1") == ("class 1", Match.FUZZY)
    # "class 7" is as close to both classes (0.86): ambiguous, no label.
    for label in ("class 1", "class 2"):
        assert difflib.SequenceMatcher(None, "class 7", label).ratio() >= FUZZY_CUTOFF
    assert m.match("class 7") == (None, None)
    assert m.resolve("class 7") is None


def test_aliases_of_one_label_do_not_make_a_fuzzy_match_ambiguous() -> None:
    m = LabelMap.from_labels(["Vehicle"], {"Vehicle": ["sports car", "sport cars"]})
    assert m.match("sports cars") == ("Vehicle", Match.FUZZY)


DESK = LabelMap.from_labels(
    ["cup", "laptop", "Car", "sports car", "stop sign", "bus"],
    {"Car": ["car", "truck"]},
)


@pytest.mark.parametrize(
    ("phrase", "head"),
    [
        ("red sports car", "sports car"),  # the longest name ending last
        ("a red truck", "Car"),  # an alias
        ("two red cars", "Car"),  # a plural
        ("white cups", "cup"),
        ("the cup left of the laptop", "cup"),  # cut at the relation
        ("the cup on top of the laptop", "cup"),
        ("the left cup next to the laptop", "cup"),  # "left" before any name
        ("left of the laptop", "laptop"),  # no name before the relation
        ("bus stop sign", "stop sign"),  # a compound: its last name
        ("black and white cup", "cup"),  # "and" joining no two labels
        ("the cup next to a laptop and a bus", "cup"),  # "and" after the cut
        ("cup and laptop", None),  # two labels joined: neither
        ("carpet", None),  # whole words only
        ("zebra", None),
    ],
)
def test_head_label_is_the_label_a_phrase_is_about(phrase, head) -> None:
    assert DESK.head_label(phrase) == head


def test_prompt_match_prefers_the_label_a_phrase_is() -> None:
    assert DESK.prompt_match("Truck") == ("Car", Match.NORMALIZED)
    assert DESK.prompt_match("red sports car") == ("sports car", Match.HEAD)
    assert DESK.prompt_match("laptp") == ("laptop", Match.FUZZY)
    assert DESK.prompt_match("zebra") == (None, None)
    only = LabelMap.from_labels(["Vehicle"])
    assert only.prompt_match("red sports car") == ("Vehicle", Match.ONLY)
    free = LabelMap(free=True)
    assert free.prompt_match("red cup") == ("red cup", Match.FREE)


def test_phrase_words_drop_punctuation() -> None:
    assert phrase_words(" The cup, LEFT-of  it's ") == [
        "the",
        "cup",
        "left",
        "of",
        "it's",
    ]
