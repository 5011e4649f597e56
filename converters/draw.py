"""Draw canonical predictions on an image (for previews, docs and debugging).

Boxes, points, polygons, masks (alpha overlay), keypoint skeletons and labels on
filled tabs. Colours come from :mod:`converters.colors` (stable per label).
Keypoint instances use the skeleton of the keypoint set their joint names
belong to (person, animal or hand), so animals get the animal skeleton.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from converters import masks
from converters.colors import (
    JOINT_COLOR,
    RING_COLOR,
    SKELETON_COLOR,
    TILE_COLOR,
    label_color,
    text_color,
)
from converters.keypoint_sets import guess_keypoint_set
from converters.prediction import Prediction, RegionType

MASK_ALPHA = 0.45
"""Mask overlay opacity: the colour is clear and the object still shows through."""

LINE_WIDTH_FRACTION = 1 / 250
"""Outline width as a share of the shorter image side: 4 px on a 1000 px image."""

MIN_LINE_WIDTH = 2
"""Thinner outlines vanish when the preview is scaled down."""

FONT_SIZE_FRACTION = 1 / 40
"""Label text height as a share of the shorter image side."""

MIN_FONT_SIZE = 12
"""Smaller text is unreadable."""

TAB_PADDING = 2
"""Pixels between the label text and the edge of its tab."""

TILE_LINE_FRACTION = 1 / 1000
"""Tile grid line width as a share of the shorter side: thinner than the
regions' outlines, so the grid stays in the background."""


def _rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")  # always a copy
    array = np.asarray(image)
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        return Image.fromarray(array.astype(np.uint8)).convert("RGB")
    raise ValueError(
        f"image must be a PIL image or an HxW[x3|4] array, got {array.shape}"
    )


def _caption(p: Prediction, show_scores: bool) -> str:
    if p.type is RegionType.KEYPOINT and p.instance_id:
        text = p.instance_id
    else:
        text = p.text if p.text else p.label
    if show_scores and p.score is not None:
        text = f"{text} {p.score:.2f}"
    return text


class _Painter:
    def __init__(
        self, image: Image.Image, line_width: int | None, font_size: int | None
    ):
        side = min(image.size)
        self.image = image
        self.draw = ImageDraw.Draw(image)
        self.width = line_width or max(
            MIN_LINE_WIDTH, round(side * LINE_WIDTH_FRACTION)
        )
        size = font_size or max(MIN_FONT_SIZE, round(side * FONT_SIZE_FRACTION))
        self.font = ImageFont.load_default(size=size)

    def overlay(self, p: Prediction, alpha: float) -> None:
        w, h = self.image.size
        if list(p.mask["size"]) != [h, w]:
            raise ValueError(
                f"mask of {p.label!r} is {p.mask['size']} (h, w) but the image is "
                f"[{h}, {w}]"
            )
        inside = masks.rle_to_mask(p.mask).astype(bool)
        pixels = np.asarray(self.image, dtype=np.float32).copy()
        color = np.asarray(label_color(p.label), dtype=np.float32)
        pixels[inside] = pixels[inside] * (1.0 - alpha) + color * alpha
        self.image.paste(Image.fromarray(np.round(pixels).astype(np.uint8)))

    def dot(self, xy, fill, radius: int) -> None:
        x, y = xy
        self.draw.ellipse(
            (x - radius, y - radius, x + radius, y + radius),
            fill=fill,
            outline=RING_COLOR,
            width=max(1, radius // 3),
        )

    def shape(self, p: Prediction) -> tuple[float, float]:
        """Draw the geometry; return where its label tab goes (top-left)."""
        color = label_color(p.label)
        if p.type is RegionType.POINT:
            radius = 2 * self.width
            self.dot(p.coords, color, radius)
            return (p.coords[0] - radius, p.coords[1] - radius)
        if p.type is RegionType.POLYGON:
            points = [tuple(v) for v in p.coords]
            self.draw.line(
                [*points, points[0]], fill=color, width=self.width, joint="curve"
            )
            return points[0]
        x0, y0, x1, y1 = p.coords
        self.draw.rectangle((x0, y0, x1, y1), outline=color, width=self.width)
        if p.type is RegionType.KEYPOINT:
            self.skeleton(p)
        return (x0, y0)

    def skeleton(self, p: Prediction) -> None:
        joints = {n: xy for n, xy in (p.keypoints or {}).items() if xy is not None}
        kp_set = guess_keypoint_set(p.keypoints or {})
        if kp_set is not None:
            lookup = {n.strip().lower(): xy for n, xy in joints.items()}
            for a, b in kp_set.skeleton:
                if a in lookup and b in lookup:
                    self.draw.line(
                        [lookup[a], lookup[b]], fill=SKELETON_COLOR, width=self.width
                    )
        for xy in joints.values():
            self.dot(xy, JOINT_COLOR, max(2, self.width))

    def tab(self, text: str, anchor: tuple[float, float], color) -> None:
        left, top, right, bottom = self.draw.textbbox((0, 0), text, font=self.font)
        tab_w = right - left + 2 * TAB_PADDING
        tab_h = bottom - top + 2 * TAB_PADDING
        x, y = anchor
        y = y - tab_h if y - tab_h >= 0 else y  # above the shape, else inside it
        x = min(max(0.0, x), max(0.0, self.image.size[0] - tab_w))
        self.draw.rectangle((x, y, x + tab_w, y + tab_h), fill=color)
        self.draw.text(
            (x + TAB_PADDING - left, y + TAB_PADDING - top),
            text,
            fill=text_color(color),
            font=self.font,
        )


def draw(
    image: Image.Image | np.ndarray,
    predictions: Iterable[Prediction],
    *,
    show_labels: bool = True,
    show_scores: bool = False,
    mask_alpha: float = MASK_ALPHA,
    line_width: int | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """A new RGB image with the predictions drawn on a copy of ``image``.

    Masks are blended first (``mask_alpha``), then shapes, then label tabs so
    text stays on top. A tab shows the OCR text when there is one, else the
    label (a keypoint instance's ``instance_id``), plus the score if asked.
    Coordinates are pixels of ``image``; masks must be at its size.
    """
    canvas = _rgb(image)
    predictions = list(predictions)
    painter = _Painter(canvas, line_width, font_size)
    for p in predictions:
        if p.mask is not None:
            painter.overlay(p, mask_alpha)
    painter.draw = ImageDraw.Draw(canvas)
    tabs: list[tuple[str, Any, Any]] = []
    for p in predictions:
        anchor = painter.shape(p)
        if show_labels:
            tabs.append((_caption(p, show_scores), anchor, label_color(p.label)))
    for text, anchor, color in tabs:
        painter.tab(text, anchor, color)
    return canvas


def draw_tiles(
    image: Image.Image | np.ndarray,
    tiles: Iterable[Iterable[float]],
    *,
    line_width: int | None = None,
) -> Image.Image:
    """A new RGB image with each tile's outline drawn in grey on a copy of
    ``image``: tiles are ``[x0, y0, x1, y1]`` in pixels of ``image``, x1/y1
    exclusive (``CallResult.tiles``)."""
    canvas = _rgb(image)
    width = line_width or max(1, round(min(canvas.size) * TILE_LINE_FRACTION))
    pen = ImageDraw.Draw(canvas)
    for tile in tiles:
        x0, y0, x1, y1 = tile
        pen.rectangle((x0, y0, x1 - 1, y1 - 1), outline=TILE_COLOR, width=width)
    return canvas
