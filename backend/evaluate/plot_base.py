"""What every figure of ``rexlabel evaluate``'s report shares: the
:class:`Plot` (PNG bytes with alt text), :func:`render_png`, the DPI, font,
colours and the small helpers of :mod:`backend.evaluate.plot_curves`,
:mod:`backend.evaluate.plot_bars` and :mod:`backend.evaluate.plot_confusion`.

matplotlib is imported inside the functions, so importing this module (and
``backend``) stays light. Figures are ``matplotlib.figure.Figure`` objects
drawn by the Agg canvas directly: no pyplot, no ``matplotlib.use``, no rcParams
change (the font list is set in an ``rc_context`` around each drawing only), so
nothing global that other code relies on is touched and no figure registry
keeps them alive; each is cleared once rendered.

Label names in scripts DejaVu Sans lacks (Chinese, Japanese, Korean, ...) are
drawn in an installed font that has them (:data:`FALLBACK_FAMILIES`); with
none installed they are drawn as ``#n``, their row in the per-label table
(:func:`figure_names`), and the alt text says which is which.
"""

from __future__ import annotations

import functools
import io
import math
import warnings
from base64 import b64encode
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

DPI = 100
"""Pixels per inch of every PNG: the figures' sizes in inches read as
pixels / 100, sharp at a normal zoom, and a curve stays near 30 KB inside the
single HTML file."""

FONT_SIZE = 9
"""Points of all text in the figures: readable at 100 DPI, yet long label
names fit the bar charts."""

PRIMARY_FAMILY = "DejaVu Sans"
"""The font of every figure's text: matplotlib ships it, so it is on every
machine and a report looks the same everywhere."""

FALLBACK_FAMILIES = (
    "Noto Sans CJK JP",
    "Noto Sans CJK SC",
    "Noto Sans CJK TC",
    "Noto Sans CJK KR",
    "Source Han Sans",
    "WenQuanYi Micro Hei",
    "WenQuanYi Zen Hei",
    "Droid Sans Fallback",
    "Noto Sans",
    "Noto Sans Thai",
    "Noto Sans Devanagari",
    "Noto Sans Bengali",
    "Noto Sans Tamil",
    "Noto Sans Ethiopic",
    "Noto Sans Georgian",
    "Noto Sans Armenian",
)
"""Families matplotlib (3.6 or later) takes a character from, in this order,
when :data:`PRIMARY_FAMILY` lacks it; only the installed ones are listed.
Debian packages them as fonts-noto-cjk, fonts-wqy-microhei,
fonts-wqy-zenhei, fonts-droid-fallback and fonts-noto-core."""

GLYPH_WARNING = r"Glyph \d+ \(.*\) missing from font\(s\)"
"""matplotlib's warning for a character no font of the list has. Names are
checked before drawing (:func:`figure_names`), so it is silenced while drawing
instead of filling stderr with one line per character."""

MAX_NAME_CHARS = 28
"""Label names longer than this are cut (with an ellipsis) in the figures; the
report's tables show them whole."""

COLOURS = {
    "ap": "#0072B2",
    "ap50": "#56B4E9",
    "f1": "#009E73",
    "misses": "#D55E00",
    "false_positives": "#E69F00",
    "wrong_labels": "#CC79A7",
    "unchanged": "#009E73",
    "edited": "#F0E442",
    "deleted": "#D55E00",
    "added": "#0072B2",
    "curve": "#0072B2",
    "recommended": "#D55E00",
}
"""Okabe-Ito colours: told apart with the common colour-vision deficiencies."""


@dataclass(frozen=True)
class Plot:
    """One rendered figure: ``png`` bytes and the ``alt`` text that says what
    it shows, key number included; ``title`` is its caption."""

    title: str
    alt: str
    png: bytes

    @property
    def data_uri(self) -> str:
        """The PNG as a ``data:image/png;base64,...`` URI for an ``<img>``."""
        return "data:image/png;base64," + b64encode(self.png).decode("ascii")


def figure_text(name: str) -> str:
    """``name`` as matplotlib should print it: ``$`` escaped (no mathtext from
    label names) and cut to :data:`MAX_NAME_CHARS`."""
    name = " ".join(str(name).split())
    if len(name) > MAX_NAME_CHARS:
        name = name[: MAX_NAME_CHARS - 1] + "…"
    return name.replace("$", r"\$")


@functools.cache
def font_families() -> tuple[str, ...]:
    """:data:`PRIMARY_FAMILY`, then the installed :data:`FALLBACK_FAMILIES`
    (matplotlib's font list, read once per process)."""
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return (PRIMARY_FAMILY, *(f for f in FALLBACK_FAMILIES if f in installed))


@functools.cache
def _characters(family: str) -> frozenset[int]:
    """The code points the font matplotlib picks for ``family`` has glyphs for."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    path = font_manager.findfont(
        font_manager.FontProperties(family=family), fallback_to_default=False
    )
    return frozenset(FT2Font(path).get_charmap())


def has_font_for(text: str) -> bool:
    """Whether each character of ``text`` is in some font of
    :func:`font_families`, so the figures draw it as a glyph, not a box."""
    families = font_families()
    return all(any(ord(c) in _characters(f) for f in families) for c in text)


def figure_names(labels: Iterable[str]) -> dict[str, str]:
    """What the figures print for each of ``labels``: :func:`figure_text`, or
    ``#n`` (n its place in ``labels``, from 1: its row in the report's
    per-label table) when no installed font has all its characters, so such
    labels stay told apart instead of all becoming empty boxes."""
    names = {}
    for n, label in enumerate(labels, start=1):
        text = figure_text(label)
        names[label] = text if has_font_for(text) else f"#{n}"
    return names


def drawn_names(labels: Sequence[str], names: Mapping[str, str] | None) -> list[str]:
    """What a figure prints for its ``labels``: from ``names`` (the
    :func:`figure_names` of the whole report, whose ``#n`` match the per-label
    table), else from the :func:`figure_names` of ``labels`` themselves."""
    own = figure_names(labels)
    names = names or {}
    return [names.get(label, own[label]) for label in labels]


def index_names_note(labels: Sequence[str], drawn: Sequence[str]) -> str:
    """For the alt text: "; in the figure #1 is 猫, #2 is 犬" for the labels
    drawn by index (see :func:`figure_names`), "" when none is."""
    pairs = [
        f"{shown} is {label}"
        for label, shown in zip(labels, drawn, strict=True)
        if shown != figure_text(label)
    ]
    return "; in the figure " + ", ".join(pairs) if pairs else ""


@contextmanager
def _drawing_fonts() -> Iterator[None]:
    """:func:`font_families` as matplotlib's font list and the glyph warning
    silenced, both only until the block ends."""
    import matplotlib

    with (
        matplotlib.rc_context({"font.family": list(font_families())}),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", GLYPH_WARNING, UserWarning)
        yield


def render_png(draw: Callable[[Any], None], size: tuple[float, float]) -> bytes:
    """Call ``draw(figure)`` on a fresh Agg figure of ``size`` inches and return
    the PNG; the figure is cleared afterwards and belongs to nothing global."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with _drawing_fonts():
        fig = Figure(figsize=size, dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        try:
            draw(fig)
            buffer = io.BytesIO()
            # no Software tag: the same report gives the same bytes
            fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
            return buffer.getvalue()
        finally:
            fig.clear()


def number(value: Any) -> float | None:
    """``value`` as a float, or None when it is not a finite number (bools,
    strings, None, NaN and infinities of an odd report)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def two_decimals(value: float) -> str:
    """``value`` with two decimals, as the figures print scores."""
    return f"{value:.2f}"


def style(ax: Any) -> None:
    """The common look of an axes: text at :data:`FONT_SIZE`, no top or right
    frame line."""
    ax.tick_params(labelsize=FONT_SIZE)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
