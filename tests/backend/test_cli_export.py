"""``rexlabel export`` and ``rexlabel convert``: nothing lost on the way to COCO.

A Label Studio export with a scored box, a brush mask, a two-instance keypoint
annotation and OCR text goes through the real CLI; pycocotools reads the
result and each piece is checked against what went in.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backend.cli import main
from converters import masks
from converters.labelstudio.reader import from_labelstudio
from tests.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio

W, H = 200, 100
SIZE = {"original_width": W, "original_height": H, "image_rotation": 0}

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    '<Label value="person"/><Label value="car"/></RectangleLabels>'
    '<BrushLabels name="brush" toName="image"><Label value="road"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="image">'
    '<Label value="nose"/><Label value="left eye"/></KeyPointLabels>'
    '<TextArea name="text" toName="image" perRegion="true"/>'
    "</View>"
)


def _pct(x, y):
    return {"x": 100 * x / W, "y": 100 * y / H}


def _box(rid, label, x0, y0, x1, y1, **extra):
    value = {
        **_pct(x0, y0),
        "width": 100 * (x1 - x0) / W,
        "height": 100 * (y1 - y0) / H,
        "rotation": 0,
        "rectanglelabels": [label],
    }
    return {
        "id": rid,
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": value,
        **SIZE,
        **extra,
    }


def _joint(rid, parent, name, x, y):
    return {
        "id": rid,
        "from_name": "kp",
        "to_name": "image",
        "type": "keypointlabels",
        "parentID": parent,
        "value": {**_pct(x, y), "width": 0.5, "keypointlabels": [name]},
        **SIZE,
    }


@pytest.fixture
def road_mask():
    mask = np.zeros((H, W), dtype=np.uint8)
    mask[60:90, 10:150] = 1
    return mask


@pytest.fixture
def export_tasks(road_mask):
    brush = {
        "id": "m1",
        "from_name": "brush",
        "to_name": "image",
        "type": "brushlabels",
        "value": {
            "format": "rle",
            "rle": masks.mask_to_brush_rle(road_mask * 255),
            "brushlabels": ["road"],
        },
        **SIZE,
    }
    ocr_box = _box("t1", "car", 150, 10, 190, 30)
    ocr_text = {
        **ocr_box,
        "from_name": "text",
        "type": "textarea",
        "value": {**ocr_box["value"], "text": ["AB-123"]},
    }
    annotation = [
        _box("b1", "car", 20, 10, 60, 40, score=0.9),
        brush,
        _box("p1", "person", 70, 5, 110, 55),
        _joint("j1", "p1", "nose", 90, 15),
        _joint("j2", "p1", "left eye", 85, 12),
        _box("p2", "person", 120, 5, 140, 50),
        _joint("j3", "p2", "nose", 130, 10),
        ocr_box,
        ocr_text,
    ]
    prediction = [_box("x1", "car", 22, 12, 58, 38, score=0.7)]
    return [
        {
            "id": 1,
            "data": {"image": "/data/upload/1/street.jpg"},
            "annotations": [
                {
                    "id": 10,
                    "result": annotation,
                    "was_cancelled": False,
                    "updated_at": "2026-01-02T00:00:00Z",
                },
                {
                    "id": 11,
                    "result": [_box("zz", "car", 0, 0, 5, 5)],
                    "was_cancelled": True,
                    "updated_at": "2026-01-03T00:00:00Z",
                },
            ],
            "predictions": [
                {"id": 5, "model_version": "rex-1", "result": prediction, "score": 0.7}
            ],
        },
        {
            "id": 2,
            "data": {"image": "/data/upload/1/empty.jpg"},
            "annotations": [],
            "predictions": [],
        },
    ]


def _check_everything_kept(path, road_mask):
    coco = COCO(str(path))
    assert [img["file_name"] for img in coco.dataset["images"]] == [
        "/data/upload/1/street.jpg",
        "/data/upload/1/empty.jpg",
    ]
    street = coco.dataset["images"][0]
    assert (street["width"], street["height"]) == (W, H)
    cats = {c["name"]: c for c in coco.dataset["categories"]}
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[street["id"]]))
    by_cat = {}
    for ann in anns:
        by_cat.setdefault(coco.cats[ann["category_id"]]["name"], []).append(ann)
    # the scored box (the cancelled annotation is not used)
    car_boxes = [a for a in by_cat["car"] if "text" not in a]
    assert len(car_boxes) == 1
    assert car_boxes[0]["bbox"] == pytest.approx([20, 10, 40, 30])
    assert car_boxes[0]["score"] == pytest.approx(0.9)
    # the brush mask is a COCO RLE equal to the painted pixels
    road = by_cat["road"][0]
    decoded = mask_utils.decode(road["segmentation"])
    assert np.array_equal(decoded, road_mask)
    assert road["area"] == int(road_mask.sum())
    # keypoints: one annotation per instance, joints in the category's order
    people = sorted(by_cat["person"], key=lambda a: a["bbox"][0])
    assert len(people) == 2
    joints = cats["person"]["keypoints"]
    first = dict(
        zip(joints, np.reshape(people[0]["keypoints"], (-1, 3)).tolist(), strict=True)
    )
    assert first["nose"] == pytest.approx([90, 15, 2])
    assert first["left eye"] == pytest.approx([85, 12, 2])
    assert people[0]["num_keypoints"] == 2 and people[1]["num_keypoints"] == 1
    # OCR text kept on its box
    texts = [a["text"] for a in anns if a.get("text")]
    assert texts == ["AB-123"]
    return coco


def test_convert_export_file_keeps_masks_keypoints_text_scores(
    tmp_path, export_tasks, road_mask, capsys
):
    src = tmp_path / "export.json"
    src.write_text(json.dumps(export_tasks))
    out = tmp_path / "coco.json"
    assert main(["convert", str(src), "--out", str(out)]) == 0
    assert "2 images" in capsys.readouterr().out
    _check_everything_kept(out, road_mask)


def test_convert_predictions_evaluate_against_annotations(tmp_path, export_tasks):
    src = tmp_path / "export.json"
    src.write_text(json.dumps(export_tasks))
    gt_path, dt_path = tmp_path / "gt.json", tmp_path / "dt.json"
    assert main(["convert", str(src), "--out", str(gt_path)]) == 0
    assert (
        main(
            [
                "convert",
                str(src),
                "--out",
                str(dt_path),
                "--predictions",
                "--model-version",
                "rex-1",
            ]
        )
        == 0
    )
    predicted = json.loads(dt_path.read_text())
    assert len(predicted["annotations"]) == 1
    assert predicted["annotations"][0]["score"] == pytest.approx(0.7)
    # the prediction (IoU 0.8 with the car box) scores as a hit for that category
    gt = COCO(str(gt_path))
    car = next(c["id"] for c in gt.dataset["categories"] if c["name"] == "car")
    ann = predicted["annotations"][0]
    dt = gt.loadRes(
        [
            {
                "image_id": 1,
                "category_id": car,
                "bbox": ann["bbox"],
                "score": ann["score"],
            }
        ]
    )
    evaluator = COCOeval(gt, dt, "bbox")
    evaluator.params.catIds = [car]
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[1] == pytest.approx(0.5, abs=0.01)  # AP50: 1 of 2 car boxes


def test_export_project_from_label_studio(
    tmp_path, export_tasks, road_mask, monkeypatch
):
    with FakeLabelStudio() as ls:
        ls.add_project(4, CONFIG)
        for task in export_tasks:
            ls.add_task(4, task["id"], task["data"])
            ls.tasks[task["id"]]["annotations"] = task["annotations"]
        monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", LEGACY_TOKEN)
        out = tmp_path / "coco.json"
        kept = tmp_path / "export.json"
        assert (
            main(
                [
                    "export",
                    "--project",
                    "4",
                    "--out",
                    str(out),
                    "--keep-json",
                    str(kept),
                ]
            )
            == 0
        )
    coco = _check_everything_kept(out, road_mask)
    # categories follow the config (keypoint labels are joints, not categories)
    names = [c["name"] for c in coco.dataset["categories"]]
    assert names[:3] == ["person", "car", "road"]
    assert "nose" not in names
    assert [t["id"] for t in json.loads(kept.read_text())] == [1, 2]


def test_export_without_credentials_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    assert main(["export", "--project", "1", "--out", str(tmp_path / "x.json")]) == 2
    assert "LABEL_STUDIO_API_KEY" in capsys.readouterr().err


RAW_LINES = [
    {
        "image_path": "a.jpg",
        "width": 1000,
        "height": 500,
        "task_name": "common_object_detection",
        "categories": ["person", "car"],
        "raw_response": "<|object_ref_start|>person<|object_ref_end|><|box_start|>"
        "<100><200><300><400>,<500><0><999><999><|box_end|>"
        "<|object_ref_start|>car<|object_ref_end|><|box_start|>"
        "<0><0><99><99><|box_end|><|im_end|>",
    },
    {
        "image_path": "b.jpg",
        "width": 640,
        "height": 480,
        "task": "pointing",
        "categories": "cup",
        "raw_response": "<|object_ref_start|>cup<|object_ref_end|><|box_start|>"
        "<500><500><|box_end|>",
    },
]


def test_convert_raw_outputs_to_coco_and_to_labelstudio(tmp_path, capsys):
    src = tmp_path / "outputs.jsonl"
    src.write_text("".join(json.dumps(line) + "\n" for line in RAW_LINES))
    out = tmp_path / "coco.json"
    assert (
        main(
            ["convert", "--raw", str(src), "--out", str(out), "--image-root", "/images"]
        )
        == 0
    )
    coco = COCO(str(out))
    assert [i["file_name"] for i in coco.dataset["images"]] == [
        "/images/a.jpg",
        "/images/b.jpg",
    ]
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    anns = coco.dataset["annotations"]
    assert [names[a["category_id"]] for a in anns] == ["person", "person", "car", "cup"]
    assert anns[0]["bbox"] == pytest.approx(
        [100 / 999 * 1000, 200 / 999 * 500, 200 / 999 * 1000, 200 / 999 * 500]
    )
    assert anns[3]["point"] == pytest.approx([500 / 999 * 640, 500 / 999 * 480])

    tasks_path = tmp_path / "tasks.json"
    assert (
        main(
            [
                "convert",
                "--raw",
                str(src),
                "--to",
                "labelstudio",
                "--out",
                str(tasks_path),
                "--model-version",
                "rex-eval",
            ]
        )
        == 0
    )
    tasks = json.loads(tasks_path.read_text())
    assert [t["data"]["image"] for t in tasks] == ["a.jpg", "b.jpg"]
    prediction = tasks[0]["predictions"][0]
    assert prediction["model_version"] == "rex-eval"
    back = from_labelstudio(prediction["result"]).predictions
    assert [p.label for p in back] == ["person", "person", "car"]
    assert back[0].coords == pytest.approx(
        (100 / 999 * 1000, 200 / 999 * 500, 300 / 999 * 1000, 400 / 999 * 500), abs=1e-6
    )
    assert tasks[1]["predictions"][0]["result"][0]["type"] == "keypointlabels"


def test_convert_raw_line_without_answer_names_the_line(tmp_path, capsys):
    src = tmp_path / "outputs.jsonl"
    src.write_text(json.dumps({"image_path": "a.jpg", "width": 5, "height": 5}) + "\n")
    assert main(["convert", "--raw", str(src), "--out", str(tmp_path / "c.json")]) == 3
    assert "error: line 1: needs an image" in capsys.readouterr().err


def test_convert_raw_keypoints_to_labelstudio_with_instance_boxes(tmp_path, capsys):
    """--box-from-name puts each keypoint instance's box in that RectangleLabels
    tag and gives its joints the box as parent, so instances survive import."""
    from converters.answer import format_answer
    from converters.keypoint_sets import PERSON
    from converters.prediction import Prediction

    def person(dx: float) -> Prediction:
        joints = {
            j: (100 + dx + i * 4.0, 50 + i * 10.0) for i, j in enumerate(PERSON.joints)
        }
        return Prediction(
            type="keypoint",
            label="person",
            coords=(90 + dx, 40, 180 + dx, 260),
            keypoints=joints,
            instance_id="",
        )

    answer = format_answer("keypoint", [person(0), person(300)], 640, 480)
    line = {
        "image_path": "crowd.jpg",
        "width": 640,
        "height": 480,
        "task": "keypoint",
        "categories": "person",
        "raw_response": answer,
    }
    src = tmp_path / "outputs.jsonl"
    src.write_text(json.dumps(line) + "\n")
    out = tmp_path / "tasks.json"
    args = ["convert", "--raw", str(src), "--to", "labelstudio", "--out", str(out)]
    assert main([*args, "--from-name", "kp", "--box-from-name", "box"]) == 0
    results = json.loads(out.read_text())[0]["predictions"][0]["result"]
    boxes = [r for r in results if r["type"] == "rectanglelabels"]
    joints = [r for r in results if r["type"] == "keypointlabels"]
    assert [b["from_name"] for b in boxes] == ["box", "box"]
    assert len(joints) == 2 * len(PERSON.joints)
    assert {j["from_name"] for j in joints} == {"kp"}
    assert {j["parentID"] for j in joints} == {b["id"] for b in boxes}

    assert main(args) == 0  # without it: joints only, no parent
    results = json.loads(out.read_text())[0]["predictions"][0]["result"]
    assert {r["type"] for r in results} == {"keypointlabels"}
    assert all("parentID" not in r for r in results)


def _png_claiming(path, width: int, height: int) -> str:
    """A tiny PNG file whose header claims ``width`` x ``height`` (a bomb)."""
    import struct
    import zlib

    from tests.security.conftest import png_bytes

    data = bytearray(png_bytes())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(data))
    return str(path)


def _bad_tasks(tmp_path) -> list[dict]:
    """Task 2's image is a 20000x20000 bomb, task 3 is malformed JSON, task 4
    carries a 20 KB brush RLE declaring 400 M values; tasks 1 and 5 are fine."""
    bomb = _png_claiming(tmp_path / "bomb.png", 20_000, 20_000)
    run = "1" + "11" + "1" * 16 + "11111111"
    bits = f"{400_000_000:032b}{7:05b}" + "0010001101111111" + run * 6000
    bits += "0" * (-len(bits) % 8)
    brush_bomb = {
        "id": "m9",
        "from_name": "brush",
        "to_name": "image",
        "type": "brushlabels",
        "value": {
            "format": "rle",
            "rle": [int(bits[i : i + 8], 2) for i in range(0, len(bits), 8)],
            "brushlabels": ["road"],
        },
        **SIZE,
    }
    box = _box("b1", "car", 20, 10, 60, 40)

    def task(task_id, image, result):
        return {"id": task_id, "data": {"image": image}, "annotations": result}

    return [
        task(1, "/data/upload/1/a.jpg", [{"id": 1, "result": [box]}]),
        task(2, bomb, []),
        task(3, "/data/upload/1/c.jpg", "not a list of annotations"),
        task(4, "/data/upload/1/d.jpg", [{"id": 4, "result": [box, brush_bomb]}]),
        task(5, "/data/upload/1/e.jpg", [{"id": 5, "result": [box]}]),
    ]


def test_convert_reports_each_broken_task_and_writes_the_others(tmp_path, capsys):
    src = tmp_path / "export.json"
    src.write_text(json.dumps(_bad_tasks(tmp_path)))
    out = tmp_path / "coco.json"
    assert main(["convert", str(src), "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "3 images, 3 annotations, 2 failed" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert [e.split(":")[1].strip() for e in errors] == ["task 2", "task 3"]
    assert "decompression bomb" in errors[0]
    assert "warning: task 4: skipped region 'm9': brush RLE holds 400000000" in (
        captured.err
    )
    assert "rexlabel convert: 2 failed" in captured.err
    coco = COCO(str(out))
    assert sorted(i["task_id"] for i in coco.dataset["images"]) == [1, 4, 5]


def test_export_reports_each_broken_task_and_writes_the_others(
    tmp_path, monkeypatch, capsys
):
    with FakeLabelStudio() as ls:
        ls.add_project(4, CONFIG)
        for task in _bad_tasks(tmp_path):
            ls.add_task(4, task["id"], task["data"])
            ls.tasks[task["id"]]["annotations"] = task["annotations"]
        monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", LEGACY_TOKEN)
        out = tmp_path / "coco.json"
        assert main(["export", "--project", "4", "--out", str(out)]) == 3
    captured = capsys.readouterr()
    assert "error: task 2:" in captured.err and "error: task 3:" in captured.err
    assert "rexlabel export: 2 failed" in captured.err
    assert len(COCO(str(out)).dataset["images"]) == 3


def test_convert_raw_reports_a_bomb_image_by_line(tmp_path, capsys):
    bomb = _png_claiming(tmp_path / "bomb.png", 20_000, 20_000)
    src = tmp_path / "outputs.jsonl"
    lines = [
        {"image_path": "a.jpg", "width": 100, "height": 50, "raw_text": "", **t}
        for t in ({}, {"image_path": bomb, "width": 0}, {})
    ]
    src.write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "c.json"
    assert main(["convert", "--raw", str(src), "--out", str(out)]) == 3
    err = capsys.readouterr().err
    assert "error: line 2:" in err and "decompression bomb" in err
    assert len(json.loads(out.read_text())["images"]) == 2


OCR_LINE = {
    "image_path": "page.jpg",
    "width": 1000,
    "height": 500,
    "task": "ocr_box",
    "categories": ["text line"],
    "raw_response": "<|object_ref_start|>AB-123<|object_ref_end|><|box_start|>"
    "<100><200><300><400><|box_end|><|im_end|>",
}


def test_convert_raw_to_labelstudio_keeps_ocr_text(tmp_path):
    """The text was dropped: it goes into the per-region TextArea under the
    region's id, as the backend writes it."""
    src = tmp_path / "ocr.jsonl"
    src.write_text(json.dumps(OCR_LINE) + "\n")
    out = tmp_path / "tasks.json"
    args = ["convert", "--raw", str(src), "--to", "labelstudio", "--out", str(out)]
    assert main(args) == 0
    (task,) = json.loads(out.read_text())
    box, text = task["predictions"][0]["result"]
    assert (box["type"], text["type"]) == ("rectanglelabels", "textarea")
    assert box["id"] == text["id"]
    assert text["from_name"] == "transcription" and text["value"]["text"] == ["AB-123"]
    assert text["value"]["x"] == box["value"]["x"]
    config = (
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image"><Label value="text line"/>'
        "</RectangleLabels>"
        '<TextArea name="transcription" toName="image" perRegion="true"/></View>'
    )
    prediction = {"result": task["predictions"][0]["result"], "score": 0.5}
    assert LabelInterface(config).validate_prediction(prediction) is True


def test_export_names_unlabelled_ocr_regions_text(tmp_path):
    """A Rectangle + TextArea OCR export gave a COCO category named ''."""
    plain = {
        "id": "r1",
        "from_name": "bbox",
        "to_name": "image",
        "type": "rectangle",
        "value": {**_pct(10, 10), "width": 20, "height": 10, "rotation": 0},
        **SIZE,
    }
    text = {**plain, "from_name": "transcription", "type": "textarea"}
    text["value"] = {**plain["value"], "text": ["HELLO"]}
    other = {**plain, "id": "r2", "value": {**plain["value"], "x": 60}}
    tasks = [
        {
            "id": 1,
            "data": {"image": "a.jpg"},
            "annotations": [{"result": [plain, text, other]}],
        }
    ]
    src = tmp_path / "export.json"
    src.write_text(json.dumps(tasks))
    out = tmp_path / "coco.json"
    assert main(["convert", str(src), "--out", str(out)]) == 0
    coco = COCO(str(out))
    names = {c["id"]: c["name"] for c in coco.dataset["categories"]}
    assert "" not in names.values()
    anns = coco.dataset["annotations"]
    assert [(names[a["category_id"]], a.get("text")) for a in anns] == [
        ("text", "HELLO"),
        ("region", None),
    ]
