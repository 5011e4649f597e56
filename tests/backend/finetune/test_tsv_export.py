"""Upstream's SFT files: our files parse with a reader written from upstream's
README, and hold the boxes (and bins) of our detection examples."""

from __future__ import annotations

import io
import json
import re
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from backend.cli import main
from backend.finetune import ExampleStats, iter_examples
from backend.finetune.export import export_rexomni_tsv
from backend.finetune.tsv import encode_image
from backend.planner import plan_config
from common.images.errors import ImageNotFound
from converters.tasks import Task
from tests.backend.finetune.helpers import H, W, point, rect
from tests.backend.finetune.upstream_tsv import grounding_bins, read_samples
from tests.backend.planner.helpers import view
from tests.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio

CONFIG = view(
    '<RectangleLabels name="label" toName="image">'
    '<Label value="Car" predicted_values="car,truck"/><Label value="Dog"/>'
    '<Label value="Sea_Lion"/></RectangleLabels>',
    '<KeyPointLabels name="kp" toName="image"><Label value="Apple"/></KeyPointLabels>',
)
GROUP = re.compile(
    r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|><\|box_start\|>(.*?)<\|box_end\|>"
)


def _answer_bins(answer: str) -> dict[str, list]:
    """The boxes of a detection answer by phrase (None groups left out)."""
    found = {}
    for phrase, body in GROUP.findall(answer):
        if body != "None":
            found[phrase] = [
                tuple(int(v) for v in re.findall(r"<(\d+)>", item))
                for item in body.split(",")
            ]
    return found


def _picture(seed: int, size=(W, H)) -> Image.Image:
    """A smooth picture of its own per seed (gradients, as photos are)."""
    width, height = size
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    pixels = np.stack([x, y, np.full_like(x, 20 * seed % 256)], axis=-1)
    return Image.fromarray(pixels.astype(np.uint8))


def _noise(seed: int) -> Image.Image:
    """Random pixels: the largest JPEG a picture of this size makes."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8))


def _task(task_id, result, image=None):
    return {
        "id": task_id,
        "data": {"image": image or f"/data/upload/1/{task_id}.png"},
        "annotations": [{"result": result, "was_cancelled": False}],
    }


TASKS = [
    _task(
        1,
        [
            rect("c1", 20, 30, 100, 90, "Car"),
            rect("c2", 300, 10, 380, 60, "Car"),
            rect("d1", 150, 40, 190, 180, "Dog"),
            point("a1", 40, 50, "Apple"),
        ],
    ),
    _task(2, [point("a2", 10, 10, "Apple")]),  # points only: no sample
    _task(3, [rect("s1", 0, 0, 410, 100, "Sea_Lion")]),  # clipped to the image
    {"id": 4, "data": {"image": "/data/upload/1/4.png"}, "annotations": []},
]


def _export(tmp_path, tasks=TASKS, load=None):
    return export_rexomni_tsv(
        tasks,
        plan_config(CONFIG),
        tmp_path,
        name="demo",
        load_image=load or (lambda image: _picture(image.task_id)),
    )


def test_the_files_parse_with_upstreams_reader_and_hold_our_examples(tmp_path):
    export = _export(tmp_path)
    samples = list(read_samples(tmp_path / "demo"))
    assert [s[1]["task_id"] for s in samples] == [1, 3]
    # the detection examples the builder makes from the same tasks
    stats = ExampleStats()
    detections = {
        e.task_id: e
        for e in iter_examples(TASKS, plan_config(CONFIG), stats, visual_prompts=False)
        if e.task is Task.DETECTION
    }
    for image, annotation in samples:
        example = detections[annotation["task_id"]]
        assert image.size == (example.width, example.height)
        assert annotation["image"] == example.image
        # upstream bins our boxes into exactly our answer's boxes
        ours = _answer_bins(example.answer)
        assert grounding_bins(annotation, *image.size) == ours
    first = samples[0][1]
    assert [(b["phrase"], b["bbox"]) for b in first["boxes"]] == [
        ("car", pytest.approx([20, 30, 100, 90])),
        ("car", pytest.approx([300, 10, 380, 60])),
        ("Dog", pytest.approx([150, 40, 190, 180])),
    ]
    assert samples[1][1]["boxes"][0]["bbox"] == pytest.approx([0, 0, 400, 100])
    # JPEG at high quality: the pixels survive closely
    original = np.asarray(_picture(1), dtype=float)
    assert np.abs(np.asarray(samples[0][0], dtype=float) - original).mean() < 2
    assert (export.images_written, export.boxes) == (2, 4)
    assert export.images_without_boxes == 1
    assert export.stats.skipped_no_annotation == 1
    assert export.phrases == ["car", "truck", "Dog", "Sea_Lion"]
    warnings = "\n".join(export.stats.warnings)
    assert "'Sea_Lion': upstream's trainer rewrites it" in warnings
    assert "task 3 region 's1': box clipped to the image" in warnings


def test_the_files_are_ascii_lines_with_one_tab(tmp_path):
    tasks = [_task(1, [rect("c", 10, 10, 90, 90, "Dog")], image="/data/upload/1/é.png")]
    export = _export(tmp_path, tasks)
    for key in ("images", "annotations"):
        data = export.files[key].read_bytes()
        data.decode("ascii")
        assert all(line.count(b"\t") == 1 for line in data.splitlines())
    index = export.files["lineidx"].read_text().split()
    assert index == ["0"]
    manifest = json.loads(export.files["manifest"].read_text())
    assert manifest["files"]["images"] == "demo.images.tsv"
    assert manifest["images_written"] == 1 and manifest["boxes"] == 1
    annotation = next(read_samples(tmp_path / "demo"))[1]
    assert annotation["image"] == "/data/upload/1/é.png"


def test_boxes_follow_the_stored_image_when_its_size_differs(tmp_path):
    export = _export(
        tmp_path, TASKS[:1], load=lambda image: _picture(1, (W // 2, H // 2))
    )
    image, annotation = next(read_samples(tmp_path / "demo"))
    assert image.size == (W // 2, H // 2)
    assert annotation["boxes"][2]["bbox"] == pytest.approx([75, 20, 95, 90])
    assert "annotated at 400x200, the image is 200x100" in export.stats.warnings[-1]


def test_an_unreadable_image_is_skipped_and_counted(tmp_path):
    def load(image):
        if image.task_id == 1:
            raise ImageNotFound(f"{image.ref!r} does not exist")
        return _picture(image.task_id)

    export = _export(tmp_path, load=load)
    assert [a["task_id"] for _, a in read_samples(tmp_path / "demo")] == [3]
    assert export.stats.skipped_no_image == 1


def test_a_failed_export_leaves_no_files(tmp_path):
    def load(image):
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        _export(tmp_path, load=load)
    assert list(tmp_path.iterdir()) == []


def test_images_stream_through_one_at_a_time(tmp_path):
    """Peak memory stays near one image's encoded line however many are written."""
    count = 30
    tasks = [_task(i, [rect("d", 10, 10, 90, 90, "Dog")]) for i in range(count)]
    one = len(encode_image(_noise(0)))  # one image's base64 line
    _export(tmp_path / "warm", tasks[:1], load=lambda image: _noise(0))  # imports
    tracemalloc.start()
    try:
        _export(tmp_path, tasks, load=lambda image: _noise(image.task_id))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "demo.images.tsv").stat().st_size > count * one * 0.9
    assert peak < 6 * one


def test_export_command_writes_a_project_from_label_studio(
    tmp_path, monkeypatch, capsys
):
    with FakeLabelStudio() as ls:
        ls.add_project(4, CONFIG)
        for task in TASKS:
            ls.add_task(4, task["id"], task["data"])
            ls.tasks[task["id"]]["annotations"] = task["annotations"]
            buffer = io.BytesIO()
            _picture(task["id"]).save(buffer, format="PNG")
            ls.files[f"1/{task['id']}.png"] = buffer.getvalue()
        monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", LEGACY_TOKEN)
        out = tmp_path / "sft"
        code = main(
            ["export", "--project", "4", "--to", "rexomni-tsv", "--out", str(out)]
        )
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "2 images, 4 boxes from 4 tasks" in printed
    assert "1 without annotation" in printed and "1 without boxes" in printed
    samples = list(read_samples(out / "project-4"))
    assert [a["task_id"] for _, a in samples] == [1, 3]
    assert np.array_equal(np.asarray(samples[1][0]).shape, (H, W, 3))
    assert json.loads((out / "manifest.json").read_text())["phrases"][0] == "car"


def test_export_tsv_refuses_predictions(tmp_path, capsys):
    code = main(
        [
            "export",
            "--project",
            "1",
            "--to",
            "rexomni-tsv",
            "--out",
            str(tmp_path),
            "--predictions",
        ]
    )
    assert code == 2
    assert "exports annotations" in capsys.readouterr().err
