"""``rexlabel prelabel --project``: a Label Studio project pre-labeled as a job.

Against a local fake of Label Studio's REST API (tests/fake_label_studio.py)
that also serves the task images behind its auth; chunks run in this process
on the tiny model. Checked: one prediction per task with the backend's
``model_version``, tasks that already have one skipped, views, no duplicates
after a crash between posting and recording, failed tasks retried. (The same
functions against a real Label Studio: tests/e2e.)
"""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from backend.bulk import start_for_tasks
from backend.bulk.store import JobDir
from backend.cli import main
from backend.model_version import model_version
from common.images import loader as image_loader
from tests.fake_label_studio import FakeLabelStudio
from worker import jobs
from worker.jobs import WorkerRuntime

CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    '<Label value="red square"/><Label value="blue circle"/></RectangleLabels></View>'
)
PROJECT = 7
MAX_NEW_TOKENS = 32
"""Enough for a box or two; the random model would otherwise write 4,096 tokens."""


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (112, 96), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def tiny_runtime(tiny_engine):
    previous = jobs.install_runtime(WorkerRuntime(engine=tiny_engine))
    yield
    jobs.install_runtime(previous)


@pytest.fixture
def ls(tmp_path, monkeypatch, tiny_runtime):
    with FakeLabelStudio() as server:
        server.add_project(PROJECT, CONFIG)
        for task_id in range(1, 11):
            name = f"{PROJECT}/t{task_id}.png"
            server.files[name] = _png("red" if task_id % 2 else "blue")
            server.add_task(PROJECT, task_id, {"image": f"/data/upload/{name}"})
        server.add_view(PROJECT, 2, "Evens", [2, 4, 6])
        monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.pat)
        monkeypatch.setenv("REXLABEL_JOBS_DIR", str(tmp_path / "jobs"))
        # the random tiny model rarely stops by itself: keep its answers short
        monkeypatch.setenv("REXLABEL_MAX_NEW_TOKENS", str(MAX_NEW_TOKENS))
        for name in ("REDIS_URL", "SAM_CHECKPOINT"):
            monkeypatch.delenv(name, raising=False)
        image_loader.default_loader.cache_clear()  # it read the old URL/token
        yield server
        image_loader.default_loader.cache_clear()


def _version() -> str:
    return model_version(CONFIG, {})


def _per_task(ls) -> dict[int, list[dict]]:
    return {t: ls.predictions_of(t) for t in sorted(ls.tasks)}


def test_project_job_posts_one_prediction_per_task(ls, capsys):
    ls.add_prediction(3, [], _version())  # already pre-labeled: left alone
    ls.add_prediction(4, [], "some-other-model")
    assert (
        main(
            [
                "prelabel",
                "--project",
                str(PROJECT),
                "--inline",
                "--quiet",
                "--chunk-size",
                "4",
            ]
        )
        == 0
    )
    printed = capsys.readouterr()
    assert "9 done" in printed.out
    for task_id, predictions in _per_task(ls).items():
        mine = [p for p in predictions if p["model_version"] == _version()]
        assert len(mine) == 1, (task_id, predictions)
        for region in mine[0]["result"]:
            assert region["from_name"] == "label" and region["to_name"] == "image"
            assert region["type"] == "rectanglelabels"
            assert region["value"]["rectanglelabels"][0] in (
                "red square",
                "blue circle",
            )
            assert (region["original_width"], region["original_height"]) == (112, 96)
    # images were fetched through Label Studio with an exchanged access token
    assert "/api/token/refresh/" in ls.paths_requested("POST")
    # a second run has nothing to do and posts nothing
    before = len(ls.predictions)
    assert main(["prelabel", "--project", str(PROJECT), "--inline", "--quiet"]) == 0
    assert "nothing to pre-label" in capsys.readouterr().out
    assert len(ls.predictions) == before


def test_view_limits_the_tasks(ls):
    assert (
        main(
            [
                "prelabel",
                "--project",
                str(PROJECT),
                "--view",
                "evens",
                "--inline",
                "--quiet",
            ]
        )
        == 0
    )
    posted = {t for t, preds in _per_task(ls).items() if preds}
    assert posted == {2, 4, 6}


def test_crash_between_posting_and_recording_never_posts_twice(ls, monkeypatch):
    calls = {"n": 0}
    real = JobDir.write_part

    def crash_on_second_chunk(self, chunk, lines):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the CLI dies after posting chunk 1
        return real(self, chunk, lines)

    monkeypatch.setattr(JobDir, "write_part", crash_on_second_chunk)
    code = main(
        [
            "prelabel",
            "--project",
            str(PROJECT),
            "--inline",
            "--quiet",
            "--chunk-size",
            "3",
        ]
    )
    assert code == 130
    posted_before = {t for t, preds in _per_task(ls).items() if preds}
    assert posted_before == {1, 2, 3, 4, 5, 6}  # chunk 1 posted, not recorded
    monkeypatch.setattr(JobDir, "write_part", real)
    assert (
        main(
            [
                "prelabel",
                "--project",
                str(PROJECT),
                "--inline",
                "--quiet",
                "--chunk-size",
                "3",
            ]
        )
        == 0
    )
    assert all(len(preds) == 1 for preds in _per_task(ls).values())


def test_failed_tasks_are_not_posted_and_retry_alone(ls, capsys):
    missing = f"{PROJECT}/t5.png"
    saved = ls.files.pop(missing)
    assert main(["prelabel", "--project", str(PROJECT), "--inline", "--quiet"]) == 3
    printed = capsys.readouterr().out
    assert "1 failed" in printed and "t5.png" in printed
    assert ls.predictions_of(5) == []
    ls.files[missing] = saved
    posted = len(ls.predictions)
    assert (
        main(
            [
                "prelabel",
                "--project",
                str(PROJECT),
                "--inline",
                "--quiet",
                "--retry-failed",
            ]
        )
        == 0
    )
    assert len(ls.predictions) == posted + 1
    assert len(ls.predictions_of(5)) == 1


def test_a_chunk_that_times_out_posts_nothing_and_is_retried(ls, tiny_engine, capsys):
    def process(runtime, images, generation):
        """Like RQ stopping a chunk past its timeout, for the chunk of task 5."""
        if any(image.task_id == 5 for image in images):
            raise TimeoutError("the chunk ran past its 600 s timeout")
        return jobs.process_images(runtime, images, generation)

    previous = jobs.install_runtime(WorkerRuntime(engine=tiny_engine, process=process))
    try:
        args = ["prelabel", "--project", str(PROJECT), "--inline", "--quiet"]
        assert main([*args, "--chunk-size", "2"]) == 3
    finally:
        jobs.install_runtime(previous)
    printed = capsys.readouterr().out
    assert "8 done, 2 failed" in printed and "ran past its 600 s timeout" in printed
    # Neither task of the timed-out chunk got a prediction (not even an empty
    # one): they are not done, and --retry-failed runs them again.
    assert ls.predictions_of(5) == ls.predictions_of(6) == []
    assert all(len(ls.predictions_of(t)) == 1 for t in ls.tasks if t not in (5, 6))
    assert main([*args, "--retry-failed"]) == 0
    assert len(ls.predictions_of(5)) == len(ls.predictions_of(6)) == 1


def test_backend_hands_big_predicts_to_a_background_job(ls, tmp_path):
    tasks = [{"id": t, "data": ls.tasks[t]["data"]} for t in (1, 2, 3)]
    job_id = start_for_tasks(
        tasks,
        project=str(PROJECT),
        label_config=CONFIG,
        extra_params={},
        model_version="rexlabel-test",
        source="predict",
        background=False,
    )
    assert job_id.startswith("project-")
    for task_id in (1, 2, 3):
        assert [p["model_version"] for p in ls.predictions_of(task_id)] == [
            "rexlabel-test"
        ]
    record = json.loads((tmp_path / "jobs" / job_id / "status.json").read_text())
    assert record["status"] == "done" and record["done"] == 3


def test_files_and_project_cannot_be_mixed(ls, tmp_path, capsys):
    assert main(["prelabel", "--project", "7", str(tmp_path), "--inline"]) == 2
    assert "--project takes no images" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--task", "keypoint", "--categories", "person"], "--keypoint-type"),
        (["--task", "visual_prompting"], "--visual-prompt"),
        (["--task", "detection"], "--categories"),
        (["--task", "flying"], "Unknown task"),
        (["--task", "visual_prompting", "--visual-prompt", "1,2,3"], "x0,y0,x1,y1"),
        (["--task", "detection", "--categories", "a"], "--out is required"),
        (
            ["--task", "detection", "--categories", "a", "--tile-size", "9"],
            "--tile-size 9: must be a whole number of pixels, at least 112",
        ),
    ],
)
def test_bad_options_are_named(tmp_path, capsys, args, message):
    (tmp_path / "a.png").write_bytes(_png("red"))
    assert main(["prelabel", str(tmp_path / "a.png"), *args]) == 2
    assert message in capsys.readouterr().err


def test_every_task_option_builds_a_valid_call(tmp_path):
    from backend.cli import build_parser
    from backend.commands.prelabel import call_from_args

    parser = build_parser()

    def call(*args):
        return call_from_args(parser.parse_args(["prelabel", "x.png", *args]))

    assert call("--task", "keypoint", "--keypoint-type", "hand")["categories"] == [
        "hand"
    ]
    vp = call(
        "--task",
        "visual_prompting",
        "--visual-prompt",
        "1,2,30,40;5,5,9,9",
        "--categories",
        "widget",
    )
    assert vp["visual_prompt_boxes"] == [[1, 2, 30, 40], [5, 5, 9, 9]]
    assert vp["categories"] == ["widget"]
    ocr = call("--task", "ocr_polygon", "--categories", "text line")
    assert ocr["task"] == "ocr_polygon" and ocr["categories"] == ["text line"]
    gui = call("--task", "gui_pointing", "--categories", "the OK button")
    assert gui["task"] == "gui_pointing"
    masked = call(
        "--task",
        "detection",
        "--categories",
        "car",
        "--masks",
        "--score-threshold",
        "0.3",
        "--max-new-tokens",
        "99",
    )
    assert masked["masks"] == "rle" and masked["score_threshold"] == 0.3
    assert masked["generation"] == {"max_new_tokens": 99}
    assert "tile" not in masked  # the worker's REXLABEL_TILE* settings decide
    tiled = call("--task", "detection", "--categories", "car", "--tile", "on")
    assert tiled["tile"] == {"mode": "on"}
    sized = call("--task", "ocr_box", "--categories", "word", "--tile-size", "896")
    assert sized["tile"] == {"size": 896}


@pytest.mark.parametrize(
    "args",
    [
        ["--task", "pointing", "--categories", "red square"],
        ["--task", "keypoint", "--keypoint-type", "person", "--categories", "person"],
        ["--task", "ocr_box", "--categories", "word"],
        ["--task", "ocr_polygon", "--categories", "text line"],
        ["--task", "visual_prompting", "--reference-boxes", "REFS"],
        ["--task", "gui_grounding", "--categories", "the OK button"],
        ["--task", "gui_pointing", "--categories", "the OK button"],
    ],
    ids=lambda args: args[1],
)
def test_every_task_runs_as_a_files_job(
    tiny_runtime, tmp_path, monkeypatch, capsys, args
):
    from pycocotools.coco import COCO

    monkeypatch.setenv("REXLABEL_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        (folder / f"p{i}.png").write_bytes(_png("red" if i else "blue"))
    if "REFS" in args:  # visual prompting: each image its own reference box
        refs = tmp_path / "refs.jsonl"
        refs.write_text(
            "".join(
                json.dumps({"image": f"photos/p{i}.png", "boxes": [[10, 10, 60, 50]]})
                + "\n"
                for i in range(2)
            )
        )
        args = [str(refs) if a == "REFS" else a for a in args]
        args += ["--categories", "blob"]
    out = tmp_path / "out.json"
    code = main(
        [
            "prelabel",
            str(folder),
            *args,
            "--max-new-tokens",
            "32",
            "--out",
            str(out),
            "--draw",
            str(tmp_path / "previews"),
            "--inline",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr()
    coco = COCO(str(out))
    assert len(coco.dataset["images"]) == 2
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["calls"][0]["task"] for line in lines] == [args[1]] * 2
    assert all(line["calls"][0]["raw_text"] for line in lines)
    assert len(list((tmp_path / "previews").glob("*.jpg"))) == 2


def test_a_project_job_plans_with_the_connected_models_extra_params(ls, capsys):
    """The thresholds `evaluate --apply-thresholds` writes to the connected
    model reach bulk jobs too, filed under the version /predict would use."""
    extra = {"model_score_thresholds": {"red square": 0.99}}
    ls.add_ml_backend(PROJECT, 1, "http://rexlabel:9090", extra_params=extra)
    args = ["prelabel", "--project", str(PROJECT), "--inline", "--quiet"]
    assert main(args) == 0
    versions = {p["model_version"] for p in ls.predictions}
    assert versions == {model_version(CONFIG, extra)} != {_version()}
    capsys.readouterr()
    ls.add_ml_backend(PROJECT, 2, "http://other:9090")
    assert main([*args, "--model-version", "v2"]) != 0
    assert "2 models connected (ML backends 1, 2)" in capsys.readouterr().err
    # naming the params settles it
    assert main([*args, "--model-version", "v2", "--extra-params", "{}"]) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [("{not json", "--extra-params is not JSON"), ("[1]", "must be a JSON object")],
)
def test_bad_extra_params_are_named(capsys, value, message):
    assert main(["prelabel", "--project", "7", "--extra-params", value]) == 2
    assert message in capsys.readouterr().err
