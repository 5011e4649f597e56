"""Stable colours for labels and the fixed colours of keypoint drawings.

A label's colour comes from zlib.crc32 of its text, never from Python's
``hash`` (salted per process), so a label looks the same in every run.
"""

from __future__ import annotations

import colorsys
import zlib

SATURATION = 0.7
"""Strong enough to tell labels apart, light enough for black tab text."""

BRIGHTNESS = 0.95
"""HSV value: bright colours stay visible on dark and busy images."""

SKELETON_COLOR = (173, 216, 230)
"""Light blue limbs, as upstream draws them."""

JOINT_COLOR = (51, 153, 255)
"""Blue joints with a white ring, as upstream draws them."""

RING_COLOR = (255, 255, 255)
"""Outline around points and joints so they stand out on any background."""

TILE_COLOR = (160, 160, 160)
"""Grey tile grid (``rexlabel predict --draw`` of a tiled image): seen on
light and dark images, and never a label's (labels are saturated)."""

Color = tuple[int, int, int]


def label_color(label: str) -> Color:
    """The RGB colour of ``label``: same label, same colour, in every process."""
    hue = (zlib.crc32(label.encode("utf-8")) % 360) / 360.0
    r, g, b = colorsys.hsv_to_rgb(hue, SATURATION, BRIGHTNESS)
    return (round(r * 255), round(g * 255), round(b * 255))


def text_color(background: Color) -> Color:
    """Black or white, whichever reads better on ``background`` (luma)."""
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)
