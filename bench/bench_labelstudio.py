"""Speed of converters.labelstudio.writer.to_labelstudio (regions/s, one core).

Run pinned to one core:  taskset -c 0 .venv/bin/python bench/bench_labelstudio.py

Prints regions/s for boxes, polygons, OCR regions, and for parse_output followed
by to_labelstudio (the backend's hot path). Each case runs REPEATS times and the
best run is reported, as timeit does: on a shared machine slower runs measure
the neighbours. No assertions.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from converters.labelstudio.writer import to_labelstudio
from converters.parser import parse_output
from converters.prediction import Prediction

REGIONS_PER_IMAGE = 50
"""A dense but ordinary detection result."""

IMAGES = 1000
"""50,000 regions per run: long enough for a stable figure."""

REPEATS = 5
"""Runs per case; the fastest counts."""

WIDTH, HEIGHT = 1920, 1080
"""A full-HD image: percent factors are not round numbers."""


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


def _answers(rng: random.Random) -> list[str]:
    """Detection answers in Rex-Omni's grammar, REGIONS_PER_IMAGE boxes each."""
    out = []
    for _ in range(IMAGES):
        boxes = ",".join(
            f"<{rng.randint(0, 400)}><{rng.randint(0, 400)}>"
            f"<{rng.randint(500, 999)}><{rng.randint(500, 999)}>"
            for _ in range(REGIONS_PER_IMAGE)
        )
        out.append(
            "<|object_ref_start|>car<|object_ref_end|>"
            f"<|box_start|>{boxes}<|box_end|><|im_end|>"
        )
    return out


def _best(name: str, run: Callable[[], int]) -> None:
    best = None
    for _ in range(REPEATS):
        start = time.perf_counter()
        regions = run()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    print(f"{name:<32} {regions / best:>10,.0f} regions/s (best of {REPEATS})")


def _write(predictions: list[Prediction], **kwargs) -> None:
    """The results of one full-HD image for the ``label`` control."""
    to_labelstudio(
        predictions,
        from_name="label",
        to_name="image",
        width=WIDTH,
        height=HEIGHT,
        **kwargs,
    )


def _convert(images: list[list[Prediction]], **kwargs) -> Callable[[], int]:
    def run() -> int:
        for predictions in images:
            _write(predictions, **kwargs)
        return len(images) * REGIONS_PER_IMAGE

    return run


def _parse_and_convert(answers: list[str]) -> Callable[[], int]:
    def run() -> int:
        regions = 0
        for text in answers:
            parsed = parse_output(text, "detection", WIDTH, HEIGHT)
            regions += len(parsed.predictions)
            _write(parsed.predictions)
        return regions

    return run


def _parse_only(answers: list[str]) -> Callable[[], int]:
    def run() -> int:
        return sum(
            len(parse_output(text, "detection", WIDTH, HEIGHT).predictions)
            for text in answers
        )

    return run


def main() -> None:
    rng = random.Random(0)
    boxes = [_boxes(rng) for _ in range(IMAGES)]
    polygons = [_polygons(rng) for _ in range(IMAGES)]
    ocr = [_boxes(rng, text=True) for _ in range(IMAGES)]
    answers = _answers(rng)
    _best("boxes -> rectanglelabels", _convert(boxes))
    _best("polygons -> polygonlabels", _convert(polygons))
    _best(
        "ocr boxes -> rect + textarea",
        _convert(ocr, text_from_name="transcription"),
    )
    _best(
        "ocr polygons -> labels form",
        _convert(
            polygons,
            output="labels",
            geometry_from_name="poly",
            text_from_name="transcription",
        ),
    )
    _best("parse_output only (boxes)", _parse_only(answers))
    _best("parse_output + rectanglelabels", _parse_and_convert(answers))


if __name__ == "__main__":
    main()
