"""Speed of converters.labelstudio.to_labelstudio (regions per second, one core).

Run pinned to one core:  taskset -c 0 .venv/bin/python bench/bench_labelstudio.py
Prints regions/s for boxes, polygons and OCR regions, by wall clock and by the
process's CPU time (the fairer figure on a shared, busy machine); no assertions.
"""

from __future__ import annotations

import random
import time

from converters.labelstudio import to_labelstudio
from converters.prediction import Prediction

REGIONS_PER_IMAGE = 50
"""A dense but ordinary detection result."""

IMAGES = 2000
"""100,000 regions per case: long enough for a stable figure."""

WIDTH, HEIGHT = 1920, 1080


def _boxes(rng: random.Random, text: bool = False) -> list[Prediction]:
    out = []
    for _ in range(REGIONS_PER_IMAGE):
        x0, y0 = rng.uniform(0, WIDTH - 50), rng.uniform(0, HEIGHT - 50)
        out.append(
            Prediction(
                type="box",
                label="car",
                coords=(x0, y0, x0 + 40.5, y0 + 30.25),
                score=rng.random(),
                text="ABC-123" if text else None,
            )
        )
    return out


def _polygons(rng: random.Random) -> list[Prediction]:
    out = []
    for _ in range(REGIONS_PER_IMAGE):
        x0, y0 = rng.uniform(0, WIDTH - 50), rng.uniform(0, HEIGHT - 50)
        points = [(x0, y0), (x0 + 40, y0), (x0 + 45, y0 + 30), (x0, y0 + 32)]
        out.append(Prediction(type="polygon", label="word", coords=points, score=0.5))
    return out


def _measure(name: str, images: list[list[Prediction]], **kwargs) -> None:
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    for predictions in images:
        count += len(
            to_labelstudio(
                predictions,
                from_name="label",
                to_name="image",
                width=WIDTH,
                height=HEIGHT,
                **kwargs,
            )
        )
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    regions = len(images) * REGIONS_PER_IMAGE
    print(
        f"{name:<30} {regions / elapsed:>10,.0f} regions/s wall, "
        f"{regions / cpu:>10,.0f} regions/s CPU ({count} results)"
    )


def main() -> None:
    rng = random.Random(0)
    boxes = [_boxes(rng) for _ in range(IMAGES)]
    polygons = [_polygons(rng) for _ in range(IMAGES)]
    ocr = [_boxes(rng, text=True) for _ in range(IMAGES)]
    _measure("boxes -> rectanglelabels", boxes)
    _measure("polygons -> polygonlabels", polygons)
    _measure("ocr boxes -> rect + textarea", ocr, text_from_name="transcription")
    _measure(
        "ocr polygons -> labels form",
        polygons,
        output="labels",
        geometry_from_name="poly",
        text_from_name="transcription",
    )


if __name__ == "__main__":
    main()
