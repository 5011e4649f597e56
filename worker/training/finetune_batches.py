"""Which examples make each step's batch: new examples mixed with replay.

A batch holds ``batch_size`` examples; with a replay pool, ``replay_share`` of
them (rounded, at least one new example left) are replayed earlier behaviour,
the rest are the run's new examples. Each pool is read in a fresh seeded
permutation per pass, so every example is seen once per pass.

The plan is a pure function of the step: ``--resume`` at step ``s`` gets the
very batches an uninterrupted run would have had.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

REPLAY_POOL = "replay"
TRAIN_POOL = "train"


@dataclass(frozen=True)
class BatchPlan:
    """Indices into the train and replay pools for every step."""

    train_size: int
    replay_size: int
    batch_size: int
    replay_share: float
    seed: int = 0

    def __post_init__(self) -> None:
        if self.train_size < 1:
            raise ValueError("no training examples")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.replay_share < 1.0:
            raise ValueError(f"replay share must be in [0, 1), got {self.replay_share}")

    @property
    def replay_per_batch(self) -> int:
        if self.replay_size == 0 or self.replay_share == 0:
            return 0
        wanted = max(1, round(self.batch_size * self.replay_share))
        return min(wanted, self.batch_size - 1) if self.batch_size > 1 else 0

    @property
    def train_per_batch(self) -> int:
        return self.batch_size - self.replay_per_batch

    def steps_per_epoch(self) -> int:
        """Steps for one pass over the new examples (rounded up)."""
        return -(-self.train_size // self.train_per_batch)

    def batch(self, step: int) -> list[tuple[str, int]]:
        """``[(pool, index), ...]`` of the batch at ``step`` (0-based)."""
        items = [
            (TRAIN_POOL, i)
            for i in _positions(step, self.train_per_batch, self.train_size, self.seed)
        ]
        if self.replay_per_batch:
            items += [
                (REPLAY_POOL, i)
                for i in _positions(
                    step, self.replay_per_batch, self.replay_size, self.seed + 1
                )
            ]
        return items


def _positions(step: int, per_batch: int, size: int, seed: int) -> list[int]:
    """The ``per_batch`` indices of ``step`` in a stream of per-pass permutations."""
    out = []
    for position in range(step * per_batch, (step + 1) * per_batch):
        epoch, offset = divmod(position, size)
        out.append(_permutation(size, seed, epoch)[offset])
    return out


_PERMUTATIONS: dict[tuple[int, int, int], list[int]] = {}
_CACHE_LIMIT = 8
"""Permutations kept: a run reads at most two passes of each pool at a time."""


def _permutation(size: int, seed: int, epoch: int) -> list[int]:
    key = (size, seed, epoch)
    found = _PERMUTATIONS.get(key)
    if found is None:
        found = list(range(size))
        random.Random(f"{seed}:{epoch}").shuffle(found)
        if len(_PERMUTATIONS) >= _CACHE_LIMIT:
            _PERMUTATIONS.pop(next(iter(_PERMUTATIONS)))
        _PERMUTATIONS[key] = found
    return found
