"""Speed and memory of ``rexlabel evaluate`` on synthetic box tasks.

Run:  .venv/bin/python bench/bench_evaluate.py [--tasks 10000] [--boxes 10]

Writes a Label Studio JSON export of ``--tasks`` tasks, each with one
submitted annotation of ``--boxes`` boxes over LABELS and one prediction
(the boxes jittered, a few missed, relabelled or added; scores 0..1), then
times, each in a fresh process so peak memory is its own:

* ``metrics``: :func:`backend.evaluate.report.build_report` over pairs made
  in memory (the scoring alone);
* ``files``: the whole command, ``rexlabel evaluate --gt export --pred
  export`` (reading, pairing, scoring, report.json);
* the same command on a quarter of the tasks, so the growth of peak memory
  per task can be read off (the ground truth streams; the predictions file
  is held).

Figures: tasks/s (wall clock) and peak RSS. The goal is printed next to them;
nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_TASKS_PER_S = 2000
"""Issue 13: at least 2,000 tasks/s for boxes."""

LABELS = ("car", "person", "sign")
WIDTH, HEIGHT = 640, 480
SEED = 13

MISS_RATE = 0.1
"""Share of ground-truth boxes the synthetic model misses."""
WRONG_LABEL_RATE = 0.05
"""Share it finds with another label."""
EXTRA_PER_TASK = 1
"""False boxes added per task."""
JITTER_PX = 6.0
"""Largest shift of a found box's edges (pixels)."""


def _box(rng: random.Random) -> tuple[float, float, float, float]:
    w, h = rng.uniform(20, 160), rng.uniform(20, 160)
    x, y = rng.uniform(0, WIDTH - w), rng.uniform(0, HEIGHT - h)
    return x, y, w, h


def _result(n: int, label: str, box: tuple, score: float | None = None) -> dict:
    x, y, w, h = box
    result = {
        "id": f"r{n}",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "value": {
            "x": 100 * x / WIDTH,
            "y": 100 * y / HEIGHT,
            "width": 100 * w / WIDTH,
            "height": 100 * h / HEIGHT,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }
    if score is not None:
        result["score"] = score
    return result


def _task(rng: random.Random, task_id: int, boxes: int) -> dict:
    truth, found = [], []
    for n in range(boxes):
        label, box = rng.choice(LABELS), _box(rng)
        truth.append(_result(n, label, box))
        if rng.random() < MISS_RATE:
            continue
        if rng.random() < WRONG_LABEL_RATE:
            label = rng.choice([name for name in LABELS if name != label])
        x, y, w, h = box
        j = [rng.uniform(-JITTER_PX, JITTER_PX) for _ in range(4)]
        moved = (
            max(0.0, x + j[0]),
            max(0.0, y + j[1]),
            min(w + j[2], WIDTH - x),
            min(h + j[3], HEIGHT - y),
        )
        found.append(_result(n, label, moved, round(rng.uniform(0.3, 1.0), 3)))
    for n in range(EXTRA_PER_TASK):
        found.append(_result(boxes + n, rng.choice(LABELS), _box(rng), 0.35))
    return {
        "id": task_id,
        "data": {"image": f"/data/upload/1/{task_id}.jpg"},
        "annotations": [{"id": task_id, "result": truth, "was_cancelled": False}],
        "predictions": [{"id": task_id, "result": found, "model_version": "bench"}],
    }


def write_export(path: Path, tasks: int, boxes: int) -> None:
    rng = random.Random(SEED)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for n in range(tasks):
            handle.write(("," if n else "") + json.dumps(_task(rng, n + 1, boxes)))
        handle.write("]")


METRICS_ONLY = """
import json, resource, sys, time
from backend.evaluate.inputs import load_pairs
from backend.evaluate.report import build_report
pairs, _ = load_pairs(sys.argv[1], sys.argv[1])
pairs = list(pairs)
start = time.perf_counter()
report = build_report(pairs)
print(json.dumps({"seconds": time.perf_counter() - start,
                  "images": report["overall"]["images"],
                  "ap": report["overall"]["ap"],
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

COMMAND = """
import json, resource, sys, time
from backend.cli import main
start = time.perf_counter()
gt = pred = sys.argv[1]
code = main(["evaluate", "--gt", gt, "--pred", pred, "--out", sys.argv[2]])
print(json.dumps({"seconds": time.perf_counter() - start, "code": code,
                  "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _run(code: str, *args: str) -> tuple[dict, float]:
    """Run ``code`` in a fresh interpreter: its last JSON line and its own
    peak RSS in MiB."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    return figures, figures["peak_kib"] / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--boxes", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        quarter, full = tmp_path / "quarter.json", tmp_path / "full.json"
        write_export(quarter, args.tasks // 4, args.boxes)
        write_export(full, args.tasks, args.boxes)
        size = full.stat().st_size / 2**20
        print(f"export: {args.tasks} tasks x {args.boxes} boxes, {size:.1f} MiB")
        _, small_peak = _run(COMMAND, str(quarter), str(tmp_path / "out-q"))
        metrics, _ = _run(METRICS_ONLY, str(full))
        command, peak = _run(COMMAND, str(full), str(tmp_path / "out"))
        rate = args.tasks / metrics["seconds"]
        print(
            f"metrics only: {metrics['seconds']:.2f} s, {rate:,.0f} tasks/s "
            f"(goal >= {GOAL_TASKS_PER_S:,}), AP {metrics['ap']:.3f}"
        )
        rate = args.tasks / command["seconds"]
        print(
            f"rexlabel evaluate (files): {command['seconds']:.2f} s, "
            f"{rate:,.0f} tasks/s, peak RSS {peak:.0f} MiB"
        )
        per_task = (peak - small_peak) / (args.tasks - args.tasks // 4) * 1024
        print(
            f"  on {args.tasks // 4} tasks: peak RSS {small_peak:.0f} MiB; "
            f"growth {per_task:.1f} KiB per task ({args.boxes} boxes on each side)"
        )


if __name__ == "__main__":
    main()
