import pytest

from backend.evaluate.report import CURVE_POINTS, build_report
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, pair, point


def test_perfect_predictions_report_ap_1_a_threshold_and_a_diagonal():
    gt = [box("cat", 0, 0, 10, 10), box("dog", 20, 20, 40, 40)]
    pred = [g.with_(score=0.8) for g in gt]
    report = build_report([pair(gt, pred)])
    cat = report["labels"]["cat"]
    assert (cat["ap"], cat["ap50"], cat["ar"]) == pytest.approx((1, 1, 1))
    assert cat["recommended_threshold"] == 0.8
    assert cat["curve"] == [
        {"threshold": 0.8, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    ]
    assert cat["only_in"] is None
    assert report["confusion"] == {
        "axis": ["cat", "dog", "background"],
        "rows": [[1, 0, 0], [0, 1, 0], [0, 0, 0]],
    }
    assert report["overall"]["effort"]["unchanged_share"] == 1.0


def test_a_mislabelled_box_is_a_wrong_label_and_sides_are_flagged():
    report = build_report(
        [pair([box("cat", 0, 0, 10, 10)], [box("fox", 0, 0, 10, 10, score=0.9)])]
    )
    assert report["labels"]["cat"]["only_in"] == "ground_truth"
    assert report["labels"]["fox"]["only_in"] == "predictions"
    assert report["labels"]["fox"]["wrong_labels"] == 1
    assert report["labels"]["cat"]["ap"] == 0.0
    assert report["labels"]["fox"]["ap"] is None  # nothing to find
    axis, rows = report["confusion"]["axis"], report["confusion"]["rows"]
    assert rows[axis.index("cat")][axis.index("fox")] == 1


def test_a_long_curve_is_thinned_but_keeps_its_ends_and_the_recommendation():
    # 300 images, one cat each; predictions at 300 distinct scores, the
    # right box only above 0.5 (so the best F1 sits at an arbitrary score)
    pairs = []
    for n in range(300):
        score = round(0.001 + n / 301, 6)
        where = (0, 0, 10, 10) if score > 0.5 else (50, 50, 60, 60)
        pairs.append(
            pair([box("cat", 0, 0, 10, 10)], [box("cat", *where, score=score)], f"{n}")
        )
    report = build_report(pairs)
    curve = report["labels"]["cat"]["curve"]
    thresholds = [p["threshold"] for p in curve]
    assert len(curve) <= CURVE_POINTS + 1
    assert thresholds == sorted(thresholds, reverse=True)
    assert thresholds[0] == pytest.approx(0.001 + 299 / 301)
    assert thresholds[-1] == 0.001
    recommended = report["labels"]["cat"]["recommended_threshold"]
    assert recommended in thresholds
    assert recommended == min(t for t in thresholds if t > 0.5)


def test_polygons_and_keypoints_add_their_sections():
    leaf = Prediction(RegionType.POLYGON, "leaf", [(10, 10), (60, 10), (10, 60)])
    person = Prediction(
        RegionType.KEYPOINT,
        "person",
        (10, 10, 60, 90),
        keypoints={"head": (35, 15), "left_hand": (12, 50), "right_hand": (58, 50)},
    )
    moved = person.with_(score=0.9, keypoints={**person.keypoints, "head": (35, 40)})
    report = build_report([pair([leaf, person], [leaf.with_(score=0.9), moved])])
    segm = report["labels"]["leaf"]["segm"]
    assert segm["ap"] == pytest.approx(1.0) and segm["mean_iou"] == pytest.approx(1.0)
    keypoints = report["labels"]["person"]["keypoints"]
    assert keypoints["pck"] == pytest.approx(2 / 3)  # head 25 px off, limit 8
    assert keypoints["joints"]["head"] == 0.0
    assert report["overall"]["keypoints"]["instances"] == 1
    assert "ocr" not in report["overall"] and "point_hit_rate" not in report["overall"]


def test_a_generator_is_read_once_and_streamed():
    def images():
        for n in range(3):
            yield pair(
                [box("cat", 0, 0, 10, 10)], [box("cat", 0, 0, 10, 10, 0.7)], f"{n}"
            )

    report = build_report(images())
    assert report["overall"]["images"] == 3
    assert report["overall"]["ap"] == pytest.approx(1.0)


def test_a_label_only_pointed_at_is_scored_by_its_points_alone():
    gt = [
        box("cat", 0, 0, 10, 10),
        box("cat", 20, 20, 30, 30),
        box("dog", 50, 50, 60, 60),
    ]
    pred = [point("cat", 5, 5, 0.9), point("cat", 90, 90, 0.8)]
    pred.append(box("dog", 50, 50, 60, 60, score=0.9))
    report = build_report([pair(gt, pred)])
    cat = report["labels"]["cat"]
    assert cat["points_only"] is True
    assert cat["point_hit_rate"] == 0.5 and cat["false_points"] == 1
    assert cat["ap"] is None and cat["at_threshold"] is None and cat["misses"] is None
    overall = report["overall"]
    assert overall["false_points"] == 1
    # the overall box figures are the dog's alone: the cats were pointed at
    assert overall["ap"] == pytest.approx(1.0) and overall["misses"] == 0
    assert overall["at_threshold"]["recall"] == 1.0
    assert overall["effort"]["added_share"] == 0.0


def test_predictions_without_scores_recommend_no_threshold():
    """Unscored boxes all rank equal: no threshold can be read from them (a
    recommendation of 1.0 would cut every scored region later)."""
    gt = [box("cat", 0, 0, 10, 10)]
    pred = [box("cat", 0, 0, 10, 10), box("cat", 50, 50, 60, 60)]
    cat = build_report([pair(gt, pred)])["labels"]["cat"]
    assert cat["unscored"] is True and cat["recommended_threshold"] is None
    # with nothing to cut, the counts are those of every prediction kept
    assert cat["at_threshold"]["true_positives"] == 1
    assert cat["at_threshold"]["false_positives"] == 1
    assert cat["at_threshold"]["precision"] == 0.5


def test_annotators_placing_different_joints_of_a_custom_set():
    """A custom keypoint set where each instance has some of the joints:
    the category takes all of them, and OKS AP is computed."""

    def paw(x, y, joints, score=None):
        named = {"nose": (x, y), "left_paw": (x - 5, y + 20), "tail": (x + 20, y)}
        return Prediction(
            RegionType.KEYPOINT,
            "dog",
            (x - 10, y - 5, x + 25, y + 30),
            score=score,
            keypoints={j: named[j] for j in joints},
        )

    first = paw(20, 20, ["nose", "tail"])
    second = paw(60, 60, ["nose", "left_paw"])
    pairs = [
        pair([first], [first.with_(score=0.9)], "1"),
        pair([second], [second.with_(score=0.9)], "2"),
    ]
    report = build_report(pairs)
    dog = report["labels"]["dog"]["keypoints"]
    assert dog["ap"] == pytest.approx(1.0) and dog["pck"] == 1.0
