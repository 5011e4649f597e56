"""``--extra-params JSON``: a project's model "Extra params" given on the
command line (``rexlabel prelabel --project``, ``rexlabel export --to
rexomni-tsv``), in place of those of the model connected to the project."""

from __future__ import annotations

import json
from typing import Any


def parse_extra_params(text: str | None) -> dict[str, Any] | None:
    """The flag's JSON object; None when the flag is not given (the caller then
    reads the connected model's, ``backend.bulk.creation.connected_extra_params``).
    ValueError naming the flag when it is not a JSON object."""
    if text is None:
        return None
    try:
        extra = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"--extra-params is not JSON ({exc})") from None
    if not isinstance(extra, dict):
        raise ValueError("--extra-params must be a JSON object")
    return extra
