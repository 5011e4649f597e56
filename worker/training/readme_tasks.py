"""Training data for the tiny model meant to speak the README's configs.

Three tasks on 112 px images of drawn objects (``worker.training.objects``):

- ``detection`` with one to three phrases, of which none, one or more are on
  the image; other objects are drawn too, so the model must bind each
  phrase to its own object (the prompt every multi-label config becomes);
- ``visual_prompting``: two or three objects of one word, the prompt box is
  one of them and the answer holds all;
- ``keypoint``: one or two stick figures (with other objects beside them),
  every person's box and its 17 joints (not in ``TASK_SHARES``: measured
  too costly for what it learnt).

Examples come in runs of one task per batch (``batch_size``) so a batch's
answers have similar lengths: a keypoint answer is ten times a detection
answer, and the trainer pads every row to the longest.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from PIL import Image

from converters.answer import format_answer
from converters.prediction import Prediction, RegionType
from converters.prompts import VISUAL_PROMPT_KEY, build_prompt
from converters.tasks import Task
from worker.training.objects import (
    ABSENT_WORDS,
    OBJECT_WORDS,
    DrawnObject,
    boxes_apart,
    draw_object,
    object_box,
)
from worker.training.synthetic import IMAGE_SIZE, box_iou
from worker.training.trainer import TrainingExample

TASK_SHARES = {Task.DETECTION: 0.8, Task.VISUAL_PROMPTING: 0.2}
"""Share of batches per task: detection with several phrases is the main
path of real projects and the hardest to learn (binding phrase to object).
Keypoints are not trained: a keypoint batch costs 2.1 s against 0.27 s for
detection (its answers are ten times longer), so a tenth of the batches took
half the training time, and they reached only 0.73 of people boxed, PCK@0.1
0.28 (see ``worker.training.readme_model``); ``keypoint_example`` stays for
the tokenizer and for trying again."""

MAX_OBJECTS = 3
"""Objects on one detection image at most: three fit 112 px apart."""
MAX_PHRASES = 3
"""Phrases in one detection prompt at most (the README's detection config
asks three: person, car, truck)."""
PRESENT_BIAS = 0.85
"""Chance that a prompt slot names a word on the image (while one is left):
prompts hold present and absent words in every mix, then the order is
shuffled (filled in order, present words came first, and the model learnt
that later phrases answer None). At 0.75 a drawn phrase still got P(None)
0.08 on average, enough to win greedy decoding over a box's first bin."""
ABSENT_WORD_SHARE = 0.25
"""Of the absent words asked, the share that no image ever shows."""
EMPTY_IMAGE_SHARE = 0.05
"""Detection images with no object at all (every phrase answers None)."""
OBJECT_HEIGHTS = {"person": (48, 80), "car": (24, 32), "truck": (22, 30)}
"""Pixel height ranges of a detection object (others: ``DEFAULT_HEIGHTS``):
every object is two or more of the model's 28 px image tokens wide or tall
(cars and trucks: one tall, two wide). With objects of about one token (22
to 34 px) the model placed a box's centre 14 to 40 px off (2500 steps)."""
DEFAULT_HEIGHTS = (36, 52)
KEYPOINT_HEIGHTS = ((60, 104), (44, 64))
"""A lone person's height range, and each of two people's."""
GAP = 3
"""Pixels between two objects' boxes at least."""
KEYPOINT_TYPE = "person"
TWO_PEOPLE_SHARE = 0.25
"""Keypoint images with two people (the rest: one); two people's answer is
twice as long, and a batch costs as much as its longest answer."""
POSITION_CODE = 40
"""Amplitude (of 255) of the position code every scene carries: red grows
from left to right by twice this, green from top to bottom. The tiny model's
text attention cannot tell image positions apart at the rotary base that lets
it match a phrase to an object's colour at any distance (see
``worker.training.readme_model``), so each pixel shows where it is; the
objects' colours stay 16 or more apart in RGB with the code added (cat and
dog at the extremes; most pairs 30 or more)."""
BACKGROUND = (128, 128, 128)
"""One grey for every scene: with the position code on it, a background
pixel's red and green say where it is, with nothing else to subtract."""


@dataclass
class Scene:
    """An image and what is drawn on it."""

    image: Image.Image
    objects: list[DrawnObject]


def render_scene(
    rng: random.Random,
    words: Sequence[str],
    heights: Sequence[tuple[int, int]] | None = None,
    size: int = IMAGE_SIZE,
) -> Scene:
    """``words`` drawn apart on a ``BACKGROUND`` ``size`` px image (a word may repeat);
    ``heights`` gives each one's pixel height range. ValueError when they do
    not fit."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    objects: list[DrawnObject] = []
    for index, word in enumerate(words):
        low, high = (
            heights[index] if heights else OBJECT_HEIGHTS.get(word, DEFAULT_HEIGHTS)
        )
        for _attempt in range(200):
            box = object_box(rng, word, rng.randint(low, high), size)
            if all(boxes_apart(box, o.box, GAP) for o in objects):
                break
        else:
            raise ValueError(f"{list(words)} do not fit apart on {size} px")
        objects.append(draw_object(image, word, box))
    return Scene(add_position_code(image), objects)


def add_position_code(
    image: Image.Image, amplitude: int = POSITION_CODE
) -> Image.Image:
    """``image`` with red shifted by -amplitude..+amplitude from left to right
    and green likewise from top to bottom (clipped to 0..255)."""
    import numpy as np

    pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
    height, width = pixels.shape[:2]
    pixels[..., 0] += np.linspace(-amplitude, amplitude, width).round().astype(np.int16)
    pixels[..., 1] += (
        np.linspace(-amplitude, amplitude, height).round().astype(np.int16)[:, None]
    )
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def fitting_scene(rng: random.Random, words: list[str], heights=None) -> Scene:
    """A scene of ``words``, dropping the last word while they do not fit."""
    while True:
        try:
            return render_scene(rng, words, heights)
        except ValueError:
            words = words[:-1]
            heights = heights[:-1] if heights else None


def detection_example(
    rng: random.Random, phrases: int | None = None
) -> TrainingExample:
    """A detection question of ``phrases`` (1..MAX_PHRASES, random when None)
    about an image of up to MAX_OBJECTS objects."""
    count = 0 if rng.random() < EMPTY_IMAGE_SHARE else rng.randint(1, MAX_OBJECTS)
    scene = fitting_scene(rng, [rng.choice(OBJECT_WORDS) for _ in range(count)])
    asked = ask_words(rng, scene, phrases or rng.randint(1, MAX_PHRASES))
    return TrainingExample(
        scene.image, build_prompt(Task.DETECTION, asked), detection_answer(scene, asked)
    )


def ask_words(rng: random.Random, scene: Scene, count: int) -> list[str]:
    """``count`` distinct words to ask about ``scene``, present ones with
    PRESENT_BIAS per slot, absent ones otherwise."""
    present = sorted({o.word for o in scene.objects})
    absent = [w for w in OBJECT_WORDS if w not in present]
    rng.shuffle(present)
    asked: list[str] = []
    while len(asked) < count:
        if present and rng.random() < PRESENT_BIAS:
            asked.append(present.pop())
            continue
        pool = [w for w in ABSENT_WORDS if w not in asked]
        if absent and rng.random() >= ABSENT_WORD_SHARE:
            pool = absent
        word = rng.choice(pool)
        if word in absent:
            absent.remove(word)
        asked.append(word)
    rng.shuffle(asked)
    return asked


def detection_answer(scene: Scene, asked: Sequence[str]) -> str:
    """Boxes of the asked words' objects, in the asked order (None for an
    asked word not drawn); objects of words not asked are not listed."""
    width, height = scene.image.size
    return format_answer(
        Task.DETECTION,
        [
            Prediction(RegionType.BOX, o.word, o.box)
            for o in scene.objects
            if o.word in asked
        ],
        width,
        height,
        categories=list(asked),
    )


def look_alike_scene(rng: random.Random, word: str | None = None) -> Scene:
    """Two or three objects of one word (random when None)."""
    word = word or rng.choice(OBJECT_WORDS)
    while True:
        scene = fitting_scene(rng, [word] * rng.randint(2, 3))
        if len(scene.objects) >= 2:
            return scene


def visual_prompt_example(rng: random.Random) -> TrainingExample:
    """Two or three objects of one word; the prompt box is one of them."""
    scene = look_alike_scene(rng)
    reference = rng.choice(scene.objects).box
    width, height = scene.image.size
    prompt = build_prompt(
        Task.VISUAL_PROMPTING,
        None,
        visual_prompt_boxes=[reference],
        image_size=(width, height),
    )
    answer = format_answer(
        Task.VISUAL_PROMPTING,
        [Prediction(RegionType.BOX, VISUAL_PROMPT_KEY, o.box) for o in scene.objects],
        width,
        height,
    )
    return TrainingExample(scene.image, prompt, answer)


def keypoint_example(rng: random.Random) -> TrainingExample:
    """One or two people (each with its joints) and maybe another object."""
    people = 2 if rng.random() < TWO_PEOPLE_SHARE else 1
    heights = [KEYPOINT_HEIGHTS[people - 1]] * people
    words = ["person"] * people
    if rng.random() < 0.5:
        other = rng.choice([w for w in OBJECT_WORDS if w != "person"])
        words.append(other)
        heights.append(OBJECT_HEIGHTS.get(other, DEFAULT_HEIGHTS))
    scene = fitting_scene(rng, words, heights)
    width, height = scene.image.size
    return TrainingExample(
        scene.image,
        build_prompt(Task.KEYPOINT, [KEYPOINT_TYPE], keypoint_type=KEYPOINT_TYPE),
        format_answer(Task.KEYPOINT, keypoint_truth(scene), width, height),
    )


def keypoint_truth(scene: Scene) -> list[Prediction]:
    """Every person of ``scene`` as a keypoint instance, left to right."""
    people = sorted(
        (o for o in scene.objects if o.word == "person"), key=lambda o: o.box[0]
    )
    return [
        Prediction(RegionType.KEYPOINT, "person", o.box, keypoints=dict(o.joints or {}))
        for o in people
    ]


_MAKERS = {
    Task.DETECTION: detection_example,
    Task.VISUAL_PROMPTING: visual_prompt_example,
    Task.KEYPOINT: keypoint_example,
}


def readme_examples(*, batch_size: int, seed: int = 0) -> Iterator[TrainingExample]:
    """An endless, seeded stream: ``batch_size`` examples of one task, then
    the next task drawn by TASK_SHARES."""
    rng = random.Random(seed)
    tasks, weights = zip(*TASK_SHARES.items(), strict=True)
    while True:
        make = _MAKERS[rng.choices(tasks, weights)[0]]
        for _ in range(batch_size):
            yield make(rng)


HELD_OUT_SEED_OFFSET = 2_000_003
"""Scores use ``seed + this``: scenes training never drew."""


def best_match(box, boxes) -> tuple[int | None, float]:
    """Index of the box in ``boxes`` that ``box`` overlaps most, and the IoU."""
    scored = [(box_iou(box, b), i) for i, b in enumerate(boxes)]
    iou, index = max(scored, default=(0.0, None))
    return index, iou
