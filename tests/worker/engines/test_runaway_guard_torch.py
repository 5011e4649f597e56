"""The runaway guard's item counting, step by step, against a plain reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engines.runaway_guard_torch import GrammarTokens, RunawayGuard

FIRST_BIN = 100
BOX_START, BOX_END, SPACE, COMMA, OTHER = 1, 2, 3, 4, 5
GRAMMAR = GrammarTokens(
    first_bin=FIRST_BIN,
    num_bins=1000,
    box_start=BOX_START,
    box_end=BOX_END,
    whitespace=frozenset({SPACE}),
    vocab_size=FIRST_BIN + 1000,
)


def b(*values: int) -> list[int]:
    return [FIRST_BIN + v for v in values]


def run(rows: list[list[int]], *, max_repeats=3, max_instances=100):
    """Feed rows (equal length) step by step; return (stop step per row, guard)."""
    guard = RunawayGuard(
        GRAMMAR,
        max_repeats=max_repeats,
        max_instances=max_instances,
        batch_size=len(rows),
        device="cpu",
    )
    prompt = torch.zeros(len(rows), 7, dtype=torch.long)
    stops: list[int | None] = [None] * len(rows)
    for step in range(len(rows[0])):
        column = torch.tensor([[r[step]] for r in rows])
        prompt = torch.cat([prompt, column], dim=1)
        stopped = guard(prompt, None)
        for row, flag in enumerate(stopped.tolist()):
            if flag and stops[row] is None:
                stops[row] = step
    return stops, guard


def reference(tokens: list[int], *, max_repeats=3, max_instances=100):
    """The counting rule written plainly: step at which the guard stops, or None."""
    in_span, run_, previous, repeats, count = False, [], None, 0, 0
    for step, token in enumerate(tokens):
        is_bin = FIRST_BIN <= token < FIRST_BIN + 1000
        if not is_bin and token != SPACE and run_:
            if in_span or len(run_) == 4:
                repeats = repeats + 1 if run_ == previous else 1
                previous = run_
                count += 1
            run_ = []
        if is_bin:
            run_ = [*run_, token]
        if token == BOX_START:
            in_span = True
        elif token == BOX_END:
            in_span = False
        if repeats >= max_repeats or count >= max_instances:
            return step
    return None


def test_third_identical_box_stops_at_its_separator():
    item = [*b(1, 2, 3, 4), COMMA]
    tokens = [OTHER, BOX_START, *item * 5]
    stops, _ = run([tokens])
    assert stops == [1 + 3 * len(item)]  # the comma after the third copy


def test_distinct_boxes_do_not_trigger_repeats():
    tokens = [BOX_START]
    for i in range(10):
        tokens += [*b(i, i, i + 1, i + 1), COMMA]
    stops, guard = run([tokens])
    assert stops == [None]
    assert guard.item_counts.tolist() == [10]


def test_instance_cap():
    tokens = [BOX_START]
    for i in range(10):
        tokens += [*b(i, 0, i + 1, 1), COMMA]
    stops, _ = run([tokens], max_instances=4)
    assert stops == [1 + 4 * 5 - 1]


def test_same_box_in_consecutive_groups_counts_as_repeat():
    group = [OTHER, BOX_START, *b(7, 7, 9, 9), BOX_END, COMMA]
    stops, _ = run([group * 4])
    assert stops == [2 * len(group) + 6]  # the <|box_end|> of the third group


def test_keypoint_json_counts_instance_boxes_not_joints():
    # "bbox": " <1> <2> <3> <4> ", then 17 joints " <x> <y> " per instance
    instance = [OTHER, SPACE, *[t for v in (1, 2, 3, 4) for t in (*b(v), SPACE)], OTHER]
    for joint in range(17):
        instance += [OTHER, SPACE, *b(joint), SPACE, *b(joint + 1), SPACE, OTHER]
    stops, guard = run([instance], max_instances=2)
    assert stops == [None]
    assert guard.item_counts.tolist() == [1]


def test_rows_are_independent():
    looping = [BOX_START, *[*b(1, 2, 3, 4), COMMA] * 4]
    fine = [BOX_START, *[*b(1, 2, 3, 4), COMMA], *[*b(5, 6, 7, 8), COMMA]] + [
        OTHER
    ] * 10
    stops, guard = run([looping, fine])
    assert stops[0] is not None and stops[1] is None
    assert guard.triggered.tolist() == [True, False]


def test_rejects_bad_limits():
    with pytest.raises(ValueError, match="max_repeats"):
        RunawayGuard(
            GRAMMAR, max_repeats=1, max_instances=5, batch_size=1, device="cpu"
        )


token = st.sampled_from([BOX_START, BOX_END, SPACE, COMMA, OTHER, *b(0, 1, 2, 999)])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(token, min_size=30, max_size=30), min_size=1, max_size=3),
    st.integers(2, 4),
    st.integers(1, 6),
)
def test_matches_the_plain_reference(rows, max_repeats, max_instances):
    stops, _ = run(rows, max_repeats=max_repeats, max_instances=max_instances)
    expected = [
        reference(r, max_repeats=max_repeats, max_instances=max_instances) for r in rows
    ]
    assert stops == expected


def test_grammar_tokens_from_the_tiny_tokenizer(tiny_model_dir):
    from worker.engines.transformers_loading import load_processor

    tokenizer = load_processor(str(tiny_model_dir)).tokenizer
    grammar = GrammarTokens.from_tokenizer(tokenizer, vocab_size=len(tokenizer) + 64)
    assert grammar.first_bin == tokenizer.convert_tokens_to_ids("<0>")
    assert grammar.box_end == tokenizer.convert_tokens_to_ids("<|box_end|>")
    assert grammar.vocab_size == len(tokenizer) + 64
    space = tokenizer(" ", add_special_tokens=False)["input_ids"]
    assert space and set(space) <= grammar.whitespace
    comma = tokenizer(",", add_special_tokens=False)["input_ids"]
    assert not set(comma) & grammar.whitespace
