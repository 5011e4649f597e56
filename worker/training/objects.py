"""Drawn stand-ins for the README's labels, for the tiny model to learn.

The README's copy-paste configs ask for ``person``, ``car`` (and its alias
``truck``), ``cat`` and ``dog``, and for a person's joints. The tiny test
model learns these words on simple drawings, one colour and silhouette per
word, so a prompt naming several of them has one right answer per object:

- ``person``: a dark blue stick figure: a head (a disc, on which the nose,
  eyes and ears are placed), shoulders, arms and legs whose joints are the
  other COCO joints, so every keypoint has a place to be;
- ``car``: a red body with a roof and two wheels;
- ``truck``: a green cargo box with a cab and two wheels;
- ``cat``: an orange round face with pointed ears;
- ``dog``: a brown round face with hanging dark ears.

Every object fills its box: ``box`` is xyxy in pixels of the image, and the
joints of a person are in the same pixels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

from converters.keypoint_sets import PERSON

OBJECT_WORDS = ("person", "car", "truck", "cat", "dog")
"""The labels of the README's detection and mask configs, each with a look."""

ABSENT_WORDS = ("bird", "bottle", "chair", "phone")
"""Words a prompt may ask for that no image ever shows (the answer: None)."""

COLOURS: dict[str, tuple[int, int, int]] = {
    "person": (45, 45, 170),
    "car": (215, 45, 45),
    "truck": (45, 160, 60),
    "cat": (215, 150, 25),
    "dog": (120, 75, 30),
}
"""One colour per word, far apart in RGB and from the grey backgrounds. Red
and green stay within 45..215, so the position code added to a scene
(``readme_tasks.POSITION_CODE``, up to 40 either way) never clips: clipped,
the top rows of a dark object looked alike and boxes snapped to the top."""

WHEEL = (20, 20, 20)
"""Wheels and a dog's ears: near black."""

ASPECT = {"person": 0.5, "car": 2.0, "truck": 2.2, "cat": 1.0, "dog": 1.0}
"""Width / height of each object's box."""

PERSON_JOINTS: dict[str, tuple[float, float]] = {
    "nose": (0.5, 0.11),
    "left eye": (0.58, 0.08),
    "right eye": (0.42, 0.08),
    "left ear": (0.68, 0.10),
    "right ear": (0.32, 0.10),
    "left shoulder": (0.78, 0.28),
    "right shoulder": (0.22, 0.28),
    "left elbow": (0.90, 0.44),
    "right elbow": (0.10, 0.44),
    "left wrist": (0.96, 0.58),
    "right wrist": (0.04, 0.58),
    "left hip": (0.66, 0.60),
    "right hip": (0.34, 0.60),
    "left knee": (0.72, 0.79),
    "right knee": (0.28, 0.79),
    "left ankle": (0.78, 0.98),
    "right ankle": (0.22, 0.98),
}
"""Each joint as a fraction of the person's box (x, y). A figure faces the
viewer, so its left side is on the image's right, as COCO labels people."""

PERSON_BONES = (
    ("left shoulder", "right shoulder"),
    ("left shoulder", "left elbow"),
    ("left elbow", "left wrist"),
    ("right shoulder", "right elbow"),
    ("right elbow", "right wrist"),
    ("left hip", "right hip"),
    ("left hip", "left knee"),
    ("left knee", "left ankle"),
    ("right hip", "right knee"),
    ("right knee", "right ankle"),
)
"""The lines of the stick figure (the spine is drawn from neck to hips)."""

if set(PERSON_JOINTS) != set(PERSON.joints):
    raise AssertionError("PERSON_JOINTS must name every joint of the person set")


@dataclass(frozen=True)
class DrawnObject:
    """One drawn object: its word, its box (xyxy pixels) and, for a person,
    its joints (joint name -> (x, y) pixels)."""

    word: str
    box: tuple[float, float, float, float]
    joints: dict[str, tuple[float, float]] | None = None


def object_box(
    rng: random.Random, word: str, height: float, size: int
) -> tuple[float, float, float, float]:
    """A box of ``word``'s aspect, ``height`` px tall, at a random place that
    fits a ``size`` x ``size`` image."""
    width = min(size, round(height * ASPECT[word]))
    height = min(size, round(height))
    x0 = rng.randint(0, size - width)
    y0 = rng.randint(0, size - height)
    return (float(x0), float(y0), float(x0 + width), float(y0 + height))


def person_joints(box: Sequence[float]) -> dict[str, tuple[float, float]]:
    """The stick figure's joints in pixels, for a person drawn in ``box``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return {j: (x0 + fx * w, y0 + fy * h) for j, (fx, fy) in PERSON_JOINTS.items()}


def draw_object(image: Image.Image, word: str, box: Sequence[float]) -> DrawnObject:
    """Draw ``word`` filling ``box`` (xyxy pixels, whole numbers) on
    ``image``; nothing is drawn outside the box."""
    if word not in COLOURS:
        raise ValueError(f"no drawing for {word!r}; choose one of {OBJECT_WORDS}")
    left, top, right, bottom = (round(v) for v in box)
    box = (float(left), float(top), float(right), float(bottom))
    crop = image.crop((left, top, right, bottom))
    _draw_in(crop, word)
    image.paste(crop, (left, top))
    joints = person_joints(box) if word == "person" else None
    return DrawnObject(word, box, joints)


def _draw_in(image: Image.Image, word: str) -> None:
    """Draw ``word`` filling all of ``image`` (a crop of the object's box)."""
    draw = ImageDraw.Draw(image)
    x0, y0 = 0.0, 0.0
    w, h = float(image.width), float(image.height)
    x1, y1 = w, h

    def at(fx: float, fy: float) -> tuple[float, float]:
        return (x0 + fx * w, y0 + fy * h)

    colour = COLOURS[word]
    if word == "person":
        joints = person_joints((x0, y0, x1, y1))
        line = max(2, round(w / 8))
        radius = 0.11 * h
        nose = joints["nose"]
        draw.ellipse(
            (nose[0] - radius, nose[1] - radius, nose[0] + radius, nose[1] + radius),
            fill=colour,
        )
        neck = at(0.5, 0.28)
        draw.line([neck, at(0.5, 0.6)], fill=colour, width=line)
        for a, b in PERSON_BONES:
            draw.line([joints[a], joints[b]], fill=colour, width=line)
        return
    if word in ("car", "truck"):
        if word == "car":
            draw.rectangle((*at(0.2, 0.0), *at(0.75, 0.4)), fill=colour)
            draw.rectangle((*at(0.0, 0.35), *at(1.0, 0.8)), fill=colour)
        else:
            draw.rectangle((*at(0.0, 0.0), *at(0.66, 0.8)), fill=colour)
            draw.rectangle((*at(0.7, 0.3), *at(1.0, 0.8)), fill=colour)
        r = 0.2 * h
        for fx in (0.22, 0.78):
            cx, cy = at(fx, 0.8)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=WHEEL)
        return
    draw.ellipse((*at(0.1, 0.2), *at(0.9, 1.0)), fill=colour)
    if word == "cat":
        for left, tip, right in ((0.12, 0.25, 0.45), (0.55, 0.75, 0.88)):
            draw.polygon([at(left, 0.45), at(tip, 0.0), at(right, 0.35)], fill=colour)
    else:
        for fx0, fx1 in ((0.0, 0.22), (0.78, 1.0)):
            draw.ellipse((*at(fx0, 0.25), *at(fx1, 0.8)), fill=WHEEL)


def boxes_apart(a: Sequence[float], b: Sequence[float], gap: float) -> bool:
    """Whether boxes ``a`` and ``b`` are at least ``gap`` px apart on some axis."""
    return max(b[0] - a[2], a[0] - b[2], b[1] - a[3], a[1] - b[3]) >= gap
