import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from converters import masks
from converters.coco import (
    CocoCategory,
    CocoError,
    CocoImage,
    from_coco,
    to_coco,
    to_coco_results,
)
from converters.keypoint_sets import ANIMAL, HAND, PERSON
from converters.prediction import Prediction, RegionType

W, H = 320, 240


def _coco(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _evaluate(dataset: dict, iou_type: str, sigmas=None, cat_ids=None) -> float:
    gt = _coco(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(to_coco_results(dataset, iou_type))
        evaluator = COCOeval(gt, dt, iou_type)
        if sigmas is not None:
            evaluator.params.kpt_oks_sigmas = sigmas
        if cat_ids is not None:
            evaluator.params.catIds = cat_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[0])


def _disc_mask(cx: int, cy: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return ((xx - cx) ** 2 + (yy - cy) ** 2 <= r**2).astype(np.uint8)


def _instance(kp_set, dx: float, n: int, score: float) -> Prediction:
    joints = {
        j: None if i % 6 == 5 else (20 + dx + (i % 5) * 7.0, 30 + i * 9.5)
        for i, j in enumerate(kp_set.joints)
    }
    return Prediction(
        type="keypoint",
        label=kp_set.name,
        coords=(15 + dx, 25, 60 + dx, 230),
        keypoints=joints,
        instance_id=f"{kp_set.name}{n}",
        score=score,
    )


def _images() -> list[CocoImage]:
    rle = masks.mask_to_rle(_disc_mask(200, 120, 30))
    first = CocoImage(
        "a.jpg",
        W,
        H,
        [
            Prediction(type="box", label="car", coords=(10, 20, 110, 90), score=0.9),
            Prediction(
                type="box", label="car", coords=(150.5, 30, 300, 200.25), score=0.6
            ),
            Prediction(
                type="polygon",
                label="word",
                coords=[(5, 5), (60, 8), (55, 40), (8, 35)],
                score=0.8,
                text="HELLO",
            ),
            Prediction(
                type="box", label="car", coords=masks.rle_bbox(rle), mask=rle, score=0.7
            ),
        ],
    )
    second = (
        {"file_name": "b.jpg", "width": W, "height": H, "id": 7},
        [
            Prediction(type="box", label="person", coords=(30, 40, 90, 200), score=0.5),
            Prediction(type="point", label="cup", coords=(12.5, 17.0), score=0.4),
        ],
    )
    return [first, second]


# Structure ----------------------------------------------------------------------
def test_dataset_structure_ids_and_fields():
    dataset = to_coco(_images(), ["car", "word", "person", "cup"])
    assert [c["id"] for c in dataset["categories"]] == [1, 2, 3, 4]
    assert [c["name"] for c in dataset["categories"]] == [
        "car",
        "word",
        "person",
        "cup",
    ]
    assert [i["id"] for i in dataset["images"]] == [1, 7]
    anns = dataset["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3, 4, 5, 6]
    box, _, poly, masked, _, point = anns
    assert box["bbox"] == [10, 20, 100, 70] and box["area"] == 7000
    # A box also carries its outline (as COCO.loadRes writes one), so segm
    # evaluation and annToMask read every annotation.
    assert box["segmentation"] == [[10, 20, 10, 90, 110, 90, 110, 20]]
    assert box["score"] == 0.9
    assert poly["segmentation"] == [[5, 5, 60, 8, 55, 40, 8, 35]]
    assert poly["text"] == "HELLO" and poly["category_id"] == 2
    assert poly["area"] == pytest.approx(1585.0)  # shoelace of the four vertices
    assert isinstance(masked["segmentation"]["counts"], str)
    assert masked["area"] == _disc_mask(200, 120, 30).sum()
    assert point["point"] == [12.5, 17.0] and point["bbox"] == [12.5, 17.0, 0, 0]
    json.dumps(dataset)  # plain JSON


def test_unknown_label_is_an_error_naming_it_or_added_on_request():
    with pytest.raises(CocoError, match=r"'cup' of prediction 1 of image 'b.jpg'"):
        to_coco(_images(), ["car", "word", "person"])
    dataset = to_coco(_images(), ["person"], add_unknown=True)
    assert [c["name"] for c in dataset["categories"]] == [
        "person",
        "car",
        "word",
        "cup",
    ]


def test_bad_inputs_are_named():
    with pytest.raises(CocoError, match="image 0"):
        to_coco([({"file_name": "x.jpg"}, [])], ["car"])
    with pytest.raises(CocoError, match="listed twice"):
        to_coco([], ["car", "car"])
    rle = masks.mask_to_rle(np.ones((5, 5)))
    bad = CocoImage(
        "m.jpg",
        W,
        H,
        [Prediction(type="box", label="car", coords=(0, 0, 5, 5), mask=rle)],
    )
    with pytest.raises(CocoError, match=r"mask of prediction 0 of image 'm\.jpg'"):
        to_coco([bad], ["car"])


def test_keypoint_categories_take_set_joints_and_one_based_skeleton():
    images = [
        CocoImage(
            "k.jpg",
            W,
            H,
            [_instance(PERSON, 0, 1, 0.9), _instance(ANIMAL, 100, 1, 0.8)],
        )
    ]
    dataset = to_coco(images, ["person", CocoCategory.from_keypoint_set(ANIMAL)])
    person, animal = dataset["categories"]
    assert person["keypoints"] == list(PERSON.joints)
    assert person["skeleton"] == PERSON.skeleton_indices()
    assert animal["skeleton"] == ANIMAL.skeleton_indices()
    ann = dataset["annotations"][0]
    assert len(ann["keypoints"]) == 3 * 17
    assert ann["keypoints"][:3] == [20.0, 30.0, 2]
    assert ann["keypoints"][15:18] == [0.0, 0.0, 0]  # joint 5 is missing
    assert ann["num_keypoints"] == 17 - 2
    assert ann["instance_id"] == "person1"


def test_keypoint_joints_outside_the_category_are_refused():
    odd = Prediction(
        type="keypoint",
        label="person",
        coords=(0, 0, 5, 5),
        keypoints={"nose": (1, 1), "tail tip": (2, 2)},
    )
    with pytest.raises(CocoError, match="tail tip"):
        to_coco(
            [CocoImage("k.jpg", W, H, [odd])], [CocoCategory.from_keypoint_set(PERSON)]
        )


# pycocotools reads it and scores it -----------------------------------------------
def test_bbox_ap_of_predictions_against_themselves_is_one():
    dataset = to_coco(_images(), ["car", "word", "person", "cup"])
    # "cup" holds a point: a zero-size box that box IoU cannot match, so it is
    # left out as the module docstring says.
    assert _evaluate(dataset, "bbox", cat_ids=[1, 2, 3]) == pytest.approx(1.0)


def test_segm_ap_of_polygons_and_masks_against_themselves_is_one():
    rle = masks.mask_to_rle(_disc_mask(100, 100, 40))
    images = [
        CocoImage(
            "s.jpg",
            W,
            H,
            [
                Prediction(
                    type="polygon",
                    label="word",
                    coords=[(5, 5), (60, 8), (55, 40), (8, 35)],
                    score=0.8,
                ),
                Prediction(
                    type="box",
                    label="car",
                    coords=masks.rle_bbox(rle),
                    mask=rle,
                    score=0.7,
                ),
            ],
        ),
    ]
    dataset = to_coco(images, ["car", "word"])
    assert _evaluate(dataset, "segm") == pytest.approx(1.0)


@pytest.mark.parametrize("kp_set", [PERSON, ANIMAL, HAND], ids=lambda s: s.name)
def test_keypoint_ap_against_themselves_is_one(kp_set):
    images = [
        CocoImage(
            "p.jpg",
            W,
            H,
            [_instance(kp_set, 0, 1, 0.9), _instance(kp_set, 150, 2, 0.8)],
        ),
        CocoImage("q.jpg", W, H, [_instance(kp_set, 40, 1, 0.7)]),
    ]
    dataset = to_coco(images, [kp_set.name])
    sigmas = np.full(len(kp_set.joints), 0.05)
    assert _evaluate(dataset, "keypoints", sigmas=sigmas) == pytest.approx(1.0)


@pytest.mark.parametrize("box_first", [True, False], ids=["box-first", "box-last"])
def test_keypoint_eval_reads_boxes_and_joint_less_instances(box_first):
    """COCOeval(iouType="keypoints") read num_keypoints from every annotation
    of the category: a person box without joints, or an instance whose joints
    are all missing, stopped it with KeyError -- also when the box comes
    before any instance with joints."""
    empty = Prediction(
        type="keypoint",
        label="person",
        coords=(200, 10, 300, 200),
        keypoints={j: None for j in PERSON.joints},
        score=0.6,
    )
    bare = Prediction(
        type="keypoint", label="person", coords=(5, 5, 50, 60), keypoints={}
    )
    box = Prediction(type="box", label="person", coords=(100, 100, 140, 200))
    found = [_instance(PERSON, 0, 1, 0.9), empty]
    images = [
        CocoImage(
            "p.jpg", W, H, [box, bare, *found] if box_first else [*found, bare, box]
        )
    ]
    dataset = to_coco(images, ["person"])
    (category,) = dataset["categories"]
    assert category["keypoints"] == list(PERSON.joints)
    for ann in dataset["annotations"]:
        assert len(ann["keypoints"]) == 3 * len(PERSON.joints)
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])
        assert isinstance(ann["segmentation"], list)
    assert [a["num_keypoints"] for a in dataset["annotations"]] == (
        [0, 0, len(PERSON.joints) - 2, 0]
        if box_first
        else [len(PERSON.joints) - 2, 0, 0, 0]
    )
    sigmas = np.full(len(PERSON.joints), 0.05)
    assert _evaluate(dataset, "keypoints", sigmas=sigmas) == pytest.approx(1.0)
    assert _evaluate(dataset, "segm") == pytest.approx(1.0)
    assert _evaluate(dataset, "bbox") == pytest.approx(1.0)


def test_segm_eval_and_ann_to_mask_read_labels_that_mix_boxes_and_masks():
    """One label holding a plain box, a rotated-box polygon, a mask and a point:
    COCOeval(iouType="segm") and annToMask stopped with KeyError on the box."""
    rle = masks.mask_to_rle(_disc_mask(100, 100, 40))
    images = [
        CocoImage(
            "m.jpg",
            W,
            H,
            [
                Prediction(type="box", label="car", coords=(10, 20, 60, 70), score=0.9),
                Prediction(
                    type="polygon",
                    label="car",
                    coords=[(150, 10), (200, 30), (180, 80), (130, 60)],
                    score=0.8,
                ),
                Prediction(
                    type="box", label="car", coords=masks.rle_bbox(rle), mask=rle
                ),
                Prediction(type="point", label="car", coords=(5.0, 5.0)),
            ],
        )
    ]
    dataset = to_coco(images, ["car"])
    coco = _coco(dataset)
    box_mask = coco.annToMask(dataset["annotations"][0])
    assert box_mask.sum() == pytest.approx(50 * 50, rel=0.1)
    for ann in dataset["annotations"]:
        coco.annToMask(ann)  # no KeyError
    # The point has no area to match: segm AP of the other three is 1.
    cat_ids = [1]
    without_point = {**dataset, "annotations": dataset["annotations"][:3]}
    assert _evaluate(without_point, "segm", cat_ids=cat_ids) == pytest.approx(1.0)
    back = from_coco(dataset)[0].predictions
    assert [p.type for p in back] == ["box", "polygon", "box", "point"]
    assert back[0].coords == (10, 20, 60, 70)


def test_loadres_accepts_results_without_scores():
    images = [
        CocoImage(
            "n.jpg", W, H, [Prediction(type="box", label="car", coords=(1, 2, 30, 40))]
        )
    ]
    dataset = to_coco(images, ["car"])
    (result,) = to_coco_results(dataset)
    assert result["score"] == 1.0
    assert _evaluate(dataset, "bbox") == pytest.approx(1.0)


# And back -----------------------------------------------------------------------
def test_from_coco_round_trips_every_kind():
    person = _instance(PERSON, 0, 1, 0.9)
    images = _images()
    images.append(CocoImage("k.jpg", W, H, [person], id=3))
    dataset = to_coco(images, ["car", "word", "person", "cup"])
    back = from_coco(json.loads(json.dumps(dataset)))
    assert [(i.file_name, i.id) for i in back] == [
        ("a.jpg", 1),
        ("b.jpg", 7),
        ("k.jpg", 3),
    ]
    expected = [images[0].predictions, images[1][1], [person]]
    for image, want in zip(back, expected, strict=True):
        assert len(image.predictions) == len(want)
        for got, ref in zip(image.predictions, want, strict=True):
            assert got == ref  # dataclass equality: type, label, coords, mask, ...


def test_from_coco_reads_foreign_segmentations():
    two = [[10, 10, 30, 10, 30, 30, 10, 30], [50, 50, 70, 50, 70, 60, 50, 60]]
    mask = np.zeros((H, W), np.uint8)
    mask[5:9, 3:7] = 1
    uncompressed = {"size": [H, W], "counts": [int(v) for v in _runs(mask)]}
    dataset = {
        "images": [{"id": 1, "file_name": "f.jpg", "width": W, "height": H}],
        "categories": [{"id": 5, "name": "blob"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 5,
                "bbox": [10, 10, 60, 50],
                "segmentation": two,
                "iscrowd": 0,
                "area": 600,
            },
            {
                "id": 2,
                "image_id": 1,
                "category_id": 5,
                "segmentation": uncompressed,
                "iscrowd": 1,
                "area": 16,
            },
        ],
    }
    first, second = from_coco(dataset)[0].predictions
    assert first.type is RegionType.BOX and masks.rle_area(first.mask) == 400 + 200
    assert second.coords == (3.0, 5.0, 7.0, 9.0)
    assert masks.rle_area(second.mask) == 16


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major, starting with background)."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat:
        if value != current:
            counts.append(run)
            current, run = value, 0
        run += 1
    counts.append(run)
    return counts


def test_from_coco_names_dangling_references():
    dataset = {
        "images": [],
        "categories": [],
        "annotations": [
            {"id": 9, "image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}
        ],
    }
    with pytest.raises(CocoError, match="annotation 9"):
        from_coco(dataset)
