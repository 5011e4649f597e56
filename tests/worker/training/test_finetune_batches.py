"""Which examples make each step's batch: a pure function of the step."""

from __future__ import annotations

from collections import Counter

import pytest

from worker.training import finetune_batches
from worker.training.finetune_batches import REPLAY_POOL, TRAIN_POOL, BatchPlan


def _indices(plan: BatchPlan, steps: range, pool: str) -> list[int]:
    return [i for step in steps for p, i in plan.batch(step) if p == pool]


def test_a_batch_depends_on_the_step_alone():
    """``--resume`` at step s gets the batches an uninterrupted run had: a
    fresh plan (and an emptied permutation cache) gives the same ones, in any
    order of asking."""
    plan = BatchPlan(train_size=13, replay_size=7, batch_size=4, replay_share=0.5)
    first = [plan.batch(step) for step in range(40)]
    finetune_batches._PERMUTATIONS.clear()
    again = BatchPlan(13, 7, 4, 0.5)
    assert [again.batch(step) for step in reversed(range(40))][::-1] == first
    assert again.batch(25) == first[25]


def test_the_seed_changes_the_order_not_the_mix():
    a, b = BatchPlan(10, 10, 4, 0.5, seed=0), BatchPlan(10, 10, 4, 0.5, seed=1)
    assert [a.batch(s) for s in range(5)] != [b.batch(s) for s in range(5)]
    steps = range(5)  # 10 positions of each pool: one pass each
    for pool in (TRAIN_POOL, REPLAY_POOL):
        assert sorted(_indices(a, steps, pool)) == sorted(_indices(b, steps, pool))


@pytest.mark.parametrize(("train_size", "per_batch"), [(12, 4), (10, 4), (5, 7)])
def test_every_training_example_is_seen_once_per_pass(train_size, per_batch):
    plan = BatchPlan(train_size, 0, per_batch, 0.5)
    stream = _indices(plan, range(3 * train_size), TRAIN_POOL)
    passes = [stream[i : i + train_size] for i in range(0, len(stream), train_size)]
    for one in passes[:-1]:
        assert sorted(one) == list(range(train_size))
    assert passes[0] != passes[1]  # each pass is reshuffled


def test_replay_is_read_in_passes_of_its_own():
    plan = BatchPlan(train_size=100, replay_size=6, batch_size=8, replay_share=0.25)
    stream = _indices(plan, range(6), REPLAY_POOL)  # 2 per step: 12, two passes
    assert len(stream) == 12
    assert sorted(stream[:6]) == sorted(stream[6:]) == list(range(6))


@pytest.mark.parametrize(
    ("batch_size", "share", "replayed"),
    [
        (8, 0.5, 4),
        (8, 0.3, 2),  # 2.4 rounds down
        (8, 0.01, 1),  # a share above 0 replays at least one
        (4, 0.9, 3),  # 3.6 rounds to 4, but one new example is always left
        (2, 0.5, 1),
        (1, 0.5, 0),  # one example per step: it is a new one
        (8, 0.0, 0),
    ],
)
def test_replay_share_rounding(batch_size, share, replayed):
    plan = BatchPlan(20, 20, batch_size, share)
    assert (plan.replay_per_batch, plan.train_per_batch) == (
        replayed,
        batch_size - replayed,
    )
    pools = Counter(pool for pool, _ in plan.batch(3))
    assert pools == Counter({TRAIN_POOL: batch_size - replayed} | (
        {REPLAY_POOL: replayed} if replayed else {}
    ))  # fmt: skip


def test_without_a_replay_pool_every_slot_is_new():
    plan = BatchPlan(20, 0, 8, 0.5)
    assert plan.replay_per_batch == 0
    assert all(pool == TRAIN_POOL for pool, _ in plan.batch(0))
    assert plan.steps_per_epoch() == 3  # 20 / 8, rounded up


def test_batch_size_one_walks_the_examples_one_by_one():
    plan = BatchPlan(3, 5, 1, 0.5)
    batches = [plan.batch(step) for step in range(3)]
    assert all(len(b) == 1 and b[0][0] == TRAIN_POOL for b in batches)
    assert sorted(b[0][1] for b in batches) == [0, 1, 2]
    assert plan.steps_per_epoch() == 3


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"train_size": 0}, "no training examples"),
        ({"batch_size": 0}, "batch size must be >= 1"),
        ({"replay_share": 1.0}, r"replay share must be in \[0, 1\)"),
        ({"replay_share": -0.1}, r"replay share must be in \[0, 1\)"),
    ],
)
def test_bad_plans_are_refused(kwargs, says):
    args = {"train_size": 4, "replay_size": 4, "batch_size": 2, "replay_share": 0.5}
    with pytest.raises(ValueError, match=says):
        BatchPlan(**(args | kwargs))
