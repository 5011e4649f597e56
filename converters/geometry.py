"""Rex-Omni geometry: image resizing for the vision encoder and coordinate bins.

Rex-Omni writes every coordinate as one of 1000 tokens ``<0>`` .. ``<999>``: a
bin of the ORIGINAL image's width (x) or height (y). The resize below only
decides how many visual tokens the image costs; it never enters the bin maths.
``docs/rex-omni-output.md`` describes both rules.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from converters.grammar import MAX_BIN, bin_token

IMAGE_FACTOR = 28
"""Side lengths are multiples of 28 px: a 14 px ViT patch times the 2x2 token merge."""

MIN_PIXELS = 16 * 28 * 28
"""Smallest resized area (12,544 px, 16 visual tokens): upstream's ``min_pixels``."""

MAX_PIXELS = 2560 * 28 * 28
"""Largest resized area (2,007,040 px, 2,560 visual tokens): upstream's max_pixels."""

MAX_IMAGE_PIXELS = 32 * MAX_PIXELS
"""Most pixels decoded for one image (64,225,280, e.g. 9800 x 6550). Untiled, the
model sees at most MAX_PIXELS and more only costs memory; tiled (docs/tiling.md),
up to this many pixels are cut into tiles the model sees at full detail. A decode
peaks at 1 to 7 bytes a pixel (grey 1-2, RGB 3, RGBA 7 with its RGB copy; 64 to
450 MB here); 32x still takes a 61 MP camera photo or an 8K frame whole."""

MAX_ASPECT_RATIO = 200
"""qwen_vl_utils refuses images longer than 200 times their width (or the reverse)."""


def smart_resize(
    height: int,
    width: int,
    factor: int = IMAGE_FACTOR,
    min_pixels: int = MIN_PIXELS,
    max_pixels: int = MAX_PIXELS,
) -> tuple[int, int]:
    """The ``(height, width)`` the Qwen2.5-VL processor resizes an image to.

    Same arithmetic as qwen_vl_utils 0.0.14 (``docs/rex-omni-output.md``,
    "Resize"): round each side to
    a multiple of ``factor`` (Python ``round``, ties to even, at least
    ``factor``), then scale down to fit ``max_pixels`` (floor) or up to reach
    ``min_pixels`` (ceil). Raises ValueError for a side that is not positive or
    an aspect ratio above 200. Note the argument order: height first.
    """
    if not (height > 0 and width > 0):
        raise ValueError(
            f"image height and width must be positive, got {height}x{width}"
        )
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise ValueError(
            f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
            f"got {max(height, width) / min(height, width)}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def vision_tokens(height: int, width: int) -> int:
    """How many visual tokens the model spends on an image of this size."""
    h_bar, w_bar = smart_resize(height, width)
    return (h_bar // IMAGE_FACTOR) * (w_bar // IMAGE_FACTOR)


def pixel_to_bin(value: float, size: float) -> int:
    """The coordinate bin of ``value`` pixels along a side of ``size`` pixels.

    Upstream's rule: normalise and clamp to 0..1, multiply by 999 and truncate.
    So ``size`` gives 999, ``size/2`` gives 499 and a negative value gives 0.
    """
    normalised = min(1.0, max(0.0, value / size))
    return min(MAX_BIN, max(0, int(normalised * MAX_BIN)))


def bin_to_pixel(bin_index: float, size: float) -> float:
    """Pixels along a side of ``size`` pixels for a bin: ``bin / 999 * size``.

    Exactly upstream's float expression (no half-bin offset), so bin 999 is the
    far edge. The parser clamps bins to 0..999 before calling this.
    """
    return bin_index / MAX_BIN * size


def box_to_bins(
    box: Sequence[float], width: float, height: float
) -> tuple[int, int, int, int]:
    """Bins ``(x0, y0, x1, y1)`` of a box given in pixels (xyxy, original image).

    Corners are not reordered (upstream does not reorder visual-prompt boxes).
    """
    x0, y0, x1, y1 = box
    return tuple(map(pixel_to_bin, (x0, y0, x1, y1), (width, height, width, height)))


def bins_to_box(
    bins: Sequence[int], width: float, height: float
) -> tuple[float, float, float, float]:
    """Pixels ``(x0, y0, x1, y1)`` of a box given as bins."""
    x0, y0, x1, y1 = bins
    return tuple(map(bin_to_pixel, (x0, y0, x1, y1), (width, height, width, height)))


def box_to_tokens(box: Sequence[float], width: float, height: float) -> str:
    """A pixel box as four coordinate tokens, e.g. ``<286><760><374><855>``."""
    return "".join(bin_token(b) for b in box_to_bins(box, width, height))


def check_image_side(value: Any, name: str) -> None:
    """Raise ValueError unless ``value`` (the image's ``name``: width or height,
    pixels) is a finite positive real number; bools are refused."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"image {name} must be a positive number, got {value!r}")
