"""The text scanner of the runaway guard: each rule on hand-written token texts,
then the same stops as the torch ``RunawayGuard`` on the tiny tokenizer's ids."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engines.runaway_guard_text import (
    ContentScanner,
    GuardTokenTexts,
    IdStreamGuard,
    RunawayScanner,
    bin_value,
    is_whitespace,
    split_pieces,
)
from worker.engines.runaway_guard_torch import GrammarTokens, RunawayGuard

BS, BE = "<|box_start|>", "<|box_end|>"
REF = ["<|object_ref_start|>", "cat", "<|object_ref_end|>"]


def b(*values: int) -> list[str]:
    return [f"<{v}>" for v in values]


def stop_at(tokens: list[str], max_instances: int = 100) -> int | None:
    """Where a fresh scanner (3 repeats) stops ``tokens``, as the vLLM engine
    runs it on a finished output."""
    return RunawayScanner(max_repeats=3, max_instances=max_instances).feed_all(tokens)


def test_third_identical_box_stops_at_its_separator():
    item = [*b(1, 2, 3, 4), ","]
    tokens = [*REF, BS, *item * 5]
    assert stop_at(tokens) == 3 + 1 + 3 * 5 - 1


def test_distinct_boxes_do_not_trigger_and_are_counted():
    tokens = [BS]
    for i in range(10):
        tokens += [*b(i, i, i + 1, i + 1), ","]
    scanner = RunawayScanner(max_repeats=3, max_instances=100)
    assert scanner.feed_all(tokens) is None
    assert scanner.item_count == 10 and scanner.tokens_seen == len(tokens)


def test_a_repeat_broken_by_another_item_starts_over():
    one, two = [*b(1, 2, 3, 4), ","], [*b(5, 6, 7, 8), ","]
    tokens = [BS, *one, *one, *two, *one, *one, *two]
    assert stop_at(tokens) is None


def test_instance_cap():
    tokens = [BS]
    for i in range(10):
        tokens += [*b(i, 0, i + 1, 1), ","]
    assert stop_at(tokens, max_instances=4) == 4 * 5


def test_same_box_in_consecutive_groups_counts_as_repeat():
    group = [*REF, BS, *b(7, 7, 9, 9), BE, ","]
    tokens = group * 4
    # the <|box_end|> of the third group
    assert stop_at(tokens) == 2 * len(group) + 8


def test_whitespace_inside_a_run_keeps_the_item_whole():
    item = [" ", *[t for v in (1, 2, 3, 4) for t in (*b(v), " ")], ","]
    tokens = [BS, *item * 3]
    assert stop_at(tokens) == 3 * len(item)
    split = [BS, *b(1, 2), ".", *b(3, 4), ","]  # any other token ends a run
    scanner = RunawayScanner(max_repeats=3, max_instances=100)
    scanner.feed_all(split)
    assert scanner.item_count == 2


def test_keypoint_json_counts_instance_boxes_not_joints():
    # "bbox": " <1> <2> <3> <4> ", then 17 joints " <x> <y> " per instance
    instance = ['"', " ", *[t for v in (1, 2, 3, 4) for t in (*b(v), " ")], '"']
    for joint in range(17):
        instance += ['"', " ", *b(joint), " ", *b(joint + 1), " ", '"']
    scanner = RunawayScanner(max_repeats=3, max_instances=2)
    assert scanner.feed_all(instance) is None
    assert scanner.item_count == 1


def test_a_polygon_is_one_item():
    tokens = [BS, *b(*range(20)), ",", *b(*range(20)), BE]
    scanner = RunawayScanner(max_repeats=2, max_instances=100)
    assert scanner.feed_all(tokens) == len(tokens) - 1
    assert scanner.item_count == 2


def test_tokens_after_a_trigger_are_ignored():
    scanner = RunawayScanner(max_repeats=2, max_instances=100)
    tokens = [BS, *b(1, 2), ",", *b(1, 2), ",", *b(3, 4), ","]
    assert scanner.feed_all(tokens) == 6
    assert scanner.feed(",") and scanner.triggered_at == 6
    assert scanner.tokens_seen == 7 and scanner.item_count == 2


def test_token_classes():
    assert [bin_value(t) for t in ("<0>", "<999>", "<1000>", "<07>", "<a>", "0")] == [
        0,
        999,
        None,
        None,
        None,
        None,
    ]
    assert is_whitespace(" ") and is_whitespace("\n\n ") and is_whitespace("\t\r")
    assert not is_whitespace("") and not is_whitespace(" ,")
    assert not is_whitespace("\u3000")  # not a byte-level whitespace token


def test_rejects_bad_limits():
    with pytest.raises(ValueError, match="max_repeats"):
        RunawayScanner(max_repeats=1, max_instances=5)


def test_split_pieces_keeps_special_tokens_whole():
    text = (
        "<|object_ref_start|>a cat<|object_ref_end|><|box_start|><1> <22>,<3<|box_end|>"
    )
    pieces = split_pieces(text)
    assert "".join(pieces) == text
    assert pieces == [
        "<|object_ref_start|>",
        "a",
        " ",
        "c",
        "a",
        "t",
        "<|object_ref_end|>",
        "<|box_start|>",
        "<1>",
        " ",
        "<22>",
        ",",
        "<",
        "3",
        "<|box_end|>",
    ]


def test_content_scanner_cuts_after_the_triggering_piece_across_chunks():
    text = "<|object_ref_start|>cat<|object_ref_end|><|box_start|>"
    text += "<1><2><3><4>," * 4
    expected = text.index(",", text.index(",", text.index(",") + 1) + 1) + 1
    for size in (1, 2, 3, 5, 7, len(text)):
        scanner = ContentScanner(max_repeats=3, max_instances=100)
        cut = None
        for start in range(0, len(text), size):
            cut = scanner.feed(text[start : start + size])
            if cut is not None:
                break
        assert cut == expected, size
        assert text[:cut].endswith("<4>,")


def test_content_scanner_scans_a_pending_tag_at_the_end():
    scanner = ContentScanner(max_repeats=2, max_instances=100)
    assert scanner.feed("<|box_start|><1><2>,<1><2") is None
    assert scanner.feed(">") is None  # the run is still open
    assert scanner.finish() is None
    scanner = ContentScanner(max_repeats=2, max_instances=100)
    assert scanner.feed("<|box_start|><1><2>,<1><2><|box_end") is None
    # at the end the unfinished tag is text: its "<" ends the repeated item
    assert scanner.finish() == len("<|box_start|><1><2>,<1><2><")


# Against the torch guard, on the tiny model's tokenizer ------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from worker.engines.transformers_loading import load_processor

    return load_processor(str(tiny_model_dir)).tokenizer


@pytest.fixture(scope="module")
def grammar(tokenizer):
    return GrammarTokens.from_tokenizer(tokenizer)


def _decode(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i], skip_special_tokens=False) for i in ids]


def _guard_stop(grammar, ids, *, max_repeats, max_instances) -> int | None:
    """Step at which the torch guard stops ``ids`` (one row), or None."""
    guard = RunawayGuard(
        grammar,
        max_repeats=max_repeats,
        max_instances=max_instances,
        batch_size=1,
        device="cpu",
    )
    sequence = torch.zeros(1, 3, dtype=torch.long)
    for step, token in enumerate(ids):
        sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
        if guard(sequence, None).item():
            return step
    return None


def test_every_vocabulary_token_is_classed_as_the_guard_classes_it(tokenizer, grammar):
    ids = list(range(len(tokenizer)))
    tokens = tokenizer.convert_ids_to_tokens(ids)
    texts = [tokenizer.convert_tokens_to_string([t]) for t in tokens]
    bins = [bin_value(t) for t in texts]
    assert bins == [
        i - grammar.first_bin if 0 <= i - grammar.first_bin < 1000 else None
        for i in ids
    ]
    assert {i for i, t in zip(ids, texts, strict=True) if is_whitespace(t)} == set(
        grammar.whitespace
    )
    assert texts[grammar.box_start] == BS and texts[grammar.box_end] == BE


def _answer_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    ("answer", "max_repeats", "max_instances"),
    [
        (
            "<|object_ref_start|>cat<|object_ref_end|><|box_start|>"
            + "<1><2><3><4>," * 6
            + "<|box_end|><|im_end|>",
            3,
            100,
        ),
        (
            "<|object_ref_start|>cat<|object_ref_end|><|box_start|>"
            + "".join(f"<{i}><{i}><{i + 5}><{i + 5}>," for i in range(30))
            + "<|box_end|><|im_end|>",
            3,
            12,
        ),
        (
            "".join(
                f"<|object_ref_start|>p{i % 2}<|object_ref_end|><|box_start|>"
                "<7><7><9><9><|box_end|>, "
                for i in range(5)
            ),
            3,
            100,
        ),
        (
            '{"person1": {"bbox": " <1> <2> <3> <4> ", "keypoints": {'
            + ", ".join(f'"j{j}": " <{j}> <{j + 1}> "' for j in range(17))
            + "}}, "
            + '"person2": {"bbox": " <1> <2> <3> <4> "}',
            2,
            100,
        ),
        (
            "<|object_ref_start|>ok<|object_ref_end|><|box_start|><1><2><3><4>,"
            "<5><6><7><8><|box_end|><|im_end|>",
            2,
            100,
        ),
    ],
)
def test_real_answers_stop_where_the_guard_stops(
    tokenizer, grammar, answer, max_repeats, max_instances
):
    ids = _answer_ids(tokenizer, answer)
    limits = dict(max_repeats=max_repeats, max_instances=max_instances)
    expected = _guard_stop(grammar, ids, **limits)
    assert RunawayScanner(**limits).feed_all(_decode(tokenizer, ids)) == expected
    # vLLM's in-engine guard reads the ids as they arrive, a token at a time.
    output: list[int] = []
    guard = IdStreamGuard(GuardTokenTexts.from_grammar(grammar), output, **limits)
    stopped = None
    for step, token in enumerate(ids):
        output.append(token)
        if guard.advance():
            stopped = step
            break
    assert stopped == expected
    if "ok" not in answer:
        assert expected is not None  # the cases exercise a trigger
    # The content cut into pieces stops inside the same token.
    scanner = ContentScanner(**limits)
    cut = scanner.feed(answer)
    cut = cut if cut is not None else scanner.finish()
    if expected is None:
        assert cut is None
    else:
        before = tokenizer.decode(ids[:expected])
        assert len(before) < cut <= len(tokenizer.decode(ids[: expected + 1]))


_POOL = ["<|box_start|>", "<|box_end|>", " ", "  ", "\n", ",", "cat", '"', "<|im_end|>"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(_POOL), st.sampled_from(b(0, 1, 2, 999))),
        min_size=5,
        max_size=40,
    ),
    st.integers(2, 4),
    st.integers(1, 6),
)
def test_random_sequences_stop_where_the_guard_stops(
    tokenizer, grammar, texts, max_repeats, max_instances
):
    ids = [
        tokenizer.convert_tokens_to_ids(t)
        if t.startswith("<")
        else _answer_ids(tokenizer, t)[0]
        for t in texts
    ]
    limits = dict(max_repeats=max_repeats, max_instances=max_instances)
    assert RunawayScanner(**limits).feed_all(_decode(tokenizer, ids)) == _guard_stop(
        grammar, ids, **limits
    )


def test_the_id_guard_waits_for_placeholder_ids(grammar):
    """vLLM's asynchronous scheduling appends -1 until a token is known."""
    texts = GuardTokenTexts.from_grammar(grammar)
    first = grammar.first_bin
    item = [first + 1, first + 2, first + 3, first + 4, grammar.box_end]
    output = [grammar.box_start, *item[:-1], -1]
    guard = IdStreamGuard(texts, output, max_repeats=2, max_instances=1)
    assert not guard.advance() and guard.scanner.tokens_seen == 5
    output[-1] = grammar.box_end  # filled in: the first item ends here
    assert guard.advance() and guard.scanner.triggered_at == 5
    assert texts(first + 7) == "<7>" and texts(grammar.box_start) == BS
    assert texts(next(iter(grammar.whitespace))) == " "
