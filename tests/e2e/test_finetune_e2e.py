"""``rexlabel finetune --project`` against a real Label Studio 1.23.2 (issue 14).

A person's workflow: a project labelled "purple square" (a class the tiny
model never saw: it boxes the square but names another colour, labelled IoU
0) gets 40 images of it and 40 images of the old shapes, uploaded as files.
The purple ones are annotated through the API as the Submit button would.
``rexlabel finetune --project`` (the console script) downloads the tasks and
images from Label Studio, trains a LoRA adapter with the base model's own
answers on the unannotated images replayed, and writes a model directory.
Served from that directory, the model must score held-out purple squares at
labelled IoU >= 0.5 while the old shapes keep >= 0.7 of the base's IoU, and
the model version Label Studio sees must change.
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import time
from pathlib import Path

import pytest

from backend.model_version import model_version
from common.model_store import read_card
from tests.e2e.conftest import E2E_TIMINGS, REXLABEL_EXECUTABLE, Backend, LabelStudio
from tests.e2e.lsclient import LabelStudioClient
from tests.e2e.test_evaluate_e2e import box_result
from tests.finetune_proof import (
    NEW_PHRASE,
    OLD_PHRASES,
    new_and_old_iou,
    render_new,
    write_images,
)
from worker.training.synthetic import render_shape

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ANNOTATED = 40
"""Images of the new class a person annotates (the issue's figure)."""
UNANNOTATED = 40
"""Images of the old shapes left unannotated: the base model labels them for
replay (what it knew stays in every batch)."""
STEPS = 450
LEARNING_RATE = 2e-3
"""The tiny model's recipe (its own training runs at 2e-3): measured, 450
LoRA steps of 8 reach labelled IoU 0.67 on the new class, old shapes 0.78 of
0.80; 300 steps reached 0.50-0.62, too close to the bar (docs/finetune.md)."""
NEW_CLASS_MIN_IOU = 0.5
OLD_CLASS_KEPT_SHARE = 0.7
"""The issue's bars: the new class >= 0.5, the old ones >= 0.7 of the base."""
BASE_NEW_MAX_IOU = 0.05
"""Before: the base answers the new phrase with another label (IoU ~ 0)."""
REPLAY_QUESTIONS = 120
"""Three replay questions per unannotated image (other phrases each time):
with one per training example (45 here) the result swung with which phrase
met which image (new class 0.45 to 0.74 over splits); more questions average
that out."""
FINETUNE_TIMEOUT_S = 600.0
"""Download, replay answers, 300 steps and held-out scoring: ~1 min idle."""
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image">'
    f'<Label value="{NEW_PHRASE}"/></RectangleLabels></View>'
)


def annotated_project(
    client: LabelStudioClient, title: str, folder: Path, seed: int
) -> tuple[int, list[int]]:
    """A "purple square" project: 40 annotated purple squares, 40 old shapes
    unannotated. Returns the project id and the annotation ids."""
    rng = random.Random(seed)
    new = [render_new(rng) for _ in range(ANNOTATED)]
    old = [render_shape(rng) for _ in range(UNANNOTATED)]
    by_name = dict(
        zip(
            [p.name for p in write_images(folder, "new", new)]
            + [p.name for p in write_images(folder, "old", old)],
            new + old,
            strict=True,
        )
    )
    project = client.create_project(title, CONFIG)
    report = client.import_files(project["id"], [folder / name for name in by_name])
    assert report["task_count"] == ANNOTATED + UNANNOTATED, report
    annotation_ids = []
    for task in client.tasks(project["id"]):
        name = task["data"]["image"].rsplit("/", 1)[-1].split("-", 1)[1]
        sample = by_name[name]
        if sample.phrase == NEW_PHRASE:
            made = client.post_json(
                f"/api/tasks/{task['id']}/annotations/",
                {
                    "result": [
                        box_result(f"r{task['id']}", sample.box, labels=(NEW_PHRASE,))
                    ],
                    "lead_time": 3.0,
                },
            )
            annotation_ids.append(made["id"])
    assert len(annotation_ids) == ANNOTATED
    return project["id"], annotation_ids


def finetune_args(base: Path) -> list[str]:
    return [
        "--base", str(base),
        "--steps", str(STEPS),
        "--lr", str(LEARNING_RATE),
        "--replay-phrases", ",".join(OLD_PHRASES),
        "--replay-images", str(REPLAY_QUESTIONS),
        "--device", "cpu",
    ]  # fmt: skip


def served_iou(model_dir: Path) -> tuple[float, float]:
    from worker.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(model_dir), device="cpu")
    try:
        return new_and_old_iou(engine)
    finally:
        engine.close()


@pytest.fixture(scope="module")
def base_iou(trained_model_dir: Path) -> tuple[float, float]:
    new, old = served_iou(trained_model_dir)
    assert new <= BASE_NEW_MAX_IOU, f"the base already names the new class: {new}"
    return new, old


def test_finetune_project_from_the_cli_learns_a_new_class_and_keeps_the_old(
    label_studio: LabelStudio,
    rexlabel_backend: Backend,
    trained_model_dir: Path,
    base_iou: tuple[float, float],
    tmp_path: Path,
) -> None:
    client = label_studio.client
    project, annotation_ids = annotated_project(
        client, "finetune (cli)", tmp_path / "images", seed=41
    )
    out = tmp_path / "model"
    command = [
        str(REXLABEL_EXECUTABLE), "finetune", "--project", str(project),
        "--out", str(out), "--progress", "json", *finetune_args(trained_model_dir),
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command,
        env=rexlabel_backend.env,
        capture_output=True,
        text=True,
        timeout=FINETUNE_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    events = [
        json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")
    ]
    names = [e["event"] for e in events]
    assert names[0] == "prepared" and names[-1] == "done", names
    prepared = events[0]
    assert prepared["skipped"]["skipped_no_annotation"] == UNANNOTATED, prepared
    steps = [e for e in events if e["event"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, STEPS + 1))
    assert all(e["steps"] == STEPS and e["eta_s"] >= 0 for e in steps)

    card = read_card(out)
    assert card is not None and card["method"] == "lora"
    assert card["base"] == str(trained_model_dir.resolve())
    assert card["data"]["annotations"] == ANNOTATED
    assert card["data"]["skipped"]["skipped_no_image"] == 0, card["data"]
    ids = ",".join(str(i) for i in sorted(annotation_ids))
    assert (
        card["data"]["annotation_ids_sha256"]
        == hashlib.sha256(ids.encode()).hexdigest()
    )
    assert card["data"]["source"] == {"project": project}
    assert card["training"]["steps"] == STEPS
    metrics = card["metrics"]
    assert metrics["new"]["before"]["mean_iou"] == pytest.approx(0.0, abs=0.05)
    assert metrics["new"]["after"]["mean_iou"] > metrics["new"]["before"]["mean_iou"]
    assert metrics["kept"]["examples"] > 0
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "checkpoint").exists()

    new, old = served_iou(out)
    base_new, base_old = base_iou
    E2E_TIMINGS["finetune --project (cli)"] = (
        f"{seconds:.0f} s; labelled IoU new {base_new:.2f} -> {new:.2f}, "
        f"old {base_old:.2f} -> {old:.2f}"
    )
    assert new >= NEW_CLASS_MIN_IOU, (new, old, metrics)
    assert old >= OLD_CLASS_KEPT_SHARE * base_old, (new, old, base_old)

    base_env = {"REXLABEL_MODEL": str(trained_model_dir)}
    tuned_env = {"REXLABEL_MODEL": str(out)}
    assert model_version(CONFIG, {}, base_env) != model_version(CONFIG, {}, tuned_env)


TRAIN_JOB_TIMEOUT_S = 900.0
"""Start Training to a published run: the CLI's minute plus the worker's
start and Redis round trips; bounded for CI."""


def test_start_training_in_label_studio_runs_on_the_train_worker_and_publishes(
    label_studio: LabelStudio,
    rexlabel_backend_queue: Backend,
    trained_model_dir: Path,
    base_iou: tuple[float, float],
    tmp_path: Path,
) -> None:
    """The same proof through Label Studio's "Start Training": the webhook
    enqueues a job on ``rexlabel:train``; a ``rexlabel worker --train`` runs
    the fine-tune with the options of the project's ``finetune`` extra param,
    publishes the run as the project's ``current`` and ``rexlabel jobs``
    shows it finished; the project's models directory then serves the new
    model."""
    from tests.e2e.conftest import ManagedProcess, wait_until

    client = label_studio.client
    project, _ = annotated_project(
        client, "finetune (webhook)", tmp_path / "images", 43
    )
    options = {
        "steps": STEPS,
        "lr": LEARNING_RATE,
        "replay_phrases": ",".join(OLD_PHRASES),
        "replay_images": REPLAY_QUESTIONS,
    }
    ml = client.add_ml_backend(
        project,
        rexlabel_backend_queue.url,
        "rexlabel (train)",
        extra_params={"finetune": options},
    )
    assert client.ml_backend(ml["id"])["state"] == "CO", rexlabel_backend_queue.logs()
    models = tmp_path / "models"
    env = dict(rexlabel_backend_queue.env, REXLABEL_MODELS_DIR=str(models))
    worker = ManagedProcess.start(
        "rexlabel worker --train",
        [str(REXLABEL_EXECUTABLE), "worker", "--train"],
        env,
        tmp_path / "train-worker.log",
        Path.cwd(),
    )
    try:
        started = time.monotonic()
        client.post_json(f"/api/ml/{ml['id']}/train", {})
        pointer = models / f"project-{project}" / "current"
        wait_until(pointer.exists, TRAIN_JOB_TIMEOUT_S, "the published run", worker)
        seconds = time.monotonic() - started
    finally:
        worker.stop()
    run = models / f"project-{project}" / pointer.read_text().strip()
    card = read_card(run)
    assert card is not None and card["data"]["source"] == {"project": project}
    assert card["training"]["steps"] == STEPS
    skipped = card["data"]["skipped"]  # every image came through the PAT's token
    assert skipped["skipped_no_image"] == 0 and skipped["failed"] == 0, card["data"]
    assert skipped["skipped_no_annotation"] == UNANNOTATED, card["data"]

    listed = subprocess.run(
        [str(REXLABEL_EXECUTABLE), "jobs", "list", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    jobs = [j for j in json.loads(listed.stdout) if j.get("kind") == "train"]
    (job,) = [j for j in jobs if j.get("project") == project]
    assert job["state"] == "finished", job
    assert job["step"] == STEPS and job["run"] == run.name, job

    new, old = served_iou(models / f"project-{project}")  # through the pointer
    base_new, base_old = base_iou
    E2E_TIMINGS["finetune via Start Training"] = (
        f"{seconds:.0f} s; labelled IoU new {base_new:.2f} -> {new:.2f}, "
        f"old {base_old:.2f} -> {old:.2f}"
    )
    assert new >= NEW_CLASS_MIN_IOU, (new, old)
    assert old >= OLD_CLASS_KEPT_SHARE * base_old, (new, old, base_old)
