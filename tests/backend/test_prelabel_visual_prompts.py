"""``rexlabel prelabel --task visual_prompting`` on a folder (issue 11 point 8).

Rex-Omni finds things like the boxed ones *in the same image*, so every image
is prompted with its own reference boxes (``--reference-boxes``: JSON lines or
a COCO file), an image without any is skipped and counted, results carry the
category's name (not the model's ``object_1``) and the COCO file holds that
category with its annotations. The model is FakeChat (an OpenAI-compatible
fake answering one ``object_1`` box) behind the real openai engine, so the
requests show which boxes each image was prompted with.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from backend.cli import main
from converters.prompts import visual_prompt_text
from tests.security.conftest import MODEL_ID, FakeChat
from worker import jobs
from worker.engines.registry import create_engine
from worker.jobs import WorkerRuntime

OBJECT_1_ANSWER = (
    "<|object_ref_start|>object_1<|object_ref_end|>"
    "<|box_start|><100><100><400><400><|box_end|><|im_end|>"
)
"""A visual-prompting answer as Rex-Omni writes it: the prompt's key as phrase."""
IMAGES = {
    "a.png": ((200, 100), (220, 20, 20)),
    "b.png": ((160, 120), (20, 20, 220)),
    "c.png": ((120, 90), (20, 200, 20)),
}
"""Name -> (size, colour): the colour tells which image a request carried."""


@pytest.fixture
def chat(tmp_path, monkeypatch):
    monkeypatch.setenv("REXLABEL_JOBS_DIR", str(tmp_path / "jobs"))
    for name in ("REDIS_URL", "SAM_CHECKPOINT", "REXLABEL_QUANTIZATION"):
        monkeypatch.delenv(name, raising=False)
    with FakeChat(OBJECT_1_ANSWER) as fake:
        engine = create_engine("openai", model=MODEL_ID, base_url=fake.api_url)
        previous = jobs.install_runtime(WorkerRuntime(engine=engine))
        try:
            yield fake
        finally:
            jobs.install_runtime(previous)


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, (size, colour) in IMAGES.items():
        Image.new("RGB", size, colour).save(folder / name)
    return folder


def _prompts_by_image(fake: FakeChat) -> dict[str, list[str]]:
    """The prompt texts FakeChat was asked, per image (known by its colour)."""
    by_colour = {colour: name for name, (_, colour) in IMAGES.items()}
    found: dict[str, list[str]] = {}
    for seen in fake.seen:
        if seen.method != "POST":
            continue
        content = json.loads(seen.body)["messages"][1]["content"]
        url = next(c["image_url"]["url"] for c in content if c["type"] == "image_url")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        colour = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        name = min(
            by_colour.items(),
            key=lambda item: sum(abs(a - b) for a, b in zip(item[0], colour)),
        )[1]
        text = next(c["text"] for c in content if c["type"] == "text")
        found.setdefault(name, []).append(text)
    return found


def _prelabel(folder: Path, out: Path, *args: str) -> int:
    return main(
        [
            "prelabel",
            str(folder),
            "--task",
            "visual_prompting",
            *args,
            "--out",
            str(out),
            "--inline",
            "--quiet",
        ]
    )


def _lines(out: Path) -> dict[str, dict]:
    raw = out.with_suffix(".jsonl").read_text().splitlines()
    return {Path(line["image"]).name: line for line in map(json.loads, raw)}


def _coco_labels(out: Path) -> dict[str, list[str]]:
    """Image name -> the category names of its annotations (read by pycocotools)."""
    from pycocotools.coco import COCO

    coco = COCO(str(out))
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    return {
        Path(image["file_name"]).name: [
            names[a["category_id"]]
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        ]
        for image in coco.loadImgs(coco.getImgIds())
    }


def test_each_image_is_prompted_with_its_own_boxes_from_jsonl(
    chat, photos, tmp_path, capsys
):
    boxes = {"a.png": [[10, 10, 50, 40]], "b.png": [[20, 30, 90, 100], [5, 5, 25, 25]]}
    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        "".join(
            json.dumps({"image": f"photos/{name}", "boxes": b, "label": "widget"})
            + "\n"
            for name, b in boxes.items()
        )
    )
    out = tmp_path / "similar.json"
    code = _prelabel(
        photos, out, "--reference-boxes", str(refs), "--categories", "widget"
    )
    printed = capsys.readouterr()
    assert code == 0, printed
    # c.png has no boxes of its own: skipped and counted, never prompted
    assert "1 of 3 image(s) have no boxes in" in printed.err
    assert "c.png" in printed.err
    assert "2 done, 0 failed, 1 skipped of 3" in printed.out
    prompts = _prompts_by_image(chat)
    assert sorted(prompts) == ["a.png", "b.png"]
    for name, image_boxes in boxes.items():
        (text,) = prompts[name]
        assert visual_prompt_text(image_boxes, IMAGES[name][0]) in text
    lines = _lines(out)
    assert lines["c.png"]["status"] == "skipped"
    assert "no reference boxes" in lines["c.png"]["reason"]
    for name in boxes:
        labels = [p["label"] for c in lines[name]["calls"] for p in c["predictions"]]
        assert labels == ["widget"]
    assert _coco_labels(out) == {"a.png": ["widget"], "b.png": ["widget"]}


def _coco_refs(path: Path) -> None:
    """A COCO file of reference boxes (xywh), file names relative to photos/."""
    path.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "photos/a.png", "width": 200, "height": 100},
                    {"id": 2, "file_name": "photos/b.png", "width": 160, "height": 120},
                ],
                "categories": [
                    {"id": 1, "name": "widget"},
                    {"id": 2, "name": "gadget"},
                ],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 1,
                        "category_id": 1,
                        "bbox": [10, 10, 40, 30],
                    },
                    {"id": 2, "image_id": 1, "category_id": 2, "bbox": [60, 5, 30, 30]},
                    {
                        "id": 3,
                        "image_id": 2,
                        "category_id": 2,
                        "bbox": [20, 30, 70, 70],
                    },
                ],
            }
        )
    )


def test_coco_reference_boxes_each_category_or_the_one_named(
    chat, photos, tmp_path, capsys
):
    refs = tmp_path / "refs.coco.json"
    _coco_refs(refs)
    out = tmp_path / "all.json"
    assert _prelabel(photos, out, "--reference-boxes", str(refs)) == 0
    prompts = _prompts_by_image(chat)
    assert len(prompts["a.png"]) == 2 and len(prompts["b.png"]) == 1
    for boxes in ([[10, 10, 50, 40]], [[60, 5, 90, 35]]):  # one call per category
        expected = visual_prompt_text(boxes, (200, 100))
        assert sum(expected in text for text in prompts["a.png"]) == 1
    assert visual_prompt_text([[20, 30, 90, 100]], (160, 120)) in prompts["b.png"][0]
    labels = _coco_labels(out)
    assert sorted(labels["a.png"]) == ["gadget", "widget"]
    assert labels["b.png"] == ["gadget"]
    data = json.loads(out.read_text())
    assert [c["name"] for c in data["categories"]] == ["widget", "gadget"]

    chat.seen.clear()
    only = tmp_path / "gadgets.json"
    code = _prelabel(
        photos, only, "--reference-boxes", str(refs), "--categories", "gadget"
    )
    assert code == 0, capsys.readouterr()
    assert _coco_labels(only) == {"a.png": ["gadget"], "b.png": ["gadget"]}
    assert [c["name"] for c in json.loads(only.read_text())["categories"]] == ["gadget"]


def test_one_images_boxes_label_it_and_are_refused_for_several(
    chat, photos, tmp_path, capsys
):
    out = tmp_path / "one.json"
    code = main(
        [
            "prelabel",
            str(photos / "a.png"),
            "--task",
            "visual_prompting",
            "--visual-prompt",
            "10,10,50,40",
            "--categories",
            "widget",
            "--out",
            str(out),
            "--inline",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr()
    assert _coco_labels(out) == {"a.png": ["widget"]}
    assert [c["name"] for c in json.loads(out.read_text())["categories"]] == ["widget"]
    # the same pixel boxes on every image of a folder: refused, with the way out
    code = _prelabel(
        photos,
        tmp_path / "x.json",
        "--visual-prompt",
        "10,10,50,40",
        "--categories",
        "w",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "pixels of one image" in err and "--reference-boxes" in err


@pytest.mark.parametrize(
    ("lines", "args", "message"),
    [
        ([{"image": "photos/a.png", "boxes": [[1, 2, 3, 4]]}], [], "no 'label'"),
        (
            [{"image": "photos/a.png", "boxes": [[5, 5, 1, 1]], "label": "w"}],
            [],
            "refs.jsonl:1 'boxes': expected a box [x0, y0, x1, y1]",
        ),
        ([{"image": "photos/a.png", "label": "w"}], [], "'boxes' must be"),
        (
            [{"image": "a.png", "boxes": [[1, 2, 3, 4]], "label": "w"}],
            [],
            None,  # no image of that name among the inputs: all skipped
        ),
    ],
    ids=["no-label", "bad-box", "no-boxes", "none-matches"],
)
def test_bad_reference_files_are_named(
    chat, photos, tmp_path, capsys, lines, args, message
):
    refs = tmp_path / "refs.jsonl"
    refs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    (tmp_path / "elsewhere").mkdir()
    Image.new("RGB", (50, 50)).save(tmp_path / "elsewhere" / "z.png")
    folder = photos if message else tmp_path / "elsewhere"
    code = _prelabel(folder, tmp_path / "o.json", "--reference-boxes", str(refs), *args)
    assert code == 2
    err = capsys.readouterr().err
    assert (message or "none of the 1 image(s) has reference boxes") in err
    assert not [s for s in chat.seen if s.method == "POST"]


def test_one_entry_never_prompts_two_images(chat, photos, tmp_path, capsys):
    (photos / "sub").mkdir()
    Image.new("RGB", (200, 100), (220, 20, 20)).save(photos / "sub" / "a.png")
    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        json.dumps({"image": "a.png", "boxes": [[1, 2, 30, 40]], "label": "w"}) + "\n"
    )
    code = _prelabel(photos, tmp_path / "o.json", "--reference-boxes", str(refs))
    assert code == 2
    assert "match both" in capsys.readouterr().err
    assert not [s for s in chat.seen if s.method == "POST"]


def test_predict_labels_a_visual_prompt_and_takes_one_image(
    photos, tmp_path, monkeypatch, capsys
):
    """``rexlabel predict`` is the same class of call: one image, named results."""
    monkeypatch.delenv("REXLABEL_QUANTIZATION", raising=False)
    with FakeChat(OBJECT_1_ANSWER) as fake:
        monkeypatch.setenv("REXLABEL_OPENAI_URL", fake.api_url)
        args = ["predict", "--engine", "openai", "--model", MODEL_ID, "--json"]
        vp = ["--task", "visual_prompting", "--box", "10,10,50,40"]
        code = main([*args, str(photos / "a.png"), *vp, "--categories", "widget"])
        report = json.loads(capsys.readouterr().out)
        assert code == 0
        (image,) = report["images"]
        assert [p["label"] for p in image["predictions"]] == ["widget"]
        posts = [s for s in fake.seen if s.method == "POST"]
        code = main([*args, str(photos / "a.png"), str(photos / "b.png"), *vp])
        assert code == 2 and "pixels of one image" in capsys.readouterr().err
        two = ["--categories", "cup,mug"]  # one name labels all: never a silent pick
        code = main([*args, str(photos / "a.png"), *vp, *two])
        assert code == 2 and "one --categories name" in capsys.readouterr().err
        assert len([s for s in fake.seen if s.method == "POST"]) == len(posts)
