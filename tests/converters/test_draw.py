import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converters import masks
from converters.colors import JOINT_COLOR, SKELETON_COLOR, label_color
from converters.draw import draw
from converters.keypoint_sets import ANIMAL, PERSON
from converters.prediction import Prediction

W, H = 320, 240
BLACK = (0, 0, 0)


def _canvas() -> Image.Image:
    return Image.new("RGB", (W, H), BLACK)


def _pixel(image: Image.Image, x: float, y: float) -> tuple[int, int, int]:
    return image.getpixel((int(x), int(y)))


def test_box_edges_have_the_label_colour():
    box = Prediction(type="box", label="car", coords=(40, 60, 200, 180))
    out = draw(_canvas(), [box], line_width=3)
    color = label_color("car")
    assert _pixel(out, 120, 180) == color  # bottom edge, middle
    assert _pixel(out, 40, 120) == color  # left edge
    assert _pixel(out, 200, 120) == color  # right edge
    assert _pixel(out, 120, 120) == BLACK  # inside stays untouched
    # The label tab sits above the box, filled with the label colour.
    assert _pixel(out, 41, 57) == color


def test_input_image_is_not_modified_and_arrays_are_accepted():
    original = _canvas()
    draw(original, [Prediction(type="box", label="car", coords=(1, 1, 50, 50))])
    assert original.getextrema() == ((0, 0), (0, 0), (0, 0))
    out = draw(
        np.zeros((H, W, 3), np.uint8),
        [Prediction(type="point", label="cup", coords=(100, 100))],
    )
    assert out.size == (W, H) and _pixel(out, 100, 100) == label_color("cup")


def test_label_colour_is_stable_across_processes():
    labels = ["car", "person", "word", "Ünïcode"]
    code = (
        "from converters.colors import label_color\n"
        f"print([label_color(x) for x in {labels!r}])\n"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=str(Path(__file__).resolve().parents[2]),
            env={"PYTHONHASHSEED": seed, "PATH": "", "PYTHONIOENCODING": "utf-8"},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert runs == {str([label_color(x) for x in labels])}
    assert len({label_color(x) for x in labels}) == len(labels)


def test_mask_overlay_changes_only_pixels_inside_the_mask():
    yy, xx = np.mgrid[:H, :W]
    mask = ((xx - 160) ** 2 + (yy - 120) ** 2 <= 50**2).astype(np.uint8)
    rle = masks.mask_to_rle(mask)
    background = np.random.default_rng(0).integers(0, 256, (H, W, 3), np.uint8)
    plain = Prediction(type="box", label="dog", coords=masks.rle_bbox(rle))
    with_mask = plain.with_(mask=rle)
    without = np.asarray(draw(Image.fromarray(background), [plain]))
    overlaid = np.asarray(draw(Image.fromarray(background), [with_mask]))
    changed = (without != overlaid).any(axis=2)
    assert not changed[mask == 0].any()
    assert changed[mask == 1].mean() > 0.8  # the outline covers the rest


def test_mask_of_wrong_size_is_refused():
    rle = masks.mask_to_rle(np.ones((10, 10)))
    box = Prediction(type="box", label="dog", coords=(0, 0, 10, 10), mask=rle)
    with pytest.raises(ValueError, match="mask of 'dog'"):
        draw(_canvas(), [box])


def _animal() -> Prediction:
    """Joints placed so that animal-only and person-only edges are far apart."""
    spots = {
        "left shoulder": (50, 50),
        "left hip": (50, 150),
        "neck": (150, 100),
        "root of tail": (250, 100),
        "left elbow": (20, 50),
        "left knee": (20, 150),
    }
    rest = [j for j in ANIMAL.joints if j not in spots]
    joints = {j: spots.get(j) for j in ANIMAL.joints}
    for k, j in enumerate(rest):
        joints[j] = (270 + (k % 3) * 15, 20 + k * 18)
    return Prediction(
        type="keypoint",
        label="animal",
        coords=(5, 5, 315, 235),
        keypoints=joints,
        instance_id="dog1",
    )


def test_animal_instance_uses_the_animal_skeleton():
    out = draw(_canvas(), [_animal()], line_width=3, show_labels=False)
    # neck - root of tail: an animal edge, absent from the person skeleton.
    assert _pixel(out, 200, 100) == SKELETON_COLOR
    assert ("neck", "root of tail") in ANIMAL.skeleton
    # left shoulder - left hip: a person edge the animal skeleton lacks.
    assert ("left shoulder", "left hip") in PERSON.skeleton
    assert ("left shoulder", "left hip") not in ANIMAL.skeleton
    assert _pixel(out, 50, 100) == BLACK
    assert _pixel(out, 150, 100) == JOINT_COLOR  # the neck joint


def test_person_instance_uses_the_person_skeleton():
    joints = {j: None for j in PERSON.joints}
    joints.update({"left shoulder": (50, 50), "left hip": (50, 150)})
    person = Prediction(
        type="keypoint", label="person", coords=(5, 5, 315, 235), keypoints=joints
    )
    out = draw(_canvas(), [person], line_width=3, show_labels=False)
    assert _pixel(out, 50, 100) == SKELETON_COLOR


def test_ocr_text_is_drawn_as_the_label():
    def tab(prediction):
        out = np.asarray(draw(_canvas(), [prediction], font_size=20))
        return out[:60]  # the tab row above the box

    base = Prediction(type="box", label="word", coords=(20, 60, 300, 200))
    long_text = tab(base.with_(text="A MUCH LONGER RECOGNISED TEXT"))
    label_only = tab(base)
    color = np.asarray(label_color("word"))
    # The tab grows with the text it shows: the OCR text, not the label.
    assert (long_text == color).all(axis=2).sum() > 2 * (label_only == color).all(
        axis=2
    ).sum()


def test_tile_grid_is_drawn_in_grey_without_touching_the_input():
    from converters.colors import TILE_COLOR
    from converters.draw import draw_tiles

    canvas = _canvas()
    out = draw_tiles(canvas, [[0, 0, 200, 200], [120, 40, 320, 240]], line_width=2)
    assert _pixel(out, 100, 0) == TILE_COLOR  # top edge of the first tile
    assert _pixel(out, 199, 100) == TILE_COLOR  # its right edge (x1 exclusive)
    assert _pixel(out, 120, 150) == TILE_COLOR  # the second tile's left edge
    assert _pixel(out, 60, 100) == BLACK  # inside: untouched
    assert canvas.getpixel((100, 0)) == BLACK
