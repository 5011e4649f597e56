"""Bulk jobs (backend.bulk): images in, COCO out, through real Redis and real
``rexlabel worker`` processes on the tiny model; resume after a killed worker,
an interrupted or killed CLI and an emptied Redis; cancel; retry of failures.

Every end-to-end test checks the outputs hold exactly the input images, each
once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from pycocotools.coco import COCO

from backend.bulk.progress import ProgressMeter, format_eta
from backend.bulk.sources import SourceError, expand_inputs
from backend.bulk.store import DELIVERED_NAME, JobBusyError, JobDir, JobSpec, JobStore
from backend.bulk.writers import CocoStreamWriter
from backend.cli import main
from converters.coco import to_coco
from converters.prediction import Prediction
from tests.backend.bulk_helpers import (
    Workers,
    cli,
    coco_file_names,
    empty_db,
    make_images,
    raw_lines,
    redis_or_skip,
    redis_url,
    wait_for,
)
from tests.worker.rq_helpers import worker_env
from worker import jobs
from worker.jobs import WorkerRuntime

DETECT = [
    "--task",
    "detection",
    "--categories",
    "red square,blue circle",
    "--max-new-tokens",
    "48",
]


# Sources, store, writers, progress (no model) -----------------------------------


def test_inputs_expand_in_a_deterministic_order(tmp_path):
    images = make_images(tmp_path / "a", 4)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    extra = make_images(tmp_path / "b", 2, nested=False)
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        json.dumps("b/img000.png")
        + "\n"
        + json.dumps({"image": "https://example.com/x.jpg"})
        + "\n\n"
    )
    refs = list(
        expand_inputs(
            [str(tmp_path / "a"), str(tmp_path / "b" / "*.png"), str(manifest)]
        )
    )
    walk = [
        str(p)
        for p in sorted(images, key=lambda p: (p.parent != images[0].parent, p.name))
    ]
    assert refs[:4] == walk
    assert refs[4:6] == [str(p) for p in extra]
    assert refs[6:] == [str(extra[0]), "https://example.com/x.jpg"]
    assert list(expand_inputs([str(tmp_path / "a")])) == refs[:4]  # same again


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "nope"), "not a file, folder, glob or URL"),
        (lambda d: str(d / "*.gif"), "matches no image"),
        (lambda d: (d / "empty").mkdir() or str(d / "empty"), "holds no image"),
        (
            lambda d: (d / "m.jsonl").write_text('{"x": 1}\n') and str(d / "m.jsonl"),
            "m.jsonl:1",
        ),
    ],
)
def test_bad_inputs_are_named(tmp_path, make, message):
    with pytest.raises(SourceError, match=message):
        list(expand_inputs([make(tmp_path)]))


def _spec(**changes):
    base = {
        "kind": "files",
        "total": 3,
        "inputs_digest": "abc",
        "chunk_size": 2,
        "calls": [{"task": "detection", "categories": ["a"]}],
    }
    return JobSpec(**{**base, **changes})


def test_job_id_follows_the_inputs_and_a_job_is_stored_once(tmp_path):
    store = JobStore(tmp_path)
    images = [{"id": str(i), "image": f"/x/{i}.png"} for i in range(3)]
    first = store.create(_spec(), iter(images))
    again = store.create(_spec(), iter(()))  # found, the images are not re-read
    assert first.root == again.root and first.id.startswith("files-")
    assert (
        _spec(calls=[{"task": "detection", "categories": ["b"]}]).compute_id()
        != first.id
    )
    assert [c for c in first.iter_chunks(2)] == [(0, images[:2]), (1, images[2:])]
    assert list(first.iter_chunks(2, skip={0})) == [(1, images[2:])]
    first.write_part(1, [{"id": "2"}])
    assert first.done_chunks() == {1}
    assert not list(first.parts_dir.glob(".*tmp"))  # nothing half-written left


def test_a_job_runs_in_one_process_at_a_time(tmp_path):
    job = JobStore(tmp_path).create(_spec(), iter([{"id": "0", "image": "a"}] * 3))
    job.acquire()
    try:
        with pytest.raises(JobBusyError, match="already running"):
            JobDir(job.root).acquire()
        assert JobDir(job.root).is_running()
    finally:
        job.release()
    assert not JobDir(job.root).is_running()


def test_streamed_coco_equals_the_converter_in_one_go(tmp_path):
    images = [
        (
            "a.jpg",
            100,
            80,
            [
                Prediction("box", "car", (1, 2, 30, 40), score=0.5),
                Prediction("point", "dog", (5, 6)),
            ],
        ),
        ("b.jpg", 50, 50, []),
        ("c.jpg", 64, 64, [Prediction("box", "bus", (0, 0, 9, 9), text="A1")]),
    ]
    writer = CocoStreamWriter(tmp_path / "out.json", ["car"], info={"x": 1})
    for name, w, h, preds in images:
        writer.add(name, w, h, preds)
    written = json.loads(writer.close().read_text())
    expected = to_coco(
        [({"file_name": n, "width": w, "height": h}, p) for n, w, h, p in images],
        ["car"],
        add_unknown=True,
        info={"x": 1},
    )
    assert written == expected
    assert not [p for p in tmp_path.iterdir() if p.name != "out.json"]
    COCO(str(tmp_path / "out.json"))  # pycocotools reads it


def test_rate_and_eta_follow_the_recent_window():
    now = [0.0]
    meter = ProgressMeter(total=100, already=20, window_s=10, clock=lambda: now[0])
    assert meter.eta_s is None
    now[0] = 2.0
    meter.add(10)
    assert meter.rate == pytest.approx(5.0)
    assert meter.eta_s == pytest.approx(14.0)  # 70 left at 5/s
    now[0] = 30.0  # nothing for 28 s: the old chunk leaves the window
    assert meter.rate == 0.0 and meter.eta_s is None
    assert format_eta(3725) == "1:02:05" and format_eta(65) == "1:05"


# Jobs on the tiny model --------------------------------------------------


@pytest.fixture
def jobs_dir(tmp_path, monkeypatch):
    path = tmp_path / "jobs"
    monkeypatch.setenv("REXLABEL_JOBS_DIR", str(path))
    for name in (
        "REDIS_URL",
        "LABEL_STUDIO_URL",
        "LABEL_STUDIO_API_KEY",
        "SAM_CHECKPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture
def tiny_runtime(tiny_engine):
    previous = jobs.install_runtime(WorkerRuntime(engine=tiny_engine))
    yield
    jobs.install_runtime(previous)


def _only_job(jobs_dir: Path) -> JobDir:
    found = [p for p in jobs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(found) == 1, found
    return JobDir(found[0])


def _folder_job_args(photos: Path, out: Path, chunk_size: int = 4) -> tuple:
    """``rexlabel prelabel`` of ``photos`` into ``out`` in small chunks, quietly."""
    return (
        "prelabel",
        str(photos),
        *DETECT,
        "--out",
        str(out),
        "--chunk-size",
        str(chunk_size),
        "--quiet",
    )


def _wait_for_first_chunk(jobs_dir: Path) -> None:
    wait_for(
        lambda: jobs_dir.exists() and any(jobs_dir.glob("*/parts/c*.jsonl")),
        120,
        "a first chunk to be written",
        0.01,
    )


def _check_exact(out: Path, images: list[Path]) -> None:
    """COCO and JSONL hold every image once, in input order, nothing else."""
    names = coco_file_names(out)
    assert sorted(names) == sorted(str(p) for p in images)
    assert len(set(names)) == len(names)
    lines = raw_lines(out.with_name(out.name.removesuffix(".json") + ".jsonl"))
    assert [line["id"] for line in lines] == [str(i) for i in range(len(images))]
    assert sorted(line["image"] for line in lines) == sorted(names)
    coco = COCO(str(out))
    assert len(coco.dataset["annotations"]) == sum(
        len(call["predictions"]) for line in lines for call in line["calls"]
    )


def test_inline_folder_job_writes_coco_and_raw_jsonl(
    jobs_dir, tiny_runtime, tmp_path, capsys
):
    images = make_images(tmp_path / "photos", 7)
    out = tmp_path / "labels.coco.json"
    code = main(
        [
            "prelabel",
            str(tmp_path / "photos"),
            *DETECT,
            "--out",
            str(out),
            "--chunk-size",
            "3",
            "--inline",
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr()
    _check_exact(out, sorted(images, key=lambda p: (p.parent.name == "sub", p.name)))
    line = raw_lines(tmp_path / "labels.coco.jsonl")[0]
    assert line["calls"][0]["raw_text"] and line["width"] == 112
    job = _only_job(jobs_dir)
    assert job.done_chunks() == {0, 1, 2}
    record = job.read_status()
    assert (record.status, record.done, record.failed) == ("done", 7, 0)
    # The same command again is the same job: nothing re-run, outputs rebuilt.
    before = {p: p.stat().st_mtime_ns for p in job.parts_dir.iterdir()}
    assert (
        main(
            [
                "prelabel",
                str(tmp_path / "photos"),
                *DETECT,
                "--out",
                str(out),
                "--chunk-size",
                "3",
                "--inline",
                "--quiet",
            ]
        )
        == 0
    )
    assert {p: p.stat().st_mtime_ns for p in job.parts_dir.iterdir()} == before
    assert "job files-" in capsys.readouterr().out


def test_failed_images_are_listed_and_retried_alone(
    jobs_dir, tiny_runtime, tmp_path, capsys
):
    images = make_images(tmp_path / "photos", 5, nested=False)
    broken = images[2]
    broken.write_bytes(b"this is not a png")
    out = tmp_path / "out.json"
    args = [
        "prelabel",
        str(tmp_path / "photos"),
        *DETECT,
        "--out",
        str(out),
        "--chunk-size",
        "2",
        "--inline",
        "--quiet",
    ]
    assert main(args) == 3  # finished, with failures
    printed = capsys.readouterr().out
    assert (
        "1 failed" in printed and str(broken) in printed and "--retry-failed" in printed
    )
    assert str(broken) not in coco_file_names(out)
    job = _only_job(jobs_dir)
    untouched = job.part_path(0).stat().st_mtime_ns
    Image.new("RGB", (112, 96), "red").save(broken)
    assert main([*args, "--retry-failed"]) == 0
    assert job.part_path(0).stat().st_mtime_ns == untouched  # only chunk 1 re-ran
    _check_exact(out, images)
    record = job.read_status()
    assert (record.done, record.failed) == (5, 0)


def _shapes(folder: Path, count: int, phrase: str = "blue circle", seed: int = 7):
    """``count`` synthetic images each holding one ``phrase`` shape, and the truth."""
    import random

    from worker.training.synthetic import render_shape

    rng, samples = random.Random(seed), []
    while len(samples) < count:
        sample = render_shape(rng)
        if sample.phrase == phrase:
            samples.append(sample)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, sample in enumerate(samples):
        path = (folder / f"s{i:02d}.png").resolve()
        sample.image.save(path)
        paths.append(path)
    return paths, samples


@pytest.mark.slow
def test_masks_from_sam_are_written_as_rle(jobs_dir, trained_engine, tmp_path):
    """The trained tiny model finds the shapes; the tiny SAM masks each box."""
    from pycocotools import mask as mask_utils

    from worker.sam import SamMasker, build_test_sam

    _shapes(tmp_path / "shapes", 3)
    masker = SamMasker(build_test_sam(), device="cpu")
    previous = jobs.install_runtime(WorkerRuntime(engine=trained_engine, masker=masker))
    try:
        out = tmp_path / "masks.json"
        code = main(
            [
                "prelabel",
                str(tmp_path / "shapes"),
                "--task",
                "detection",
                "--categories",
                "blue circle",
                "--max-new-tokens",
                "64",
                "--masks",
                "--out",
                str(out),
                "--inline",
                "--quiet",
            ]
        )
    finally:
        jobs.install_runtime(previous)
    assert code == 0
    anns = json.loads(out.read_text())["annotations"]
    assert anns, "the trained model found no shape"
    for ann in anns:
        rle = ann["segmentation"]
        assert isinstance(rle, dict) and rle["size"] == [112, 112]
        assert mask_utils.area(rle) == ann["area"]


# Jobs on real workers --------------------------------------------------


@pytest.fixture
def redis_conn():
    connection = redis_or_skip()
    yield connection
    empty_db(connection)


@pytest.fixture
def workers(redis_conn, tiny_model_dir, tmp_path):
    pool = Workers(redis_conn, tiny_model_dir, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def cli_env(jobs_dir, tiny_model_dir):
    return {
        **worker_env(tiny_model_dir),
        "REDIS_URL": redis_url(),
        "REXLABEL_JOBS_DIR": str(jobs_dir),
    }


def _started_chunk(connection) -> str | None:
    from rq import Queue
    from rq.serializers import JSONSerializer

    from common.queues import QUEUE_BULK

    queue = Queue(QUEUE_BULK, connection=connection, serializer=JSONSerializer)
    ids = queue.started_job_registry.get_job_ids(cleanup=False)
    return ids[0] if ids else None


@pytest.mark.slow
def test_folder_job_on_two_workers_is_scored_by_pycocotools(
    redis_conn, jobs_dir, trained_model_dir, tmp_path, monkeypatch
):
    """The trained tiny model on two workers; pycocotools scores the job's COCO
    against the shapes' truth exactly as it scores the workers' raw results."""
    from pycocotools.cocoeval import COCOeval

    folder = tmp_path / "shapes"
    paths, samples = _shapes(folder, 12)
    truth = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "blue circle"}],
    }
    for i, (path, sample) in enumerate(zip(paths, samples, strict=True)):
        x0, y0, x1, y1 = sample.box
        truth["images"].append(
            {"id": i + 1, "file_name": str(path), "width": 112, "height": 112}
        )
        truth["annotations"].append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "area": (x1 - x0) * (y1 - y0),
                "iscrowd": 0,
            }
        )
    pool = Workers(redis_conn, trained_model_dir, tmp_path)
    try:
        pool.start("trained-a")
        pool.start("trained-b")
        monkeypatch.setenv("REDIS_URL", redis_url())
        out = tmp_path / "shapes.coco.json"
        assert main(
            [
                "prelabel",
                str(folder),
                "--task",
                "detection",
                "--categories",
                "blue circle",
                "--max-new-tokens",
                "64",
                "--out",
                str(out),
                "--chunk-size",
                "3",
                "--quiet",
            ]
        ) in (0, 3)
    finally:
        pool.stop_all()
    predicted = json.loads(out.read_text())
    assert sorted(i["file_name"] for i in predicted["images"]) == sorted(
        i["file_name"] for i in truth["images"]
    )
    gt_path = tmp_path / "truth.json"
    gt_path.write_text(json.dumps(truth))
    gt = COCO(str(gt_path))
    ids = {i["file_name"]: i["id"] for i in truth["images"]}
    names = {i["id"]: i["file_name"] for i in predicted["images"]}
    from_coco = [
        {
            "image_id": ids[names[a["image_id"]]],
            "category_id": 1,  # class-agnostic: how well the boxes sit
            "bbox": a["bbox"],
            "score": a["score"],
        }
        for a in predicted["annotations"]
    ]
    assert from_coco, "the model found nothing"
    # The same detections read straight from the workers' raw results (and
    # their raw text parsed again) must score exactly the same.
    from converters.parser import parse_output

    from_raw = []
    for line in raw_lines(out.with_name("shapes.coco.jsonl")):
        call = line["calls"][0]
        reparsed = parse_output(call["raw_text"], "detection", 112, 112)
        written = [list(p.coords) for p in reparsed.predictions]
        assert all(p["coords"] in written for p in call["predictions"])
        for p in call["predictions"]:
            x0, y0, x1, y1 = p["coords"]
            from_raw.append(
                {
                    "image_id": ids[line["image"]],
                    "category_id": 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": p["score"],
                }
            )
    stats = []
    for results in (from_coco, from_raw):
        evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        stats.append(list(evaluator.stats))
    assert stats[0] == pytest.approx(stats[1])
    assert all(-1 <= v <= 1 for v in stats[0])


@pytest.mark.slow
def test_job_survives_a_worker_killed_mid_chunk(
    redis_conn, workers, cli_env, jobs_dir, tmp_path
):
    images = make_images(tmp_path / "photos", 40)
    victim = workers.start("victim")
    workers.start("survivor")
    out = tmp_path / "out.json"
    run = cli(
        *_folder_job_args(tmp_path / "photos", out, chunk_size=8),
        env=cli_env,
        wait=False,
        log=tmp_path / "cli.log",
    )
    from rq.job import Job
    from rq.serializers import JSONSerializer

    def victim_busy():
        chunk = _started_chunk(redis_conn)
        if chunk is None:
            return None
        job = Job.fetch(chunk, connection=redis_conn, serializer=JSONSerializer)
        return chunk if job.worker_name == "victim" else None

    wait_for(victim_busy, 120, "the victim to start a chunk", 0.01)
    os.kill(victim.pid, signal.SIGKILL)
    assert run.wait(timeout=300) == 0, (tmp_path / "cli.log").read_text()
    _check_exact(out, sorted(images, key=lambda p: (p.parent.name == "sub", p.name)))


@pytest.mark.slow
def test_interrupted_cli_resumes_where_it_stopped(
    redis_conn, workers, cli_env, jobs_dir, tmp_path
):
    images = make_images(tmp_path / "photos", 40)
    workers.start("steady")
    out = tmp_path / "out.json"
    args = _folder_job_args(tmp_path / "photos", out)
    first = cli(*args, env=cli_env, wait=False, log=tmp_path / "cli1.log")
    _wait_for_first_chunk(jobs_dir)
    first.send_signal(signal.SIGINT)  # Ctrl-C
    assert first.wait(timeout=60) == 130, (tmp_path / "cli1.log").read_text()
    job = _only_job(jobs_dir)
    assert job.read_status().status == "interrupted"
    done_before = {c: job.part_path(c).stat().st_mtime_ns for c in job.done_chunks()}
    assert 0 < len(done_before) < 10
    second = cli(*args, env=cli_env, log=tmp_path / "cli2.log")
    assert second.returncode == 0, (tmp_path / "cli2.log").read_text()
    for chunk, mtime in done_before.items():  # continued, not redone
        assert job.part_path(chunk).stat().st_mtime_ns == mtime
    _check_exact(out, sorted(images, key=lambda p: (p.parent.name == "sub", p.name)))


@pytest.mark.slow
def test_killed_cli_and_emptied_redis_lose_nothing(
    redis_conn, workers, cli_env, jobs_dir, tmp_path
):
    """kill -9 of the CLI, then Redis loses every key mid-run: the rerun adopts
    what was in flight, re-enqueues what vanished, and writes each image once."""
    images = make_images(tmp_path / "photos", 40)
    workers.start("w1")
    workers.start("w2")
    out = tmp_path / "out.json"
    args = _folder_job_args(tmp_path / "photos", out)
    first = cli(*args, env=cli_env, wait=False, log=tmp_path / "cli1.log")
    _wait_for_first_chunk(jobs_dir)
    first.kill()
    first.wait(timeout=30)
    second = cli(*args, env=cli_env, wait=False, log=tmp_path / "cli2.log")
    job = _only_job(jobs_dir)
    wait_for(lambda: len(job.done_chunks()) >= 4, 120, "more chunks", 0.01)
    empty_db(redis_conn)  # what a Redis restart without persistence does
    try:
        code = second.wait(timeout=300)
    except subprocess.TimeoutExpired:
        second.kill()
        logs = {p.name: p.read_text()[-2000:] for p in sorted(tmp_path.glob("*.log"))}
        pytest.fail(f"the rerun did not finish in 300 s; logs: {logs}")
    assert code == 0, (tmp_path / "cli2.log").read_text()
    _check_exact(out, sorted(images, key=lambda p: (p.parent.name == "sub", p.name)))


@pytest.mark.slow
def test_cancel_stops_the_job_and_resume_finishes_it(
    redis_conn, workers, cli_env, jobs_dir, tmp_path
):
    from rq import Queue
    from rq.serializers import JSONSerializer

    from common.queues import QUEUE_BULK

    images = make_images(tmp_path / "photos", 48)
    workers.start("only")
    out = tmp_path / "out.json"
    run = cli(
        *_folder_job_args(tmp_path / "photos", out, chunk_size=4),
        env=cli_env,
        wait=False,
        log=tmp_path / "cli.log",
    )
    _wait_for_first_chunk(jobs_dir)
    job = _only_job(jobs_dir)
    cancel = cli("jobs", "cancel", job.id, env=cli_env)
    assert cancel.returncode == 0
    assert run.wait(timeout=60) == 4, (tmp_path / "cli.log").read_text()
    assert job.read_status().status == "cancelled"
    assert not out.exists()
    queue = Queue(QUEUE_BULK, connection=redis_conn, serializer=JSONSerializer)
    assert queue.count == 0  # queued chunks were withdrawn
    done = len(job.done_chunks())
    time.sleep(1.0)
    assert len(job.done_chunks()) <= done + 1  # at most the chunk that was running
    status = cli("jobs", "status", job.id, env=cli_env)
    assert b"cancelled" in status.output
    listing = cli("jobs", "list", "--json", env=cli_env)
    assert json.loads(listing.output)[0]["id"] == job.id
    resume = cli(
        "jobs", "resume", job.id, "--quiet", env=cli_env, log=tmp_path / "resume.log"
    )
    assert resume.returncode == 0, (tmp_path / "resume.log").read_text()
    _check_exact(out, sorted(images, key=lambda p: (p.parent.name == "sub", p.name)))
    assert job.read_status().status == "done"


def test_unknown_job_is_a_clear_error(jobs_dir, capsys):
    assert main(["jobs", "status", "files-0000"]) == 2
    assert "no job 'files-0000'" in capsys.readouterr().err


def test_delivery_log_survives_a_cut_line_and_matches_ids_as_text(tmp_path):
    log = JobDir(tmp_path / "job").delivery_log()
    log.record_stored(7, 70)
    log.record_stored("8", 80)
    log.sync()
    log.close()
    with open(tmp_path / "job" / DELIVERED_NAME, "a", encoding="utf-8") as handle:
        handle.write('{"task": 9, "predic')  # the process died mid-line
    again = JobDir(tmp_path / "job").delivery_log()
    assert again.stored("7") and again.stored(8) and not again.stored(9)
    assert again.prediction_id(7) == 70
    again.record_stored(10, 100)  # starts a line of its own
    again.close()
    final = JobDir(tmp_path / "job").delivery_log()
    assert final.stored(10) and final.prediction_id("8") == 80
