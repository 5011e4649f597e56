"""Job functions for queue tests: JSON in, JSON out, like ``worker.jobs.run_chunk``.

They exercise the queue itself (ordering, failures, deadlines) without a model;
the real job function runs in test_app.py's end-to-end tests.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any


def echo_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """A well-formed chunk result naming the process that ran it."""
    return {
        "images": [
            {
                "id": image["id"],
                "task_id": image.get("task_id"),
                "width": 100,
                "height": 50,
                "calls": [],
                "error": None,
            }
            for image in payload["images"]
        ],
        "pid": os.getpid(),
        "echo": payload,
    }


def fail_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"boom on {len(payload['images'])} image(s)")


def slow_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(payload.get("sleep", 2.0)))
    return echo_chunk(payload)


def not_a_dict(payload: dict[str, Any]) -> list[int]:
    return [1, 2, 3]


GATE = threading.Event()
"""What :func:`gated_chunk` waits for (in-process runner tests set and clear it)."""
ENTERED = threading.Event()
"""Set by :func:`gated_chunk` once it holds the model."""
GATE_SAFETY_S = 30.0
"""A gated chunk gives up waiting after this, so a broken test cannot hang."""


def gated_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """Holds the model until :data:`GATE` is set (in-process tests only)."""
    ENTERED.set()
    GATE.wait(GATE_SAFETY_S)
    return echo_chunk(payload)


class GatedLoad:
    """A model load (``InProcessRunner(load=...)``) that blocks until
    ``release()``, then returns ``model``, or raises ``error`` when set."""

    def __init__(self, model: object = "the model", error: Exception | None = None):
        self.model, self.error = model, error
        self.gate = threading.Event()
        self.calls = 0

    def __call__(self) -> object:
        self.calls += 1
        self.gate.wait(GATE_SAFETY_S)
        if self.error is not None:
            raise self.error
        return self.model

    def release(self) -> None:
        self.gate.set()


FAKE_WIDTH, FAKE_HEIGHT = 640, 480
"""Size every image of :func:`planned_chunk` claims to have."""


def planned_chunk(payload: dict[str, Any]) -> dict[str, Any]:
    """A stand-in worker answering each call from its own parameters.

    Test double for the endpoint tests (the real worker runs in the
    end-to-end tests): a box per category at a fixed place, a point per
    category for pointing, one keypoint instance, OCR text "TEXT", the
    reference boxes plus one more for visual prompting, a square mask for a
    SAM point prompt. An image URL containing ``unreadable`` fails; one
    containing ``zebra`` also gets a phrase no label matches; ``sleep=S``
    in the URL's query waits S seconds first.
    """
    from converters.keypoint_sets import get_keypoint_set
    from converters.masks import mask_to_rle
    from converters.prediction import Prediction, RegionType

    images = []
    for image in payload["images"]:
        url = image["image"]
        if "sleep=" in url:
            time.sleep(float(url.split("sleep=", 1)[1].split("&")[0]))
        out = {"id": image["id"], "task_id": image.get("task_id")}
        if "unreadable" in url:
            images.append({**out, "error": f"cannot read image {url}: not an image"})
            continue
        calls = []
        for call in image["calls"]:
            task = call["task"]
            cats = list(call.get("categories") or [])
            preds: list[Prediction] = []
            if call.get("sam_points"):
                import numpy as np

                mask = np.zeros((FAKE_HEIGHT, FAKE_WIDTH), dtype=bool)
                x, y = (int(v) for v in call["sam_points"][0][:2])
                mask[max(0, y - 20) : y + 20, max(0, x - 20) : x + 20] = True
                rle = mask_to_rle(mask)
                preds.append(
                    Prediction(
                        type=RegionType.BOX,
                        label=cats[0],
                        coords=(x - 20, y - 20, x + 20, y + 20),
                        score=0.8,
                        mask=rle,
                    )
                )
            elif task == "visual_prompting":
                for b in [*call["visual_prompt_boxes"], [500, 300, 600, 400]]:
                    preds.append(
                        Prediction(
                            type=RegionType.BOX, label="object_1", coords=b, score=0.7
                        )
                    )
            elif task in ("pointing", "gui_pointing"):
                preds = [
                    Prediction(
                        type=RegionType.POINT, label=c, coords=(32, 24), score=0.6
                    )
                    for c in cats
                ]
            elif task == "keypoint":
                joints = get_keypoint_set(call["keypoint_type"]).joints
                preds.append(
                    Prediction(
                        type=RegionType.KEYPOINT,
                        label=cats[0],
                        coords=(0, 0, 320, 480),
                        score=0.8,
                        keypoints={
                            j: (10.0 * (i + 1), 20.0) for i, j in enumerate(joints)
                        },
                        instance_id=f"{cats[0]}1",
                    )
                )
            elif task.startswith("ocr"):
                preds.append(
                    Prediction(
                        type=RegionType.BOX,
                        label=cats[0],
                        coords=(64, 48, 128, 96),
                        score=0.9,
                        text="TEXT",
                    )
                )
            else:
                if "zebra" in url:
                    cats.append("zebra")
                preds = [
                    Prediction(
                        type=RegionType.BOX,
                        label=c,
                        coords=(64, 48, 320, 240),
                        score=0.9,
                    )
                    for c in cats
                ]
            calls.append(
                {
                    "key": call["key"],
                    "task": task,
                    "predictions": [p.to_dict() for p in preds],
                }
            )
        images.append(
            {
                **out,
                "width": FAKE_WIDTH,
                "height": FAKE_HEIGHT,
                "calls": calls,
                "error": None,
            }
        )
    return {"images": images, "pid": os.getpid()}
