"""The errors of loading an image: one base class, a subclass per reason.

Every message names the reference and why it failed.
"""

from __future__ import annotations


class ImageLoadError(Exception):
    """An image could not be loaded; the message names the reference and why."""


class ImageNotFound(ImageLoadError):
    """The file does not exist, or the server answered 404."""


class ImageAccessDenied(ImageLoadError):
    """The server answered 401/403: the Label Studio token is missing or rejected."""


class ImageFetchError(ImageLoadError):
    """The download failed (connection, timeout, other HTTP status)."""


class ImageDecodeError(ImageLoadError):
    """The bytes are not an image Pillow can read, or the file is truncated."""


class ImageTooLarge(ImageLoadError):
    """The image has more pixels (or the download more bytes) than allowed."""


class ImageRefused(ImageLoadError):
    """The reference is not allowed: unknown host, private address, bad value."""
