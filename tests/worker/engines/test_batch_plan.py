"""The batch-size rule and the batch planner (pure functions)."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.engines.batch_plan import (
    MAX_BATCH_CAP,
    MEMORY_SAFETY,
    RESERVE_BYTES,
    ModelFootprint,
    batch_size_for_memory,
    plan_batches,
    visual_tokens,
)

GIB = 2**30
QWEN25_VL_3B = {
    "text_config": {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
    },
    "vision_config": {
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "spatial_merge_size": 2,
    },
}


def test_footprint_of_the_3b_model_in_bf16():
    footprint = ModelFootprint.from_config(QWEN25_VL_3B, dtype_bytes=2)
    # K and V, 36 layers, 2 KV heads of 128: 36 KiB per token
    assert footprint.kv_bytes_per_token == 2 * 36 * 2 * 128 * 2 == 36_864
    assert footprint.prefill_bytes_per_token == (4 * 2048 + 3 * 11008) * 2
    assert footprint.vision_bytes_per_visual_token == 4 * (4 * 1280 + 3 * 3420) * 2
    # a 640x480 image: 391 visual tokens, ~450 prompt tokens, 128 out
    one = footprint.request_bytes(450, 391, 128)
    raw = 36_864 * 578 + 82_432 * 450 + 123_040 * 391
    assert one == pytest.approx(raw * MEMORY_SAFETY, abs=1)


def test_footprint_reads_a_flat_4x_config():
    flat = {**QWEN25_VL_3B["text_config"], "vision_config": {}}
    footprint = ModelFootprint.from_config(flat, dtype_bytes=4)
    assert footprint.kv_bytes_per_token == 2 * 36 * 2 * 128 * 4
    assert footprint.vision_bytes_per_visual_token == 0


def test_visual_tokens_follow_smart_resize():
    assert visual_tokens(640, 480) == 17 * 23 == 391
    assert visual_tokens(1280, 960) == 34 * 46
    assert visual_tokens(10_000, 10_000) <= 2560  # max_pixels
    assert visual_tokens(640, 480, max_pixels=100 * 28 * 28) <= 100


@pytest.mark.parametrize(
    ("free_gib", "request_mib", "expected"),
    [
        (70, 100, MAX_BATCH_CAP),  # memory for far more: the cap
        (10, 512, 16),  # (10 - 2 GiB reserve) / 0.5 GiB
        (2.1, 512, 1),  # under the reserve: one at a time still runs
        (0, 512, 1),
    ],
)
def test_batch_size_for_memory(free_gib, request_mib, expected):
    assert batch_size_for_memory(int(free_gib * GIB), request_mib * 2**20) == expected


def test_batch_size_for_memory_rejects_nonsense():
    with pytest.raises(ValueError, match="request_bytes"):
        batch_size_for_memory(GIB, 0)
    with pytest.raises(ValueError, match="cap"):
        batch_size_for_memory(GIB, 1, cap=0)
    assert batch_size_for_memory(RESERVE_BYTES + 10, 1, cap=7) == 7


def test_alike_lengths_go_together_in_the_given_order():
    lengths = [1600, 450, 455, 1610, 450]
    assert plan_batches(lengths, max_batch_size=8, max_padding=0.2) == [
        [0, 3],
        [1, 2, 4],
    ]
    # within the default cap (half) they share one call: fewer decoding steps
    assert plan_batches(lengths, max_batch_size=8) == [[0, 1, 2, 3, 4]]
    assert plan_batches([1600, 100, 100, 1610, 100], max_batch_size=8) == [
        [0, 1, 2, 3],  # 47% padding; a third 100 would make it 56%
        [4],
    ]
    # half short, half long: 37.5% padding in one batch, within the cap
    assert plan_batches([80, 320] * 4, max_batch_size=8) == [list(range(8))]
    everything = [[0, 1, 2, 3, 4]]  # one call, in the given order
    assert plan_batches(lengths, max_batch_size=8, max_padding=1) == everything


def test_batches_close_at_the_size_cap_and_at_memory():
    assert plan_batches([10] * 5, max_batch_size=2) == [[0, 1], [2, 3], [4]]
    fits = lambda rows, longest: rows * longest <= 25  # noqa: E731
    assert plan_batches([10] * 5, max_batch_size=8, fits=fits) == [
        [0, 1],
        [2, 3],
        [4],
    ]
    # a request that fits nowhere still runs, alone
    assert plan_batches([100, 10], max_batch_size=8, fits=fits) == [[0], [1]]


def test_planner_rejects_nonsense():
    with pytest.raises(ValueError, match="max_batch_size"):
        plan_batches([1], max_batch_size=0)
    with pytest.raises(ValueError, match="max_padding"):
        plan_batches([1], max_batch_size=1, max_padding=1.5)
    assert plan_batches([], max_batch_size=4) == []


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.integers(1, 3000), max_size=40),
    st.integers(1, 12),
    st.sampled_from([0.0, 0.2, 0.5, 1.0]),
)
def test_every_request_once_within_the_limits(lengths, max_batch_size, max_padding):
    batches = plan_batches(
        lengths, max_batch_size=max_batch_size, max_padding=max_padding
    )
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= max_batch_size and batch == sorted(batch)
        if len(batch) > 1:
            rows = [lengths[i] for i in batch]
            padded = len(rows) * max(rows)
            assert padded - sum(rows) <= max_padding * padded + 1e-9
    json.dumps(batches)  # plain lists of ints
