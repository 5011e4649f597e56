"""The confusion matrix of ``rexlabel evaluate``'s report as a heatmap, and
its one-sentence summary (see :mod:`backend.evaluate.plots`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backend.evaluate.plot_base import (
    FONT_SIZE,
    Plot,
    drawn_names,
    index_names_note,
    number,
    render_png,
)

CONFUSION_CELL = 0.6
"""Inches per confusion-matrix cell: room for a four-digit count."""

CONFUSION_MIN_SIDE = 4.0
"""Smallest side in inches of the heatmap, so two labels still show a legend."""

CONFUSION_MAX_SIDE = 14.0
"""Largest side in inches: a screen's width; cells shrink past that."""

CONFUSION_COUNTS_UP_TO = 20
"""Counts are written in the cells up to this many rows (labels plus
background); beyond, the digits no longer fit a cell at the largest side, and
the HTML table next to the figure has them."""

BACKGROUND = "background"
"""The confusion axis entry for "nothing there" (as backend.evaluate.matching)."""


def _confusion_table(
    confusion: Mapping[str, Any],
) -> tuple[list[str], list[list[int]]] | None:
    axis = confusion.get("axis")
    rows = confusion.get("rows")
    if not isinstance(axis, list) or not isinstance(rows, list) or not axis:
        return None
    if len(rows) != len(axis) or any(
        not isinstance(r, list) or len(r) != len(axis) for r in rows
    ):
        return None
    counts = [[int(number(v) or 0) for v in r] for r in rows]
    return [str(a) for a in axis], counts


def confusion_summary(axis: list[str], counts: list[list[int]]) -> str:
    """One sentence on a confusion matrix (rows ground truth, columns
    predictions): right labels, wrong labels (the largest pair), misses and
    predictions on background."""
    right = wrong = missed = on_background = 0
    worst: tuple[int, str, str] | None = None
    for i, gt in enumerate(axis):
        for j, pred in enumerate(axis):
            n = counts[i][j]
            if gt == BACKGROUND and pred == BACKGROUND:
                continue
            if gt == BACKGROUND:
                on_background += n
            elif pred == BACKGROUND:
                missed += n
            elif i == j:
                right += n
            else:
                wrong += n
                if n and (worst is None or n > worst[0]):
                    worst = (n, gt, pred)
    most = f" (most: {worst[1]} predicted as {worst[2]}, {worst[0]})" if worst else ""
    return (
        f"{right} found with the right label, {wrong} with a wrong label{most}, "
        f"{missed} missed, {on_background} predicted where nothing was"
    )


def confusion_plot(
    confusion: Mapping[str, Any] | None, names: Mapping[str, str] | None = None
) -> Plot | None:
    """The confusion matrix as a heatmap: colour is the share of each ground-truth
    row, the count is written in the cell (up to :data:`CONFUSION_COUNTS_UP_TO`
    rows); None when the report has no matrix. ``names``: what the figures print
    per label (see :func:`~backend.evaluate.plot_base.figure_names`)."""
    table = _confusion_table(confusion) if isinstance(confusion, Mapping) else None
    if table is None:
        return None
    axis, counts = table
    n = len(axis)
    side = min(CONFUSION_MAX_SIDE, max(CONFUSION_MIN_SIDE, 1.8 + CONFUSION_CELL * n))
    shares = [[c / (sum(r) or 1) for c in r] for r in counts]
    names = drawn_names(axis, names)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.tick_params(labelsize=FONT_SIZE)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(n), labels=names, rotation=45, ha="right")
        ax.set_yticks(range(n), labels=names)
        ax.set_xlabel("predicted label", fontsize=FONT_SIZE)
        ax.set_ylabel("ground-truth label", fontsize=FONT_SIZE)
        ax.set_title("Confusion matrix at IoU 0.5", fontsize=FONT_SIZE + 1)
        if n <= CONFUSION_COUNTS_UP_TO:
            for i in range(n):
                for j in range(n):
                    ax.text(
                        j,
                        i,
                        str(counts[i][j]),
                        ha="center",
                        va="center",
                        fontsize=FONT_SIZE - 1,
                        color="white" if shares[i][j] > 0.55 else "black",
                    )
        bar = fig.colorbar(image, ax=ax, shrink=0.8)
        bar.set_label("share of the ground-truth row", fontsize=FONT_SIZE - 1)
        bar.ax.tick_params(labelsize=FONT_SIZE - 1)

    labels = [a for a in axis if a != BACKGROUND]
    alt = (
        f"Confusion matrix at IoU 0.5 of {len(labels)} label"
        f"{'s' if len(labels) != 1 else ''} and background, rows ground truth, "
        f"columns predictions: {confusion_summary(axis, counts)}"
        f"{index_names_note(axis, names)}"
    )
    return Plot("Confusion matrix", alt, render_png(draw, (side + 1.2, side)))
