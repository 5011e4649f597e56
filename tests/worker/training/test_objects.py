"""The drawn stand-ins for the README's labels (worker.training.objects)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from converters.keypoint_sets import PERSON
from worker.training.objects import (
    COLOURS,
    OBJECT_WORDS,
    boxes_apart,
    draw_object,
    object_box,
    person_joints,
)

BACKGROUND = (128, 128, 128)
BOX = (20.0, 10.0, 80.0, 90.0)


@pytest.mark.parametrize("word", OBJECT_WORDS)
def test_each_word_is_drawn_in_its_colour_inside_its_box_only(word: str) -> None:
    image = Image.new("RGB", (112, 112), BACKGROUND)
    drawn = draw_object(image, word, BOX)  # not the word's aspect: clipped
    pixels = np.asarray(image)
    x0, y0, x1, y1 = (int(v) for v in BOX)
    outside = pixels.copy()
    outside[y0 : y1 + 1, x0 : x1 + 1] = BACKGROUND
    assert (outside == BACKGROUND).all(), f"{word} drawn outside {BOX}"
    inside = pixels[y0:y1, x0:x1].reshape(-1, 3)
    share = (inside == COLOURS[word]).all(axis=1).mean()
    assert share > 0.1, f"{word}: only {share:.0%} of its box in its colour"
    assert drawn.word == word and drawn.box == BOX


def test_a_person_has_every_joint_of_the_person_set_inside_its_box() -> None:
    joints = draw_object(Image.new("RGB", (112, 112)), "person", BOX).joints
    assert set(joints) == set(PERSON.joints)
    for name, (x, y) in joints.items():
        assert BOX[0] <= x <= BOX[2] and BOX[1] <= y <= BOX[3], name
    # facing the viewer: the person's left is on the image's right
    for side in ("eye", "shoulder", "wrist", "hip", "ankle"):
        assert joints[f"left {side}"][0] > joints[f"right {side}"][0], side
    assert joints == person_joints(BOX)


def test_an_unknown_word_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="'horse'"):
        draw_object(Image.new("RGB", (112, 112)), "horse", BOX)


def test_object_boxes_keep_the_words_aspect_and_fit_the_image() -> None:
    rng = random.Random(0)
    for word, aspect in (("car", 2.0), ("person", 0.5), ("cat", 1.0)):
        for _ in range(50):
            x0, y0, x1, y1 = object_box(rng, word, 30, 112)
            assert 0 <= x0 < x1 <= 112 and 0 <= y0 < y1 <= 112
            assert (x1 - x0) == pytest.approx(30 * aspect, abs=1)


def test_boxes_apart_measures_the_gap_on_either_axis() -> None:
    assert boxes_apart((0, 0, 10, 10), (13, 0, 20, 10), 3)
    assert not boxes_apart((0, 0, 10, 10), (12, 0, 20, 10), 3)
    assert boxes_apart((0, 0, 10, 10), (0, 20, 10, 30), 10)
    assert not boxes_apart((0, 0, 10, 10), (5, 5, 15, 15), 0)
