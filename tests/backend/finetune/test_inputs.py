"""Where ``rexlabel finetune --from`` reads tasks and images: COCO files as
Label Studio tasks, and images looked up by file name inside ``--images``."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from backend.finetune.inputs import (
    COCO_FROM_NAME,
    FinetuneInputError,
    coco_source,
    is_coco,
    local_loader,
)
from backend.finetune.prepare import PrepareOptions, prepare_data
from backend.planner import plan_config
from common.finetune_data import read_split
from common.images.errors import ImageLoadError

COCO = {
    "images": [
        {"id": 5, "file_name": "a.png", "width": 200, "height": 100},
        {"id": 6, "file_name": "b.png", "width": 200, "height": 100},
        {"id": 7, "file_name": "c.png", "width": 200, "height": 100},
    ],
    "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": 'dog "rex"'}],
    "annotations": [
        {"id": 1, "image_id": 5, "category_id": 1, "bbox": [20, 10, 40, 30]},
        {"id": 2, "image_id": 5, "category_id": 2, "bbox": [100, 50, 50, 50]},
        {"id": 3, "image_id": 6, "category_id": 1, "bbox": [0, 0, 10, 10]},
        {"id": 4, "image_id": 6, "category_id": 2, "bbox": [5, 5, 9, 9], "iscrowd": 1},
    ],
}


def _write(tmp_path, body, name="coco.json"):
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


@pytest.fixture
def images_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for n, name in enumerate(("a.png", "b.png", "c.png")):
        Image.new("RGB", (200, 100), (50 * n, 100, 100)).save(folder / name)
    return folder


# --- COCO ------------------------------------------------------------------------


def test_a_coco_file_becomes_rectangle_tasks_and_a_config(tmp_path, images_dir):
    source = coco_source(_write(tmp_path, COCO), images_dir)
    tasks = list(source.tasks)
    assert [t["id"] for t in tasks] == [5, 6, 7]
    assert [t["data"]["image"] for t in tasks] == ["a.png", "b.png", "c.png"]
    first = tasks[0]["annotations"][0]["result"]
    assert [r["value"]["rectanglelabels"] for r in first] == [["car"], ['dog "rex"']]
    assert first[0]["value"] | {"rotation": 0} == {
        "x": 10.0, "y": 10.0, "width": 20.0, "height": 30.0, "rotation": 0,
        "rectanglelabels": ["car"],
    }  # fmt: skip
    assert (first[0]["original_width"], first[0]["original_height"]) == (200, 100)
    assert len(tasks[1]["annotations"][0]["result"]) == 1  # the crowd box is left out
    assert tasks[2]["annotations"][0]["result"] == []  # nothing in it: all absent
    plan = plan_config(source.label_config)  # the label config is a real one
    (control,) = plan.controls
    assert control.control == COCO_FROM_NAME
    assert control.label_map.labels == ["car", 'dog "rex"']
    assert source.description == {"from": str(tmp_path / "coco.json"), "format": "coco"}


def test_a_coco_file_prepares_into_examples(tmp_path, images_dir):
    source = coco_source(_write(tmp_path, COCO), images_dir)
    data = tmp_path / "data"
    prepared = prepare_data(
        source.tasks,
        plan_config(source.label_config),
        source.load_image,
        data,
        PrepareOptions(val_split=0.0, replay_phrases=(), visual_prompt_share=0.0),
    )
    assert prepared.counts["train"] == 3
    by_task = {r.task_id: r for r in read_split(data, "train")}
    assert [r["coords"] for r in by_task[5].regions] == [
        pytest.approx([20, 10, 60, 40], abs=0.3),
        pytest.approx([100, 50, 150, 100], abs=0.3),
    ]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda c: c.pop("categories"), "needs 'categories'"),
        (lambda c: c.update(categories=[{"id": 1}]), "needs 'categories'"),
        (lambda c: c.pop("images"), "needs an 'images' list"),
        (
            lambda c: c["annotations"][0].update(category_id=9),
            "annotation 1 has unknown category 9",
        ),
        (lambda c: c["annotations"][2].pop("bbox"), "annotation 3 has no bbox"),
        (
            lambda c: c["annotations"][2].update(bbox=[1, 2, 3]),
            "annotation 3 has no bbox",
        ),
        (
            lambda c: c["annotations"][2].update(bbox=[1, "x", 3, 4]),
            "annotation 3 has no bbox",
        ),
        (lambda c: c["images"][0].pop("width"), "image 5 has no width/height"),
        (lambda c: c["images"][1].update(height=0), "image 6 has no width/height"),
        (lambda c: c["images"][1].update(height=True), "image 6 has no width/height"),
        (
            lambda c: c["annotations"][2].update(bbox=[1, 2, 3, float("nan")]),
            "annotation 3 has no bbox",
        ),
        (lambda c: c["images"].append("x.png"), r"images\[3\] is not an object"),
    ],
)
def test_a_bad_coco_file_is_refused_naming_the_bad_part(
    tmp_path, images_dir, change, says
):
    coco = json.loads(json.dumps(COCO))
    change(coco)
    path = _write(tmp_path, coco)
    with pytest.raises(FinetuneInputError, match=says) as caught:
        list(coco_source(path, images_dir).tasks)
    assert str(path) in str(caught.value)


def test_a_coco_file_that_is_not_json_is_refused(tmp_path, images_dir):
    with pytest.raises(FinetuneInputError, match="--from"):
        coco_source(_write(tmp_path, "{oops"), images_dir)


def test_coco_files_are_told_from_label_studio_exports(tmp_path):
    assert is_coco(_write(tmp_path, COCO))
    assert not is_coco(_write(tmp_path, [{"id": 1, "data": {}}], "export.json"))
    lines = '{"id": 1, "data": {}}\n{"id": 2, "data": {}}\n'
    assert not is_coco(_write(tmp_path, lines, "export.jsonl"))  # JSON lines


# --- images by file name -----------------------------------------------------------


def test_local_loader_finds_an_image_by_the_references_file_name(images_dir):
    load = local_loader(images_dir)
    for ref in (
        "a.png",
        "/data/upload/1/a.png",
        "http://ls:8080/data/upload/3/a.png?token=1",
        "s3://bucket/some/folder/a.png",
        "/data/local-files/?d=exports/images/a.png",
        "http://ls:8080/data/local-files/?d=a.png",
        "http://cdn.example/a.png?d=2024",
        "/data/upload/1/a%2Epng",
    ):
        image = load(ref, 1)
        assert image.size == (200, 100) and image.mode == "RGB", ref


@pytest.mark.parametrize(
    "ref",
    [
        "/data/upload/1/../../etc/passwd",
        "file:///etc/passwd",
        "../../../../etc/passwd",
        "/data/upload/1/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/data/local-files/?d=../../etc/passwd",
    ],
)
def test_local_loader_never_leaves_the_images_directory(tmp_path, images_dir, ref):
    (tmp_path / "passwd").write_text("root:x:0:0")  # beside, not in, --images
    with pytest.raises(ImageLoadError, match="passwd is not in --images"):
        local_loader(images_dir)(ref, 1)


@pytest.mark.parametrize("ref", ["", "/data/upload/1/", "..", "http://host/"])
def test_a_reference_without_a_file_name_is_refused(images_dir, ref):
    with pytest.raises(ImageLoadError, match="names no file"):
        local_loader(images_dir)(ref, 1)


def test_a_missing_or_unreadable_image_is_an_image_load_error(images_dir):
    (images_dir / "broken.png").write_bytes(b"not a png")
    load = local_loader(images_dir)
    with pytest.raises(ImageLoadError, match=r"gone\.png is not in --images"):
        load("/data/upload/1/gone.png", 1)
    with pytest.raises(ImageLoadError, match="cannot read"):
        load("broken.png", 1)


def test_images_must_be_a_directory(tmp_path):
    with pytest.raises(FinetuneInputError, match=r"--images .*not a directory"):
        local_loader(tmp_path / "nowhere")
