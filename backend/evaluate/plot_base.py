"""What every figure of ``rexlabel evaluate``'s report shares: the
:class:`Plot` (PNG bytes with alt text), :func:`render_png`, the DPI, font,
colours and the small helpers of :mod:`backend.evaluate.plot_curves`,
:mod:`backend.evaluate.plot_bars` and :mod:`backend.evaluate.plot_confusion`.

matplotlib is imported inside the functions, so importing this module (and
``backend``) stays light. Figures are ``matplotlib.figure.Figure`` objects
drawn by the Agg canvas directly: no pyplot, no ``matplotlib.use``, no rcParams
change, so nothing global that other code relies on is touched and no figure
registry keeps them alive; each is cleared once rendered.
"""

from __future__ import annotations

import io
import math
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DPI = 100
"""Pixels per inch of every PNG: the figures' sizes in inches read as
pixels / 100, sharp at a normal zoom, and a curve stays near 30 KB inside the
single HTML file."""

FONT_SIZE = 9
"""Points of all text in the figures: readable at 100 DPI, yet long label
names fit the bar charts."""

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


def render_png(draw: Callable[[Any], None], size: tuple[float, float]) -> bytes:
    """Call ``draw(figure)`` on a fresh Agg figure of ``size`` inches and return
    the PNG; the figure is cleared afterwards and belongs to nothing global."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

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
