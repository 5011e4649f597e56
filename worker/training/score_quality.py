"""Do scores rank? The tiny model on synthetic images where half the phrases
asked for are absent.

Each held-out sample (``worker.training.synthetic.held_out_samples``) is one shape and
its phrase; every second question is about an absent phrase, in one of two
ways (``Absent``): ``EMPTY`` asks for the phrase on an image without any shape
(a background alone, what the tiny model is trained to answer ``None``);
``OTHER`` asks the sample's image for a phrase of another colour (the tiny
model cannot bind phrases to shapes, so it draws the one shape anyway). A box
is *right* when its phrase is present and its IoU with the shape is at least
``RIGHT_IOU``; every other box (on an absent phrase, or a poor one) is
*wrong*. An absent question is answered *None* when the answer parses to no
prediction and no warning (the grammar's ``<|box_start|>None<|box_end|>``).
:func:`score_quality` runs the real pipeline (prompt, generate, parse, score)
and reports the ROC AUC of the scores of right against wrong boxes (the chance
that a right box outscores a wrong one), the false-box rate (absent questions
answered with a box) and the miss rate (present questions answered ``None``).
Kept apart from ``worker.training.synthetic``: the test model's cache is keyed by the
files that train it, and evaluating does not change the model.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from PIL import Image

from converters.tasks import Task

RIGHT_IOU = 0.5
"""IoU with the shape at which a box counts as right (COCO's AP50 bar)."""
ABSENT_SHARE = 2
"""Every second question asks for an absent phrase (half of them)."""
QUALITY_SEED_OFFSET = 7_000_001
"""The empty images' generator: seeded apart from the held-out shapes'."""
MAX_NEW_TOKENS = 64
"""Enough for a few boxes on one 112x112 image; bounds a looping model."""


class Absent(str, Enum):
    """How a question is made about an absent phrase."""

    EMPTY = "empty"
    OTHER = "other"


@dataclass
class ScoreQuality:
    """What :func:`score_quality` measured; ``auc`` is NaN without both kinds."""

    auc: float
    false_box_rate: float
    none_rate: float
    miss_rate: float
    right: int
    wrong: int
    mean_right_score: float
    mean_wrong_score: float

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def roc_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a positive outscores a negative (ties count half);
    NaN when either list is empty. O(n log n)."""
    if not positives or not negatives:
        return float("nan")
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    rank_sum, index = 0.0, 0
    while index < len(ranked):
        end = index
        while end < len(ranked) and ranked[end][0] == ranked[index][0]:
            end += 1
        mean_rank = (index + 1 + end) / 2  # ranks index+1 .. end share the tie
        rank_sum += mean_rank * sum(label for _, label in ranked[index:end])
        index = end
    n_pos, n_neg = len(positives), len(negatives)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def questions(
    samples, seed: int = 0, absent: Absent = Absent.EMPTY
) -> list[tuple[Image.Image, str, bool]]:
    """``(image, phrase asked, present)`` per sample: its own image and phrase,
    or (every ``ABSENT_SHARE``-th, starting with the second) an absent phrase
    made as ``absent`` says."""
    from worker.training.synthetic import PHRASES, render_background

    rng = random.Random(seed + QUALITY_SEED_OFFSET)
    asked = []
    for i, sample in enumerate(samples):
        if not i % ABSENT_SHARE:
            asked.append((sample.image, sample.phrase, True))
        elif absent is Absent.EMPTY:
            image = render_background(rng, sample.image.width)
            asked.append((image, sample.phrase, False))
        else:
            colour = sample.phrase.split()[0]
            others = [p for p in PHRASES if p.split()[0] != colour]
            asked.append((sample.image, rng.choice(others), False))
    return asked


def score_quality(
    engine, *, count: int = 200, seed: int = 0, absent: Absent = Absent.EMPTY
) -> ScoreQuality:
    """Scores of right and wrong boxes of ``engine`` on ``count`` held-out
    images (detection), half of the questions about absent phrases."""
    from common.jobspec import ModelCall
    from worker.engines.registry import base_sampling
    from worker.pipeline import run_batch
    from worker.training.synthetic import box_iou, held_out_samples

    samples = held_out_samples(count, seed=seed)
    asked = questions(samples, seed, Absent(absent))
    calls = [
        ModelCall(
            task=Task.DETECTION,
            categories=[phrase],
            generation={"max_new_tokens": MAX_NEW_TOKENS},
        )
        for _, phrase, _ in asked
    ]
    results = run_batch(
        engine,
        list(zip([image for image, _, _ in asked], calls)),
        sampling=base_sampling(),
    )
    right, wrong = [], []
    false_boxes = nones = misses = absent_count = 0
    for sample, (_, phrase, present), result in zip(
        samples, asked, results, strict=True
    ):
        boxes = [p for p in result.predictions if p.score is not None]
        if not present:
            absent_count += 1
            false_boxes += bool(boxes)
            nones += not result.predictions and not result.warnings
        misses += present and not boxes
        for box in boxes:
            good = (
                present
                and box.label == phrase
                and box_iou(box.coords, sample.box) >= RIGHT_IOU
            )
            (right if good else wrong).append(box.score)
    present_count = count - absent_count
    return ScoreQuality(
        auc=roc_auc(right, wrong),
        false_box_rate=false_boxes / absent_count if absent_count else 0.0,
        none_rate=nones / absent_count if absent_count else 0.0,
        miss_rate=misses / present_count if present_count else 0.0,
        right=len(right),
        wrong=len(wrong),
        mean_right_score=sum(right) / len(right) if right else float("nan"),
        mean_wrong_score=sum(wrong) / len(wrong) if wrong else float("nan"),
    )
