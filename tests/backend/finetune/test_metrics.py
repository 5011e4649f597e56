"""Held-out figures of a fine-tune: mean labelled IoU, the evaluate report's
summary, and how much of the base model's own answers a run keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from backend.evaluate.pairs import ImagePair
from backend.finetune.metrics import heldout_figures, mean_labelled_iou
from common.finetune_data import Record
from converters.prediction import Prediction, RegionType, predictions_to_dicts

SQUARE = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))


def box(label, x0, y0, x1, y1):
    return Prediction(RegionType.BOX, label, (x0, y0, x1, y1))


def _pair(truth, found):
    return ImagePair(
        key="1", width=100, height=100, ground_truth=truth, predictions=found
    )


@dataclass
class _Answer:
    """What ``worker.training.finetune_predict.Answer`` gives the metrics."""

    regions: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


def _record(task_id, *regions):
    return Record(
        prompt="Detect car.", answer="", image="images/x.jpg", task="detection",
        width=100, height=100, regions=tuple(predictions_to_dicts(list(regions))),
        task_id=task_id,
    )  # fmt: skip


def test_a_box_under_another_label_scores_zero():
    truth = [box("car", 0, 0, 10, 10)]
    assert mean_labelled_iou([_pair(truth, [box("dog", 0, 0, 10, 10)])]) == {
        "car": {"mean_iou": 0.0, "regions": 1}
    }
    assert mean_labelled_iou([_pair(truth, [box("car", 0, 0, 10, 10)])]) == {
        "car": {"mean_iou": 1.0, "regions": 1}
    }


def test_each_truth_region_takes_its_best_same_label_match_missing_ones_zero():
    truth = [box("car", 0, 0, 10, 10), box("car", 50, 50, 60, 60)]
    found = [box("car", 0, 0, 10, 20), box("car", 0, 0, 10, 10)]  # both on the first
    (only,) = mean_labelled_iou([_pair(truth, found)]).values()
    assert only == {"mean_iou": pytest.approx(0.5), "regions": 2}


def test_polygons_and_keypoint_instances_are_compared_by_their_box():
    polygon = Prediction(RegionType.POLYGON, "roof", SQUARE)
    half = Prediction(
        RegionType.POLYGON, "roof", ((0.0, 0.0), (10.0, 0.0), (10.0, 5.0))
    )
    assert mean_labelled_iou([_pair([polygon], [box("roof", 0, 0, 10, 10)])]) == {
        "roof": {"mean_iou": 1.0, "regions": 1}
    }
    assert mean_labelled_iou([_pair([polygon], [half])])["roof"][
        "mean_iou"
    ] == pytest.approx(0.5)


def test_points_have_no_area_and_are_left_out():
    point = Prediction(RegionType.POINT, "eye", (3.0, 4.0))
    assert mean_labelled_iou([_pair([point], [point])]) == {}


def test_labels_are_averaged_over_every_image():
    pairs = [
        _pair([box("car", 0, 0, 10, 10)], [box("car", 0, 0, 10, 10)]),
        _pair([box("car", 0, 0, 10, 10)], []),
        _pair([box("dog", 0, 0, 10, 10)], [box("dog", 0, 0, 10, 5)]),
    ]
    assert mean_labelled_iou(pairs) == {
        "car": {"mean_iou": pytest.approx(0.5), "regions": 2},
        "dog": {"mean_iou": pytest.approx(0.5), "regions": 1},
    }


def test_heldout_figures_of_an_empty_set():
    assert heldout_figures([], []) == {"examples": 0}


def test_heldout_figures_weigh_labels_by_their_regions():
    records = [
        _record(1, box("car", 0, 0, 10, 10), box("car", 20, 20, 30, 30)),
        _record(2, box("dog", 0, 0, 10, 10)),
        _record(3),  # nothing there: counts as an example, not as a region
    ]
    answers = [
        _Answer(predictions_to_dicts([box("car", 0, 0, 10, 10)])),
        _Answer(predictions_to_dicts([box("dog", 0, 0, 10, 10)])),
        _Answer([], error="unreadable answer: no box"),
    ]
    figures = heldout_figures(records, answers)
    assert figures["examples"] == 3
    assert figures["mean_iou"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)
    assert figures["labels"] == {
        "car": {"mean_iou": 0.5, "regions": 2},
        "dog": {"mean_iou": 1.0, "regions": 1},
    }
    assert figures["unreadable_answers"] == 1
    assert set(figures) >= {"ap", "ap50", "ar"}
    assert 0.0 <= figures["ap50"] <= 1.0


def test_heldout_figures_without_regions_have_no_mean_iou():
    figures = heldout_figures([_record(1)], [_Answer()])
    assert figures["examples"] == 1 and figures["mean_iou"] is None


def test_heldout_figures_need_one_answer_per_record():
    with pytest.raises(ValueError):
        heldout_figures([_record(1), _record(2)], [_Answer()])
