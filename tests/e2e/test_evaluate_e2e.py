"""``rexlabel evaluate --project`` against a real Label Studio 1.23.2 (issue 13).

A person's workflow: the tiny trained model pre-labels a RectangleLabels
project through "Retrieve Predictions", then annotators submit through the
API what the UI would (one task annotated twice, one box deliberately
shifted, one task skipped, one left alone). The report of the console script
must match a direct computation: the same tasks read back through the API,
COCO ground truth and results built here by hand (percent x original size)
and pycocotools' COCOeval run on them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import E2E_TIMINGS, REXLABEL_EXECUTABLE, Backend, LabelStudio
from tests.e2e.lsclient import LabelStudioClient
from tests.e2e.test_labelstudio_e2e import RED, connect, make_project, retrieve
from worker.training.synthetic import IMAGE_SIZE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TASKS = 6
"""Four scored (one annotated twice, one shifted), one skipped, one untouched."""

SHIFT_PERCENT = 8.0
"""How far the shifted annotation moves its box right and down (percent of
the image, about 9 px of 112): IoU with the shape drops to roughly 0.5, so
the box counts at some IoU thresholds of COCO's 0.5:0.95 and not others."""

EVALUATE_TIMEOUT_S = 120.0
"""The command reads a few tasks and runs COCOeval: seconds; bounded for CI."""

AGREEMENT = 1e-9
"""The report and the direct computation run the same COCOeval on the same
numbers: any difference beyond float noise is a bug."""


def box_result(
    region_id: str,
    box: tuple[float, ...],
    dx: float = 0.0,
    labels: tuple[str, ...] = RED,
) -> dict:
    """What the labeling UI submits for a box labelled ``labels`` drawn on the
    shape ``box`` (xyxy pixels), moved ``dx`` percent right and down."""
    x0, y0, x1, y1 = box
    scale = 100.0 / IMAGE_SIZE
    return {
        "id": region_id,
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "origin": "manual",
        "original_width": IMAGE_SIZE,
        "original_height": IMAGE_SIZE,
        "image_rotation": 0,
        "value": {
            "x": x0 * scale + dx,
            "y": y0 * scale + dx,
            "width": (x1 - x0) * scale,
            "height": (y1 - y0) * scale,
            "rotation": 0,
            "rectanglelabels": list(labels),
        },
    }


def submit(
    client: LabelStudioClient, task_id: int, result: list, cancelled: bool = False
) -> dict[str, Any]:
    """``POST /api/tasks/<id>/annotations/`` as the Submit button does, or
    Skip (``?was_cancelled=1``)."""
    return client.post_json(
        f"/api/tasks/{task_id}/annotations/",
        {"result": result, "lead_time": 4.2},
        params={"was_cancelled": 1} if cancelled else None,
    )


def coco_bbox(region: dict[str, Any]) -> list[float]:
    """A stored rectangle as COCO xywh pixels: percent x its original size."""
    v = region["value"]
    w, h = region["original_width"], region["original_height"]
    return [
        v["x"] * w / 100,
        v["y"] * h / 100,
        v["width"] * w / 100,
        v["height"] * h / 100,
    ]


def direct_coco(tasks: list[dict[str, Any]], model_version: str) -> dict[str, Any]:
    """COCOeval's bbox AP/AP50/AR over the tasks, by hand: per task the latest
    non-cancelled annotation against the prediction of ``model_version``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, truth, results = [], [], []
    skipped = 0
    for task in tasks:
        kept = [a for a in task["annotations"] if not a["was_cancelled"]]
        if not kept:
            skipped += 1
            continue
        latest = max(kept, key=lambda a: (a["updated_at"], a["id"]))
        (prediction,) = [
            p for p in task["predictions"] if p["model_version"] == model_version
        ]
        images.append({"id": task["id"], "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for region in latest["result"]:
            x, y, w, h = coco_bbox(region)
            truth.append(
                {
                    "id": len(truth) + 1,
                    "image_id": task["id"],
                    "category_id": 1,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for region in prediction["result"]:
            results.append(
                {
                    "image_id": task["id"],
                    "category_id": 1,
                    "bbox": coco_bbox(region),
                    "score": region["score"],
                }
            )
    assert results, "the model found nothing: no AP to compare"
    ground_truth = COCO()
    ground_truth.dataset = {
        "images": images,
        "annotations": truth,
        "categories": [{"id": 1, "name": RED[0]}],
    }
    ground_truth.createIndex()
    evaluator = COCOeval(ground_truth, ground_truth.loadRes(results), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return {
        "ap": evaluator.stats[0],
        "ap50": evaluator.stats[1],
        "ar": evaluator.stats[8],
        "images": len(images),
        "ground_truth": len(truth),
        "predictions": len(results),
        "skipped": skipped,
    }


def test_evaluate_project_matches_cocoeval_on_what_label_studio_stored(
    label_studio: LabelStudio, rexlabel_backend: Backend, tmp_path: Path
) -> None:
    """Predictions from "Retrieve Predictions", annotations submitted through
    the API; ``rexlabel evaluate --project`` scores the connected model's
    version (Label Studio holds the model's title as the project's version),
    and its AP, AP50, AR and counts equal COCOeval's on the same tasks read
    back from Label Studio. Tasks skipped in the UI or never annotated are
    counted, not scored; a task annotated twice is scored by the later one."""
    client = label_studio.client
    project = make_project(
        client, "evaluate", "rectangles", tmp_path / "images", 11, TASKS, RED
    )
    ml = connect(client, project, rexlabel_backend, "rexlabel (evaluate)")
    retrieve(client, project, rexlabel_backend, ml["model_version"])

    first, second, shifted, exact, skipped, _untouched = sorted(project.tasks)
    samples = project.tasks
    submit(client, first, [box_result("old", samples[first].box, dx=30.0)])
    submit(client, first, [box_result("new", samples[first].box)])  # the later one
    submit(client, second, [box_result("a", samples[second].box)])
    submit(client, shifted, [box_result("s", samples[shifted].box, SHIFT_PERCENT)])
    submit(client, exact, [box_result("e", samples[exact].box)])
    submit(client, skipped, [], cancelled=True)

    out = tmp_path / "report"
    command = [REXLABEL_EXECUTABLE, "evaluate", "--project", project.id, "--out", out]
    started = time.monotonic()
    done = subprocess.run(
        [str(part) for part in command],
        env=rexlabel_backend.env,
        capture_output=True,
        text=True,
        timeout=EVALUATE_TIMEOUT_S,
    )
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "report.html").is_file()
    report = json.loads((out / "report.json").read_text())
    inputs = report["inputs"]
    assert inputs["model_version"] == ml["model_version"], inputs
    assert "connected model 'rexlabel (evaluate)'" in inputs["model_version_chosen_as"]
    assert ml["model_version"] in done.stdout

    listed = client.get_json(
        "/api/tasks",
        params={"project": project.id, "page_size": 100, "fields": "all"},
    )["tasks"]
    twice = next(t for t in listed if t["id"] == first)["annotations"]
    latest = max(twice, key=lambda a: (a["updated_at"], a["id"]))
    assert [r["id"] for r in latest["result"]] == ["new"], twice
    direct = direct_coco(listed, ml["model_version"])
    assert direct["skipped"] == 2  # the skipped task and the untouched one
    assert (inputs["tasks"], inputs["tasks_scored"]) == (TASKS, 4)
    assert inputs["tasks_without_annotation"] == direct["skipped"]
    assert inputs["tasks_only_cancelled"] == 1
    assert inputs["tasks_without_predictions"] == 0
    overall = report["overall"]
    for key in ("images", "ground_truth", "predictions"):
        assert overall[key] == direct[key], (key, overall, direct)
    for key in ("ap", "ap50", "ar"):
        assert overall[key] == pytest.approx(direct[key], abs=AGREEMENT), (
            key,
            overall,
            direct,
        )
    label = report["labels"][RED[0]]
    assert label["ground_truth"] == 4
    assert label["ap"] == pytest.approx(direct["ap"], abs=AGREEMENT)
    E2E_TIMINGS[f"rexlabel evaluate --project ({TASKS} tasks)"] = (
        f"{seconds:.1f} s; AP {direct['ap']:.3f}, AP50 {direct['ap50']:.3f}, "
        f"AR {direct['ar']:.3f} over {direct['predictions']} predicted boxes"
    )
