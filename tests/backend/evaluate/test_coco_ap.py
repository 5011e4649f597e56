import contextlib
import io
import json

import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backend.evaluate.coco_ap import CocoAccumulator, coco_ap
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, pair

GT = {  # image 1: two cats, a dog; image 2: a dog
    1: [("cat", [0, 0, 20, 20]), ("cat", [40, 40, 30, 20]), ("dog", [10, 60, 25, 25])],
    2: [("dog", [5, 5, 50, 40])],
}
DT = {  # xywh, score: a good cat, a shifted cat, a false dog, a loose dog
    1: [
        ("cat", [0, 0, 20, 20], 0.95),
        ("cat", [44, 40, 30, 20], 0.7),
        ("dog", [70, 0, 10, 10], 0.6),
        ("dog", [12, 62, 25, 25], 0.5),
    ],
    2: [("dog", [5, 5, 40, 40], 0.9)],
}
LABELS = ["cat", "dog"]


def _pairs(gt, dt):
    def boxes(items, scored):
        return [
            box(label, x, y, x + w, y + h, score=rest[0] if scored else None)
            for label, (x, y, w, h), *rest in items
        ]

    return [
        pair(boxes(gt.get(i, []), False), boxes(dt.get(i, []), True), f"{i}.jpg")
        for i in sorted({*gt, *dt})
    ]


def _direct(tmp_path, cat_ids):
    """pycocotools alone, on JSON files written by hand from GT and DT."""
    dataset = {
        "images": [
            {"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100}
            for i in (1, 2)
        ],
        "categories": [{"id": k, "name": n} for k, n in enumerate(LABELS, 1)],
        "annotations": [
            {
                "id": n,
                "image_id": image,
                "category_id": LABELS.index(label) + 1,
                "bbox": xywh,
                "area": xywh[2] * xywh[3],
                "iscrowd": 0,
            }
            for n, (image, label, xywh) in enumerate(
                ((i, lab, b) for i, items in GT.items() for lab, b in items), 1
            )
        ],
    }
    results = [
        {"image_id": i, "category_id": LABELS.index(lab) + 1, "bbox": b, "score": s}
        for i, items in DT.items()
        for lab, b, s in items
    ]
    (tmp_path / "gt.json").write_text(json.dumps(dataset))
    (tmp_path / "dt.json").write_text(json.dumps(results))
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(gt, gt.loadRes(str(tmp_path / "dt.json")), "bbox")
        evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def test_perfect_boxes_give_ap_1():
    perfect = {i: [(lab, b, 1.0) for lab, b in items] for i, items in GT.items()}
    report = coco_ap(_pairs(GT, perfect))
    assert (report.overall.ap, report.overall.ap50, report.overall.ar) == (1, 1, 1)
    assert {n: s.ap for n, s in report.per_label.items()} == {"cat": 1.0, "dog": 1.0}


def test_ap_matches_pycocotools_run_directly_on_the_same_json(tmp_path):
    report = coco_ap(_pairs(GT, DT))
    stats = _direct(tmp_path, [1, 2])
    assert 0 < report.overall.ap < 1  # not a trivial case
    assert report.overall.ap == pytest.approx(stats[0])
    assert report.overall.ap50 == pytest.approx(stats[1])
    assert report.overall.ar == pytest.approx(stats[8])
    for k, label in enumerate(LABELS, 1):
        stats = _direct(tmp_path, [k])
        scores = report.per_label[label]
        assert (scores.ap, scores.ap50, scores.ar) == pytest.approx(
            (stats[0], stats[1], stats[8])
        )
    assert report.per_label["cat"].ap != report.per_label["dog"].ap
    assert report.gt_counts == {"cat": 2, "dog": 2}
    assert report.pred_counts == {"cat": 2, "dog": 3}


def test_labels_on_one_side_only_are_reported():
    pairs = [pair([box("cat", 0, 0, 10, 10)], [box("bird", 0, 0, 10, 10, 0.9)])]
    report = coco_ap(pairs)
    assert set(report.per_label) == {"cat", "bird"}
    assert report.per_label["cat"].ap == 0.0  # truth nobody found
    assert report.per_label["bird"].ap is None  # nothing to find: undefined
    assert report.gt_counts == {"cat": 1, "bird": 0}
    assert report.pred_counts == {"cat": 0, "bird": 1}


def test_no_predictions_at_all_give_ap_0():
    report = coco_ap([pair([box("cat", 0, 0, 10, 10)], [])])
    assert report.overall.ap == 0.0 and report.per_label["cat"].ap == 0.0


def test_perfect_polygons_give_segm_ap_1_and_a_smaller_one_less():
    tri = Prediction(RegionType.POLYGON, "leaf", [(10, 10), (60, 10), (10, 60)])
    small = Prediction(RegionType.POLYGON, "leaf", [(10, 10), (30, 10), (10, 30)])
    perfect = coco_ap([pair([tri], [tri.with_(score=0.9)])], "segm")
    assert perfect.overall.ap == pytest.approx(1.0)  # COCOeval's float sums
    # area 200 of 1250 (IoU about 0.16): below every COCO IoU threshold
    assert coco_ap([pair([tri], [small.with_(score=0.9)])], "segm").overall.ap == 0


def test_perfect_keypoints_give_oks_ap_1():
    person = Prediction(
        RegionType.KEYPOINT,
        "person",
        (10, 10, 60, 90),
        keypoints={"head": (35, 15), "left_hand": (12, 50), "right_hand": (58, 50)},
    )
    report = coco_ap([pair([person], [person.with_(score=0.8)])], "keypoints")
    assert report.overall.ap == pytest.approx(1.0)
    assert report.per_label["person"].ap50 == pytest.approx(1.0)


@pytest.mark.parametrize("processes", [0, 1])
def test_chunks_give_what_one_run_over_all_images_gives(tmp_path, processes):
    """One image per chunk, evaluated here or in a worker process: the same
    figures as pycocotools run once over the JSON files."""
    accumulator = CocoAccumulator("bbox", chunk_images=1, processes=processes)
    for p in _pairs(GT, DT):
        accumulator.add(p)
    report = accumulator.result()
    stats = _direct(tmp_path, [1, 2])
    assert (report.overall.ap, report.overall.ap50, report.overall.ar) == (
        pytest.approx((stats[0], stats[1], stats[8]))
    )
    for k, label in enumerate(LABELS, 1):
        stats = _direct(tmp_path, [k])
        scores = report.per_label[label]
        assert (scores.ap, scores.ap50, scores.ar) == pytest.approx(
            (stats[0], stats[1], stats[8])
        )


def test_equal_scores_across_chunks_rank_in_image_order():
    """Unscored predictions all rank equal; COCOeval breaks the tie by image
    order, which chunking must keep: a hit in image 1 and a false box in
    image 2 give another AP than the reverse."""
    hit_first = [
        pair([box("cat", 0, 0, 10, 10)], [box("cat", 0, 0, 10, 10)], "1.jpg"),
        pair([box("cat", 0, 0, 10, 10)], [box("cat", 50, 50, 60, 60)], "2.jpg"),
    ]
    one_run = coco_ap(hit_first)
    accumulator = CocoAccumulator("bbox", chunk_images=1, processes=0)
    for p in hit_first:
        accumulator.add(p)
    chunked = accumulator.result()
    assert chunked.overall == one_run.overall
    assert one_run.overall != coco_ap(hit_first[::-1]).overall


def test_a_worker_that_cannot_start_leaves_its_chunks_to_this_process(
    monkeypatch, caplog
):
    """spawn re-imports ``__main__``; where that fails (a script on stdin)
    the pool breaks, and the chunks are evaluated here with the same result."""
    import concurrent.futures

    import backend.evaluate.coco_ap as coco_ap_module

    class BrokenPool:
        def __init__(self, *args, **kwargs):
            pass

        def submit(self, *args):
            future = concurrent.futures.Future()
            future.set_exception(coco_ap_module.BrokenProcessPool("no start"))
            return future

        def shutdown(self, **kwargs):
            pass

    monkeypatch.setattr(coco_ap_module, "ProcessPoolExecutor", BrokenPool)
    accumulator = CocoAccumulator("bbox", chunk_images=1, processes=1)
    for p in _pairs(GT, DT):
        accumulator.add(p)
    assert accumulator.result().overall == coco_ap(_pairs(GT, DT)).overall
    assert "evaluating in this process" in caplog.text
