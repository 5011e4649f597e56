"""``rexlabel evaluate`` end to end: hand-built files, figures known by hand."""

from __future__ import annotations

import json

from backend.cli import main
from backend.evaluate.report import build_report


def rect(rid, label, x, y, w, h, width=200, height=100):
    """A rectanglelabels result; x/y/w/h in percent."""
    return {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]},
    }


def export(tmp_path, tasks, name="export.json"):
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


def prelabel_jsonl(tmp_path, lines, name="labels.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def line(image, boxes, width=200, height=100):
    return {
        "image": image,
        "width": width,
        "height": height,
        "calls": [
            {
                "predictions": [
                    {"type": "box", "label": label, "coords": coords, "score": score}
                    for label, coords, score in boxes
                ]
            }
        ],
    }


# Two cats in a 200x100 image: (20,10)-(60,50) and (100,20)-(160,80).
GT_TASKS = [
    {
        "id": 1,
        "data": {"image": "a.jpg"},
        "annotations": [
            {
                "id": 10,
                "was_cancelled": False,
                "result": [
                    rect("r1", "cat", 10, 10, 20, 40),
                    rect("r2", "cat", 50, 20, 30, 60),
                ],
            }
        ],
    },
    {"id": 2, "data": {"image": "b.jpg"}, "annotations": []},  # not annotated
]


def run(tmp_path, gt, pred):
    out = tmp_path / "eval"
    code = main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(out)])
    report = json.loads((out / "report.json").read_text()) if code == 0 else None
    return code, report


def test_perfect_predictions_score_one(tmp_path, capsys):
    gt = export(tmp_path, GT_TASKS)
    pred = prelabel_jsonl(
        tmp_path,
        [
            line(
                "a.jpg",
                [("cat", [20, 10, 60, 50], 0.9), ("cat", [100, 20, 160, 80], 0.8)],
            )
        ],
    )
    code, report = run(tmp_path, gt, pred)
    assert code == 0
    overall = report["overall"]
    assert overall["ap"] == 1.0 and overall["ap50"] == 1.0
    assert overall["at_threshold"]["recall"] == 1.0
    assert overall["at_threshold"]["precision"] == 1.0
    assert overall["misses"] == 0 and overall["false_positives"] == 0
    assert overall["effort"]["unchanged_share"] == 1.0
    assert report["labels"]["cat"]["recommended_threshold"] == 0.8
    assert report["inputs"]["ground_truth_skipped"] == 1
    assert "cat" in capsys.readouterr().out
    page = (tmp_path / "eval" / "report.html").read_text(encoding="utf-8")
    assert "<td" in page and ">cat<" in page and "data:image/png;base64," in page


def test_one_miss_halves_recall(tmp_path):
    gt = export(tmp_path, GT_TASKS)
    pred = prelabel_jsonl(tmp_path, [line("a.jpg", [("cat", [20, 10, 60, 50], 0.9)])])
    code, report = run(tmp_path, gt, pred)
    assert code == 0
    cat = report["labels"]["cat"]
    assert cat["at_threshold"]["recall"] == 0.5
    assert cat["at_threshold"]["precision"] == 1.0
    assert cat["misses"] == 1
    assert report["overall"]["effort"]["added_share"] == 0.5


def test_coco_predictions(tmp_path):
    gt = export(tmp_path, GT_TASKS)
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [20, 10, 40, 40],
                "area": 1600,
                "iscrowd": 0,
                "score": 0.9,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 1,
                "bbox": [100, 20, 60, 60],
                "area": 3600,
                "iscrowd": 0,
                "score": 0.7,
            },
        ],
    }
    pred = tmp_path / "pred.coco.json"
    pred.write_text(json.dumps(coco))
    code, report = run(tmp_path, gt, pred)
    assert code == 0
    assert report["overall"]["ap"] == 1.0
    assert report["overall"]["at_threshold"]["f1"] == 1.0


def test_bad_file_exits_2_naming_it(tmp_path, capsys):
    gt = export(tmp_path, GT_TASKS)
    bad = tmp_path / "broken.json"
    bad.write_text("not json at all")
    code, _ = run(tmp_path, gt, bad)
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "broken.json" in err


def test_bad_task_named(tmp_path, capsys):
    tasks = [
        {
            "id": 7,
            "data": {"image": "a.jpg"},
            "annotations": [
                {"id": 1, "result": [{"type": "rectanglelabels", "value": 3}]}
            ],
        }
    ]
    gt = export(tmp_path, tasks)
    pred = prelabel_jsonl(tmp_path, [line("a.jpg", [])])
    code, _ = run(tmp_path, gt, pred)
    assert code == 2
    err = capsys.readouterr().err
    assert "export.json" in err and "task 7" in err


def test_size_mismatch_names_the_task(tmp_path, capsys):
    gt = export(tmp_path, GT_TASKS)
    pred = prelabel_jsonl(
        tmp_path,
        [line("a.jpg", [("cat", [20, 10, 60, 50], 0.9)], width=400, height=200)],
    )
    code, _ = run(tmp_path, gt, pred)
    assert code == 2
    err = capsys.readouterr().err
    assert "task 1" in err and "200x100" in err and "400x200" in err


def test_pairing_by_task_id_is_warned_and_counted(tmp_path, capsys):
    gt = export(tmp_path, GT_TASKS)
    moved = dict(line("/data/upload/1/a.jpg", [("cat", [20, 10, 60, 50], 0.9)]))
    moved["task_id"] = 1  # same task, another reference to its image
    pred = prelabel_jsonl(tmp_path, [moved])
    code, report = run(tmp_path, gt, pred)
    assert code == 0
    assert report["inputs"]["paired_by_task_id"] == 1
    assert "by task id 1" in capsys.readouterr().err


def test_images_missing_from_either_file_are_said(tmp_path, capsys):
    tasks = [
        *GT_TASKS,
        {
            "id": 3,
            "data": {"image": "c.jpg"},
            "annotations": [{"id": 30, "result": [rect("r", "cat", 1, 1, 5, 5)]}],
        },
    ]
    gt = export(tmp_path, tasks)
    pred = prelabel_jsonl(
        tmp_path,
        [
            line("a.jpg", [("cat", [20, 10, 60, 50], 0.9)]),
            line("other.jpg", [("cat", [0, 0, 5, 5], 0.9)]),
        ],
    )
    code, report = run(tmp_path, gt, pred)
    assert code == 0
    assert report["inputs"]["images_without_predictions"] == 1  # c.jpg
    assert report["inputs"]["predictions_without_ground_truth"] == 1  # other.jpg
    out = capsys.readouterr().out
    assert "1 ground-truth image(s) have no predictions" in out
    assert "1 image(s) in the predictions file have no ground truth" in out


def test_one_export_as_both_files_is_read_once_task_by_task(tmp_path, monkeypatch):
    """A project export holds annotations and predictions: given as --gt and
    --pred it is read in one pass, with the counts of the two-file path."""
    import backend.evaluate.inputs as inputs

    def task(n, annotated=True, predicted=True):
        item = {"id": n, "data": {"image": f"/data/{n}.jpg"}}
        box = rect("r1", "cat", 10, 10, 20, 20)
        if annotated:
            item["annotations"] = [{"id": n, "result": [box], "was_cancelled": False}]
        if predicted:
            item["predictions"] = [{"result": [{**box, "score": 0.9}]}]
        return item

    export = tmp_path / "export.json"
    export.write_text(
        json.dumps([task(1), task(2, predicted=False), task(3, annotated=False)])
    )
    reads = []
    real = inputs.iter_json_list
    monkeypatch.setattr(
        inputs, "iter_json_list", lambda path: reads.append(path) or real(path)
    )
    pairs, pairing = inputs.load_pairs(export, export)
    report = build_report(pairs)
    assert len(reads) == 1
    assert report["overall"]["images"] == 2 and pairing.pairs == 2
    assert pairing.gt_skipped == 1  # task 3: not annotated
    assert pairing.without_predictions == 1  # task 2
    assert pairing.predictions_without_ground_truth == 1  # task 3
    assert report["labels"]["cat"]["at_threshold"]["recall"] == 0.5
