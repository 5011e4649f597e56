"""Our COCO export against label-studio-sdk's own converter, on one export.

Where they must agree (plain boxes to 1e-6 px, polygons, image sizes), they
do; where ours is better, that is pinned down: exact rotated boxes on a
non-square image, one annotation per keypoint instance with its box, ids from
1, one image entry per task, brush masks as RLE with their pixel area, and
files pycocotools' COCOeval reads for bbox, segm and keypoints.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math

import numpy as np
import pytest
from label_studio_sdk.converter import Converter
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from backend.cli import main
from converters import masks
from converters.coco import to_coco_results

W, H = 400, 200
"""A non-square image: rotation errors show on it."""

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="box" toName="image">'
    '<Label value="car"/><Label value="person"/></RectangleLabels>'
    '<PolygonLabels name="poly" toName="image"><Label value="road"/></PolygonLabels>'
    '<BrushLabels name="brush" toName="image"><Label value="sky"/></BrushLabels>'
    '<KeyPointLabels name="kp" toName="image">'
    '<Label value="nose" model_index="0"/>'
    '<Label value="left eye" model_index="1"/></KeyPointLabels>'
    "</View>"
)
SIZE = {"original_width": W, "original_height": H, "image_rotation": 0}


def _box(rid: str, label: str, x, y, w, h, rotation=0.0) -> dict:
    """A rectangle in percent of the image, as Label Studio stores it."""
    value = {"x": x, "y": y, "width": w, "height": h, "rotation": rotation}
    return {
        "id": rid,
        "from_name": "box",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {**value, "rectanglelabels": [label]},
        **SIZE,
    }


def _region(rid: str, name: str, kind: str, value: dict, **extra) -> dict:
    return {
        "id": rid,
        "from_name": name,
        "to_name": "image",
        "type": kind,
        "value": value,
        **SIZE,
        **extra,
    }


def _brush_rle(mask: np.ndarray) -> list[int]:
    from label_studio_sdk.converter.brush import encode_rle

    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask, 3] = 255
    return [int(v) for v in encode_rle(rgba.ravel())]


@pytest.fixture
def export(tmp_path):
    """A Label Studio JSON export of two tasks whose images exist on disk."""
    paths = []
    for name in ("a.png", "b.png"):
        path = tmp_path / name
        Image.new("RGB", (W, H), (90, 120, 150)).save(path)
        paths.append(str(path))
    sky = np.zeros((H, W), dtype=bool)
    sky[10:50, 20:220] = True
    first = [
        _box("b1", "car", 10, 20, 25, 30),
        _box("b2", "person", 50.5, 5.25, 12.125, 60),
        _box("r1", "car", 40, 40, 20, 20, rotation=30),
        _region(
            "p1",
            "poly",
            "polygonlabels",
            {
                "points": [[5, 70], [30, 65], [35, 95], [2, 90]],
                "polygonlabels": ["road"],
            },
        ),
        _region(
            "m1",
            "brush",
            "brushlabels",
            {"format": "rle", "rle": _brush_rle(sky), "brushlabels": ["sky"]},
        ),
    ]
    joints = (("k1", "nose", 70, 20), ("k2", "left eye", 72, 18))
    second = [
        _box("k0", "person", 60, 10, 30, 80),
        *(
            _region(
                rid,
                "kp",
                "keypointlabels",
                {"x": x, "y": y, "width": 1, "keypointlabels": [joint]},
                parentID="k0",
            )
            for rid, joint, x, y in joints
        ),
    ]
    tasks = [
        {"id": 11, "data": {"image": paths[0]}, "annotations": [{"result": first}]},
        {"id": 12, "data": {"image": paths[1]}, "annotations": [{"result": second}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    return path, sky


def _sdk_coco(export_path, out_dir) -> dict:
    logging.getLogger("label_studio_sdk").setLevel(logging.ERROR)
    converter = Converter(CONFIG, project_dir=str(out_dir), download_resources=False)
    converter.convert_to_coco(str(export_path), str(out_dir), is_dir=False)
    return json.loads((out_dir / "result.json").read_text())


def _ours(export_path, out) -> dict:
    assert main(["convert", str(export_path), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _by_image(dataset: dict) -> dict:
    """file name -> [(category name, annotation), ...] in order."""
    names = {c["id"]: c["name"] for c in dataset["categories"]}
    files = {i["id"]: i["file_name"] for i in dataset["images"]}
    out: dict = {}
    for ann in dataset["annotations"]:
        out.setdefault(files[ann["image_id"]], []).append(
            (names[ann["category_id"]], ann)
        )
    return out


def test_where_the_sdk_and_we_must_agree(export, tmp_path, capsys):
    path, _ = export
    sdk = _sdk_coco(path, tmp_path / "sdk")
    ours = _ours(path, tmp_path / "ours.json")
    sizes = {i["file_name"]: (i["width"], i["height"]) for i in ours["images"]}
    assert {i["file_name"]: (i["width"], i["height"]) for i in sdk["images"]} == sizes
    theirs, mine = _by_image(sdk), _by_image(ours)
    first, second = sorted(sizes)
    # Label Studio's order: b1, b2 (plain), r1 (rotated), p1 (polygon); the
    # SDK drops the brush. Plain boxes agree to 1e-6 px.
    sdk_plain = [(n, a["bbox"]) for n, a in theirs[first][:2]]
    our_plain = [(n, a["bbox"]) for n, a in mine[first][:2]]
    assert [n for n, _ in our_plain] == [n for n, _ in sdk_plain] == ["car", "person"]
    for (_, ours_bbox), (_, sdk_bbox) in zip(our_plain, sdk_plain, strict=True):
        assert ours_bbox == pytest.approx(sdk_bbox, abs=1e-6)
    assert mine[second][0][1]["bbox"] == pytest.approx(
        theirs[second][0][1]["bbox"], abs=1e-6
    )
    # The polygon: the same points.
    (sdk_road,) = [a for n, a in theirs[first] if n == "road"]
    (our_road,) = [a for n, a in mine[first] if n == "road"]
    assert our_road["segmentation"][0] == pytest.approx(
        sdk_road["segmentation"][0], abs=1e-6
    )
    assert our_road["area"] == pytest.approx(sdk_road["area"], abs=1e-6)


def test_where_ours_is_better(export, tmp_path, capsys):
    path, sky = export
    sdk = _sdk_coco(path, tmp_path / "sdk")
    ours = _ours(path, tmp_path / "ours.json")
    mine = _by_image(ours)
    first, second = sorted(mine)
    # ids from 1 (the SDK starts at 0, which some COCO tools treat as "none").
    assert min(a["id"] for a in ours["annotations"]) == 1
    assert min(i["id"] for i in ours["images"]) == 1
    assert min(a["id"] for a in sdk["annotations"]) == 0
    # One image entry per task.
    assert len(ours["images"]) == 2
    # The rotated box: exact corners on the non-square image (rotation about
    # the top-left corner, in pixels).
    rotated = [
        a for n, a in mine[first] if n == "car" and len(a["segmentation"][0]) == 8
    ]
    corners = np.array(rotated[-1]["segmentation"][0]).reshape(4, 2)
    x, y, w, h = 0.4 * W, 0.4 * H, 0.2 * W, 0.2 * H
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    expected = [
        (x + dx * c - dy * s, y + dx * s + dy * c)
        for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))
    ]
    assert sorted(map(tuple, corners.round(6))) == sorted(
        (round(a, 6), round(b, 6)) for a, b in expected
    )
    # The brush mask: RLE with its pixel area (the SDK drops brushes from COCO).
    (sky_ann,) = [a for n, a in mine[first] if n == "sky"]
    assert sky_ann["area"] == sky.sum()
    assert (masks.rle_to_mask(sky_ann["segmentation"]) == sky).all()
    assert not [c for c in sdk["categories"] if c["name"] == "sky"] or not [
        a
        for a in sdk["annotations"]
        if a["category_id"]
        == next(c["id"] for c in sdk["categories"] if c["name"] == "sky")
    ]
    # One annotation per keypoint instance, with its box and joints.
    (instance,) = [a for _, a in mine[second] if a.get("num_keypoints")]
    assert instance["num_keypoints"] == 2
    assert instance["bbox"] == pytest.approx([0.6 * W, 0.1 * H, 0.3 * W, 0.8 * H])
    # pycocotools evaluates every kind against itself.
    gt = COCO()
    gt.dataset = ours
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        for iou_type in ("bbox", "segm", "keypoints"):
            dt = gt.loadRes(to_coco_results(ours, iou_type))
            evaluator = COCOeval(gt, dt, iou_type)
            if iou_type == "keypoints":  # over the categories with joints
                k = len(instance["keypoints"]) // 3
                evaluator.params.kpt_oks_sigmas = np.full(k, 0.05)
                evaluator.params.catIds = [
                    c["id"] for c in ours["categories"] if "keypoints" in c
                ]
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
            assert evaluator.stats[0] == pytest.approx(1.0), iou_type
