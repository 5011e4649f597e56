"""How the parser words its warnings, and the one repair both grammars make.

Every dropped or repaired piece of an answer becomes one line in
``ParseResult.warnings``; these helpers keep the lines of the group grammar
and of the keypoint JSON alike.
"""

from __future__ import annotations

from converters.grammar import MAX_BIN
from converters.prediction import ParseResult

EXCERPT_CHARS = 40
"""How much of a dropped piece of text a warning quotes."""


def excerpt(text: str) -> str:
    """``text`` quoted, cut to EXCERPT_CHARS characters and ``...``."""
    if len(text) > EXCERPT_CHARS:
        text = text[:EXCERPT_CHARS] + "..."
    return repr(text)


def clamp(values: list[int], where: str, result: ParseResult) -> list[int]:
    """Bins above MAX_BIN lowered to it, with a warning naming ``where``."""
    result.warnings.append(
        f"{where}: bin above {MAX_BIN} clamped to {MAX_BIN} in {values}"
    )
    return [min(v, MAX_BIN) for v in values]
