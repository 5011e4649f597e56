"""Bytes (or a file) to one RGB image, EXIF orientation applied, within limits.

A bomb is refused from its header (``max_pixels``); with ``fit_pixels`` a large
image is decoded straight down to the model's size (or, for tiled inference,
only as far as its tiles allow) and its full size is kept for coordinates
(:func:`original_size`).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from PIL import ExifTags, Image, UnidentifiedImageError

from common.images.errors import ImageDecodeError, ImageTooLarge
from converters.geometry import (
    MAX_IMAGE_PIXELS,
    MAX_PIXELS,
    MIN_PIXELS,
    smart_resize,
)

DEFAULT_MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
"""``converters.geometry.MAX_IMAGE_PIXELS`` (32x what the model sees): pixels
decoded at once. Pillow itself refuses headers over 2 x ``Image.MAX_IMAGE_PIXELS``
(179 MP), whatever the format."""
REDUCING_GAP = 3.0
"""Pillow's ``resize(reducing_gap=3)``: ``reduce()`` by whole factors first, then
bicubic; Pillow documents the result as indistinguishable from a full bicubic."""
ORIGINAL_SIZE_KEY = "rexlabel.original_size"
"""``Image.info`` key of a reduced image's full ``(width, height)``."""
EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
"""EXIF orientation -> the transpose that shows the image upright (as
``ImageOps.exif_transpose``; applied after any reduction, on the small image)."""
GREY_MODES = ("1", "L")
"""Modes resized as ``L`` before becoming RGB: the same pixels, a third of the
memory (a 1-bit bomb would otherwise be tripled to RGB at full size)."""
SIDEWAYS_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations whose upright image swaps width and height."""
MAX_DRAFT_SCALE = 8
"""A JPEG's DCT scaling divides each side by 1, 2, 4 or 8 while decoding."""

FitPixels = int | Callable[[int, int], int | None] | None
"""``decode_image``'s ``fit_pixels``: the pixels to decode at, or a rule giving
them from the stored ``(width, height)`` (read from the header), or None."""


def decode_image(
    data: bytes | Path,
    *,
    source: str,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    fit_pixels: FitPixels = None,
) -> Image.Image:
    """Decode bytes (or a file) to an RGB image with EXIF orientation applied.

    ``fit_pixels`` (the model's ``max_pixels``, or a rule giving the pixels
    from the stored size: the pipeline's for tiled calls): an image with more
    pixels is decoded straight down to that size (``smart_resize``): a JPEG by
    DCT scaling while decoding (``Image.draft``, up to 8x a side), any image by
    ``reduce()`` inside the bicubic resize. Its size as Label Studio shows it
    stays available as :func:`original_size`, for coordinates.

    ``max_pixels`` bounds what is decoded at once: the header's size, or a
    drafted JPEG's reduced size. Both are known before any pixel is decoded, so
    a bomb is refused for the price of its header. A fit above ``max_pixels``
    (tiling a JPEG larger than the limit) is lowered to a DCT scale within it:
    the tiles then see that reduced decode.

    Raises:
        ImageDecodeError: not an image, or truncated.
        ImageTooLarge: more than ``max_pixels`` pixels to decode.
    """
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{source}: {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"{source} is not an image Pillow can read") from None
    except OSError as exc:
        raise ImageDecodeError(f"{source} could not be read: {exc}") from None
    try:
        stored = image.size
        target = _fit_size(stored, fit_pixels, max_pixels)
        if target is not None:
            image.draft("RGB", target)
        _check_pixels(source, stored, image.size, max_pixels)
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"{source} is damaged or truncated: {exc}") from None
        return _finish(image, target, stored)
    finally:
        if isinstance(data, Path):
            image.close()


def _fit_size(
    size: tuple[int, int], fit_pixels: FitPixels, max_pixels: int
) -> tuple[int, int] | None:
    """``(width, height)`` to decode an image of ``size`` at, when that is a
    downscale (more than ``fit_pixels`` pixels); None to keep the size.

    A fit above ``max_pixels`` is capped there, and a target a JPEG's draft
    could only reach by decoding more than ``max_pixels`` is lowered to the
    next DCT scale (``_within_draft``)."""
    width, height = size
    if callable(fit_pixels):
        fit_pixels = fit_pixels(width, height)
    if fit_pixels is None:
        return None
    fit_pixels = min(fit_pixels, max_pixels)
    if width * height <= fit_pixels:
        return None
    try:
        fit_h, fit_w = smart_resize(height, width, max_pixels=fit_pixels)
    except ValueError:  # aspect ratio the model refuses: the engine says so
        return None
    return _within_draft(size, (fit_w, fit_h), max_pixels)


def _within_draft(
    size: tuple[int, int], target: tuple[int, int], max_pixels: int
) -> tuple[int, int]:
    """``target``, or a smaller one whose JPEG draft decodes at most
    ``max_pixels``: Pillow drafts at the largest scale 1, 2, 4 or 8 that keeps
    each side at least the target's, rounding up (``JpegImageFile.draft``)."""
    width, height = size
    while True:
        scale = min(width // target[0], height // target[1], MAX_DRAFT_SCALE)
        scale = 1 << (max(scale, 1).bit_length() - 1)  # a power of two
        drafted = -(-width // scale) * -(-height // scale)
        if drafted <= max_pixels or scale >= MAX_DRAFT_SCALE:
            return target
        target = (max(1, width // (2 * scale)), max(1, height // (2 * scale)))


def _check_pixels(
    source: str,
    stored: tuple[int, int],
    decoded: tuple[int, int],
    max_pixels: int,
) -> None:
    """ImageTooLarge when decoding would allocate more than ``max_pixels``."""
    pixels = decoded[0] * decoded[1]
    if pixels <= max_pixels:
        return
    size = f"{stored[0]}x{stored[1]}"
    if decoded != stored:
        size += f" (decoded at {decoded[0]}x{decoded[1]})"
    raise ImageTooLarge(
        f"{source} is {size} = {pixels} pixels, more than the limit of "
        f"{max_pixels} (REXLABEL_MAX_IMAGE_PIXELS)"
    )


def _finish(
    image: Image.Image, target: tuple[int, int] | None, stored: tuple[int, int]
) -> Image.Image:
    """The loaded ``image`` as RGB, at ``target`` when given, EXIF-oriented; a
    resized one carries its displayed full size (:func:`original_size`).

    Grey images are resized in ``L`` (1 byte a pixel) and made RGB once small;
    colour ones become RGB first (alpha dropped, as before). The full-size
    source is released as soon as its converted copy exists."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    work_mode = "L" if image.mode in GREY_MODES and target is not None else "RGB"
    work = image if image.mode == work_mode else image.convert(work_mode)
    if work is not image:
        image.close()  # frees the decoded pixels; ``work`` holds the copy
    # Only we set this key: a PNG text chunk of that name (copied into
    # ``info`` by Pillow) must not decide the size regions are scaled to.
    work.info.pop(ORIGINAL_SIZE_KEY, None)
    if target is not None:  # smaller than ``stored``, whatever draft did
        if work.size != target:
            work = work.resize(
                target, Image.Resampling.BICUBIC, reducing_gap=REDUCING_GAP
            )
        sideways = orientation in SIDEWAYS_ORIENTATIONS
        work.info[ORIGINAL_SIZE_KEY] = stored[::-1] if sideways else stored
    if orientation in EXIF_TRANSPOSE:
        work = work.transpose(EXIF_TRANSPOSE[orientation])  # keeps ``info``
    return work if work.mode == "RGB" else work.convert("RGB")


def read_capped(handle: BinaryIO, max_bytes: int, source: str) -> bytes:
    """All of an open file, refused (ImageTooLarge) when it holds more than
    ``max_bytes``: its size is checked before reading, and the read stops one
    byte past the cap in case the file grew meanwhile."""
    size = os.fstat(handle.fileno()).st_size
    data = b"" if size > max_bytes else handle.read(max_bytes + 1)
    if size > max_bytes or len(data) > max_bytes:
        raise ImageTooLarge(
            f"{source} is {max(size, len(data))} bytes, more than {max_bytes} "
            "(the download limit applies to local files too)"
        )
    return data


def original_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of the image as Label Studio shows it: the full size
    of one :func:`decode_image` reduced for the model, else ``image.size``.
    Pixel coordinates (prompts, parsed regions, masks) use this size."""
    size = image.info.get(ORIGINAL_SIZE_KEY)
    if (
        isinstance(size, tuple)
        and len(size) == 2
        and all(isinstance(v, int) and v > 0 for v in size)
    ):
        return size
    return image.size


def resize_for_model(
    image: Image.Image, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """The image at its smart_resize size (PIL bicubic), as upstream's vLLM path
    sends it (``qwen_vl_utils.fetch_image``); the processor then keeps that size.

    Coordinates stay relative to the original image: the model's bins are
    fractions of the width and height, whatever the pixel size.
    """
    height, width = smart_resize(
        image.height, image.width, min_pixels=min_pixels, max_pixels=max_pixels
    )
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if (width, height) == rgb.size:
        return rgb
    return rgb.resize((width, height), Image.Resampling.BICUBIC)
