import pytest

from converters.tile_text import fuller_text, join_at_seam, normalise, texts_agree


def test_normalise_folds_case_and_whitespace():
    assert normalise("  Hello \n  World\t") == "hello world"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("STOP", "stop"),  # case
        ("wor", "world"),  # a cut part inside the whole
        ("Hello wc", "Hello world"),  # one misread character: 7 of 8 found
        ("", "anything"),  # nothing read is in every text
    ],
)
def test_readings_that_agree(first, second):
    assert texts_agree(first, second)
    assert texts_agree(second, first)


@pytest.mark.parametrize(
    ("first", "second"),
    [("cat", "dog"), ("on", "no"), ("Exit", "Entrance")],
)
def test_readings_that_do_not_agree(first, second):
    assert not texts_agree(first, second)


def test_fuller_text_prefers_more_characters_and_the_first_on_a_tie():
    assert fuller_text("wor", "world") == "world"
    assert fuller_text("STOP", "stop") == "STOP"


@pytest.mark.parametrize(
    ("first", "second", "joined"),
    [
        ("Hello wo", "lo world", "Hello world"),
        ("Hello wc", "lo world", "Hello world"),  # misread last character dropped
        ("Hello wo", "xlo world", "Hello world"),  # sliced first character dropped
        ("line 1\nline 2", "line 2\nline 3", "line 1\nline 2\nline 3"),
    ],
)
def test_join_at_seam(first, second, joined):
    assert join_at_seam(first, second) == joined


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Hello wo", "orld"),  # one shared character is not enough
        ("Hello", "world"),
        ("", "world"),
        ("abcdefg", "cdxyz"),  # shared run 3 characters from the cut end
    ],
)
def test_join_at_seam_refuses_parts_without_shared_text(first, second):
    assert join_at_seam(first, second) is None
