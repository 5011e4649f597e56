import pytest

from backend.evaluate.report import CURVE_POINTS, build_report
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, pair


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
