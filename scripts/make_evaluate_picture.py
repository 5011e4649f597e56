"""Draw the README's picture of ``rexlabel evaluate``'s report.html.

Usage::

    python scripts/make_evaluate_picture.py docs/images/evaluate-report.png

``--html FILE`` also keeps the report.html.

Hand-made but realistic data, the same on every run (seeded): street scenes of
640x480 pixels with cars, people and signs; predictions find most of them with
a few pixels of jitter, miss more small signs than cars, call a few signs
"person", and add low-scoring boxes on nothing. The real ``build_report`` and
``write_html`` make the page, and Debian's chromium (tests/browser.py) takes
the screenshot: the top of the page down to the precision-recall curves.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backend.evaluate.html import write_html
from backend.evaluate.pairs import ImagePair
from backend.evaluate.report import build_report
from converters.prediction import Prediction, RegionType

SEED = 13
"""Fixed, so the picture only changes when the report does."""

IMAGES = 150
WIDTH, HEIGHT = 640, 480

LABELS = {
    # label: (regions per image (max), typical width px, found, relabelled as)
    "car": (4, 120, 0.93, None),
    "person": (3, 50, 0.85, None),
    "sign": (2, 28, 0.68, ("person", 0.05)),
}
"""What each label's ground truth looks like and how often the model finds it:
small signs are missed most, and a few are called "person"."""

FALSE_POSITIVES_PER_IMAGE = 1.2
"""Boxes on nothing per image (mean), scored low: shadows, reflections."""

VIEWPORT = {"width": 1360, "height": 900}
"""The report's 1,320 px column, three curves side by side."""

MAX_BYTES = 300_000
"""The picture stays under this size in the repository; colours are reduced
until it does."""


def _box(rng: random.Random, label: str, width: float) -> tuple[float, ...]:
    w = width * rng.uniform(0.6, 1.6)
    h = w * (0.7 if label == "car" else 2.4 if label == "person" else 1.0)
    x0 = rng.uniform(0, WIDTH - w)
    y0 = rng.uniform(HEIGHT * 0.2, HEIGHT - h)
    return (x0, y0, x0 + w, y0 + h)


def _jitter(rng: random.Random, coords: tuple[float, ...], spread: float) -> tuple:
    x0, y0, x1, y1 = coords
    w, h = x1 - x0, y1 - y0
    return tuple(
        v + rng.gauss(0, spread) * size
        for v, size in ((x0, w), (y0, h), (x1, w), (y1, h))
    )


def make_pairs(seed: int = SEED) -> list[ImagePair]:
    """The scenes and the model's answers (see the module docstring)."""
    rng = random.Random(seed)
    pairs = []
    for n in range(IMAGES):
        gt, pred = [], []
        for label, (most, width, found, relabel) in LABELS.items():
            for _ in range(rng.randint(0, most)):
                coords = _box(rng, label, width)
                gt.append(Prediction(RegionType.BOX, label, coords))
                if rng.random() > found:
                    continue
                spread = rng.choice((0.02, 0.03, 0.05, 0.12))  # a few sloppy boxes
                score = min(0.99, max(0.05, rng.gauss(0.8 - 2 * spread, 0.12)))
                said = label
                if relabel and rng.random() < relabel[1]:
                    said, score = relabel[0], score * 0.6
                jittered = _jitter(rng, coords, spread)
                pred.append(
                    Prediction(RegionType.BOX, said, jittered, score=round(score, 2))
                )
        for _ in range(int(rng.expovariate(1 / FALSE_POSITIVES_PER_IMAGE))):
            label = rng.choice(("car", "person", "sign", "sign"))
            coords = _box(rng, label, LABELS[label][1])
            score = round(rng.uniform(0.05, 0.75), 2)
            pred.append(Prediction(RegionType.BOX, label, coords, score=score))
        pairs.append(ImagePair(f"street_{n:04d}.jpg", WIDTH, HEIGHT, gt, pred))
    return pairs


def make_report() -> dict:
    pairs = make_pairs()
    report = build_report(pairs)
    report["inputs"] = {
        "ground_truth": f"{IMAGES} synthetic street scenes (this script)",
        "predictions": "the same scenes, found with made-up misses and shifts",
    }
    return report


def screenshot(html: Path, out: Path) -> None:
    """The page from the top to the end of the precision-recall curves."""
    from tests.browser import launch_chromium

    with launch_chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(html.as_uri(), wait_until="load")
        bottom = page.evaluate(
            "() => { const c = document.querySelector('#curves ~ .figures');"
            " const r = c.getBoundingClientRect(); return r.bottom + window.scrollY; }"
        )
        page.screenshot(
            path=str(out),
            full_page=True,
            clip={"x": 0, "y": 0, "width": VIEWPORT["width"], "height": bottom + 16},
        )
    _shrink(out)


def _shrink(path: Path) -> None:
    """Fewer colours until the PNG is under :data:`MAX_BYTES` (text and flat
    charts survive 256 colours unchanged to the eye)."""
    if path.stat().st_size <= MAX_BYTES:
        return
    for colours in (256, 128, 64):
        picture = Image.open(path).convert("RGB")
        picture.quantize(colours, dither=Image.Dither.NONE).save(path, optimize=True)
        if path.stat().st_size <= MAX_BYTES:
            return
    raise SystemExit(f"{path}: still {path.stat().st_size} bytes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--html", type=Path, help="also keep the report.html here")
    args = parser.parse_args(argv)
    report = make_report()
    with tempfile.TemporaryDirectory() as tmp:
        html = args.html or Path(tmp) / "report.html"
        write_html(report, html)
        screenshot(html, args.out)
    size = Image.open(args.out).size
    print(f"{args.out}: {size[0]}x{size[1]}, {args.out.stat().st_size:,} bytes")
    for label, entry in report["labels"].items():
        print(
            f"  {label}: AP {entry['ap']:.3f}, threshold "
            f"{entry['recommended_threshold']}, F1 {entry['at_threshold']['f1']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
