"""The ranking check's pieces: ROC AUC and the half-absent questions."""

from __future__ import annotations

import math

import pytest

from worker.training.score_quality import Absent, questions, roc_auc
from worker.training.synthetic import PHRASES, held_out_samples


def test_roc_auc_is_the_chance_a_positive_outscores_a_negative():
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1], [0.9]) == 0.0
    assert roc_auc([0.5, 0.5], [0.5]) == 0.5  # ties count half
    # 3 x 2 pairs: (0.9 > 0.4, 0.9 > 0.6, 0.5 > 0.4, 0.5 < 0.6, 0.3 < both)
    assert roc_auc([0.9, 0.5, 0.3], [0.4, 0.6]) == pytest.approx(3 / 6)
    assert math.isnan(roc_auc([], [0.1])) and math.isnan(roc_auc([0.1], []))


@pytest.mark.parametrize("absent", list(Absent))
def test_every_second_question_is_about_an_absent_phrase(absent):
    samples = held_out_samples(20)
    asked = questions(samples, absent=absent)
    again = questions(samples, absent=absent)
    for i, (sample, (image, phrase, present)) in enumerate(
        zip(samples, asked, strict=True)
    ):
        assert present == (i % 2 == 0)
        assert phrase in PHRASES and image.size == sample.image.size
        if present:
            assert (image, phrase) == (sample.image, sample.phrase)
        elif absent is Absent.EMPTY:  # one grey, the same for the same seed
            assert phrase == sample.phrase and len(image.getcolors()) == 1
            assert image.tobytes() == again[i][0].tobytes()
        else:  # the sample's image, asked for another colour
            assert image is sample.image and phrase == again[i][1]
            assert phrase.split()[0] != sample.phrase.split()[0]
