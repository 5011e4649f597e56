import pytest

from backend.evaluate.matching import match_image
from backend.evaluate.thresholds import label_thresholds
from tests.backend.evaluate.helpers import box, pair


def test_precision_recall_and_f1_at_each_score_and_the_best_f1():
    gt = [box("cat", 0, 0, 10, 10), box("cat", 20, 0, 30, 10)]
    pred = [
        box("cat", 0, 0, 10, 10, score=0.9),  # exact
        box("cat", 50, 50, 60, 60, score=0.8),  # nothing there
        box("cat", 22, 0, 32, 10, score=0.3),  # shifted 2 px: IoU 2/3, a match
    ]
    report = label_thresholds([match_image(pair(gt, pred))])
    curve = report["cat"].curve
    assert [p.threshold for p in curve] == [0.9, 0.8, 0.3]
    assert [(p.true_positives, p.false_positives, p.misses) for p in curve] == [
        (1, 0, 1),
        (1, 1, 1),
        (2, 1, 0),
    ]
    assert [p.precision for p in curve] == pytest.approx([1, 1 / 2, 2 / 3])
    assert [p.recall for p in curve] == pytest.approx([1 / 2, 1 / 2, 1])
    assert [p.f1 for p in curve] == pytest.approx([2 / 3, 1 / 2, 4 / 5])
    assert report["cat"].recommended.threshold == 0.3


def test_a_tie_in_f1_recommends_the_higher_threshold():
    gt = [box("dog", 0, 0, 10, 10), box("dog", 20, 0, 30, 10)]
    pred = [
        box("dog", 0, 0, 10, 10, score=0.9),  # F1 at 0.9: 2/(2+0+1) = 2/3
        box("dog", 50, 50, 60, 60, score=0.6),
        box("dog", 70, 70, 80, 80, score=0.6),  # one point for both 0.6s
        box("dog", 20, 0, 30, 10, score=0.4),  # F1 at 0.4: 4/(4+2+0) = 2/3
    ]
    report = label_thresholds([match_image(pair(gt, pred))])["dog"]
    assert [p.threshold for p in report.curve] == [0.9, 0.6, 0.4]
    assert report.curve[0].f1 == report.curve[2].f1 == pytest.approx(2 / 3)
    assert report.recommended.threshold == 0.9


def test_a_label_the_model_never_gets_right_has_no_recommendation():
    fox = box("fox", 50, 50, 60, 60, score=0.7)
    matches = [match_image(pair([box("cat", 0, 0, 10, 10)], [fox]))]
    report = label_thresholds(matches)
    assert report["fox"].recommended is None and report["fox"].ground_truth == 0
    assert report["cat"].curve == [] and report["cat"].ground_truth == 1
