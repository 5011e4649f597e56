"""Importing this module leaves a mark: the RQ job tests name it in jobs.

A worker that imports a function or callback named in a job (RQ's
``import_attribute``) creates the file at ``$RQ_CANARY_PATH``, so a test sees
whether the module was imported at all, whatever the function would do.
"""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("RQ_CANARY_PATH"):
    Path(os.environ["RQ_CANARY_PATH"]).write_text("imported\n")


def hit(*args: object, **kwargs: object) -> None:
    """A job function or callback with no effect of its own."""
