"""OCR text of regions found twice by tiled inference: do two readings agree, and
how do the two halves of a line cut by a tile edge join into one.

Rules (used by :mod:`converters.tile_merge`):

* Two readings of one region **agree** when, ignoring case and runs of
  whitespace, one is a substring of the other (a tile that cut the region reads
  only part of it: ``"wor"`` in ``"world"``) or the characters they share in
  order cover at least :data:`OCR_TEXT_MATCH` of the shorter (one misread
  character: ``"Hello wc"`` and ``"Hello world"``). Two different words (``cat``,
  ``dog``) do not agree, so their regions are never merged, however they overlap.
* The two **parts of a cut line** (left and right of a vertical tile seam, or
  above and below a horizontal one) both read the characters inside the tiles'
  overlap: ``"Hello wo"`` + ``"lo world"``. They are joined where the end of the
  first equals the start of the second over at least :data:`OCR_SEAM_MIN_CHARS`
  characters (case and all, as read), allowing up to :data:`OCR_SEAM_SLACK`
  characters at each cut end to differ (a character sliced by the tile edge is
  misread or dropped): ``"Hello world"``. Parts that share no such run are not
  joined and come back as two regions.
"""

from __future__ import annotations

from difflib import SequenceMatcher

OCR_TEXT_MATCH = 0.75
"""Share of the shorter reading that must be found, in order, in the longer one:
a 4-character cut part may have one misread character (3/4), a word of two may
not (1/2), so short different words stay apart."""

OCR_SEAM_MIN_CHARS = 2
"""Characters the two parts of a cut line must both read at the seam. The
overlap of two tiles (a fifth of a tile by default) holds many characters of
any readable line; two are enough once the boxes already meet at the seam, and
one would join any two texts that end and start with the same letter."""

OCR_SEAM_SLACK = 2
"""Characters allowed to differ at each cut end: the character the tile edge
slices through is misread or dropped, and sometimes the space before it."""


def normalise(text: str) -> str:
    """``text`` in lower case (casefold) with each whitespace run one space."""
    return " ".join(text.casefold().split())


def texts_agree(first: str, second: str) -> bool:
    """Whether two readings are of the same text (one may be cut): see the module."""
    short, long = sorted((normalise(first), normalise(second)), key=len)
    if short in long:
        return True
    matcher = SequenceMatcher(None, short, long, autojunk=False)
    shared = sum(block.size for block in matcher.get_matching_blocks())
    return shared >= OCR_TEXT_MATCH * len(short)


def fuller_text(first: str, second: str) -> str:
    """The reading with more characters (a cut part reads less); ``first`` on a tie."""
    return second if len(normalise(second)) > len(normalise(first)) else first


def _overlap(head: str, tail: str) -> int:
    """Largest ``k`` with ``head`` ending in the first ``k`` characters of ``tail``."""
    for k in range(min(len(head), len(tail)), 0, -1):
        if head.endswith(tail[:k]):
            return k
    return 0


def join_at_seam(first: str, second: str) -> str | None:
    """The text of a line cut in two, ``first`` being the part left of (or above)
    the seam; None when the parts share no run of ``OCR_SEAM_MIN_CHARS`` characters
    at their cut ends (see the module)."""
    best: tuple[int, int, str] | None = None
    for dropped_end in range(min(OCR_SEAM_SLACK, len(first)) + 1):
        head = first[: len(first) - dropped_end]
        for dropped_start in range(min(OCR_SEAM_SLACK, len(second)) + 1):
            tail = second[dropped_start:]
            shared = _overlap(head, tail)
            if shared < OCR_SEAM_MIN_CHARS:
                continue
            rank = (shared, -(dropped_end + dropped_start))
            if best is None or rank > best[:2]:
                best = (*rank, head + tail[shared:])
    return None if best is None else best[2]
