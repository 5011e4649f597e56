"""Images for the common.images tests: encoded, two-coloured, lying headers."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

RED, BLUE = (255, 0, 0), (0, 0, 255)
EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6
"""EXIF orientation 6: the stored pixels must be turned 90 degrees clockwise."""


def encoded(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def two_colour(width=40, height=20, mode="RGB") -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(Image.new("RGB", (width // 2, height), RED), (0, 0))
    return image.convert(mode)


def close_to(pixel, colour, tolerance=40):
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, colour, strict=True))


def png_with_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (the pixel data is tiny)."""
    data = bytearray(encoded(Image.new("L", (1, 1))))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    start = 8 + 8  # signature, then IHDR length + type
    data[start : start + 13] = ihdr
    data[start + 13 : start + 17] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)
