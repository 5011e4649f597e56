"""What the Label Studio writer and reader share: the error and the unit."""

from __future__ import annotations

PERCENT = 100.0
"""Label Studio coordinates are percent (0..100) of the original image."""


class LabelStudioError(ValueError):
    """A prediction cannot be written as the requested result, or a result is
    unreadable; the message names the region and the reason."""
