"""The bar charts of ``rexlabel evaluate``'s report: per label quality (AP,
AP50, F1) and errors (misses, false positives, wrong labels), and the effort
shares (see :mod:`backend.evaluate.plots`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from backend.evaluate.plot_base import (
    COLOURS,
    FONT_SIZE,
    Plot,
    drawn_names,
    index_names_note,
    number,
    render_png,
    style,
    two_decimals,
)

BAR_WIDTH = 7.5
"""Width in inches of the per-label bar charts (label names, then bars)."""

BAR_ROW_HEIGHT = 0.42
"""Inches per label in a bar chart: three bars of a group stay readable."""

BAR_BASE_HEIGHT = 1.3
"""Inches a bar chart needs besides its rows: title, axis and legend."""

BAR_LABELS_PER_FIGURE = 40
"""Labels per bar chart; more labels make more charts, so none grows taller
than about 18 inches (a screen and a half)."""

EFFORT_SIZE = (7.5, 2.4)
"""Inches of the effort chart: two stacked bars and a legend."""


def _grouped_bars(
    labels: Sequence[tuple[str, Mapping[str, Any]]],
    series: Sequence[tuple[str, str, Callable[[Mapping[str, Any]], Any]]],
    title: str,
    xlabel: str,
    unit_range: bool,
    drawn: Sequence[str],
) -> bytes:
    """Horizontal bars, one group per label (top to bottom in order, named
    ``drawn``), one bar per series ``(key, legend, read)``; a missing value is
    marked "n/a"."""
    rows = len(labels)
    bar = 0.8 / len(series)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        style(ax)
        top = 0.0
        for i, (key, legend, read) in enumerate(series):
            ys, widths, missing = [], [], []
            for row, (_, entry) in enumerate(labels):
                y = rows - 1 - row + 0.4 - (i + 0.5) * bar
                value = number(read(entry))
                if value is None:
                    missing.append(y)
                else:
                    ys.append(y)
                    widths.append(value)
                    top = max(top, value)
            bars = ax.barh(ys, widths, height=bar, color=COLOURS[key], label=legend)
            labels_text = [f"{w:.2f}" if unit_range else f"{w:g}" for w in widths]
            ax.bar_label(bars, labels=labels_text, padding=2, fontsize=FONT_SIZE - 2)
            for y in missing:
                ax.text(
                    0, y, " n/a", va="center", fontsize=FONT_SIZE - 2, color="#777777"
                )
        ax.set_yticks(
            [rows - 1 - row for row in range(rows)],
            labels=list(drawn),
            fontsize=FONT_SIZE,
        )
        ax.set_ylim(-0.6, rows - 0.4)
        ax.set_xlim(0, 1.1 if unit_range else max(1.0, top) * 1.15)
        if not unit_range:
            ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(xlabel, fontsize=FONT_SIZE)
        ax.set_title(title, fontsize=FONT_SIZE + 1)
        fig.legend(
            loc="outside lower center",
            ncols=len(series),
            fontsize=FONT_SIZE - 1,
            frameon=False,
        )

    size = (BAR_WIDTH, BAR_BASE_HEIGHT + BAR_ROW_HEIGHT * rows)
    return render_png(draw, size)


def _extreme(
    labels: Sequence[tuple[str, Mapping[str, Any]]],
    read: Callable[[Mapping[str, Any]], Any],
    highest: bool,
) -> tuple[str, float] | None:
    known = [(name, v) for name, e in labels if (v := number(read(e))) is not None]
    if not known:
        return None
    pick = max if highest else min
    return pick(known, key=lambda item: item[1])


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _items(labels: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(str(k), v) for k, v in labels.items() if isinstance(v, Mapping)]


def _drawn(
    items: list[tuple[str, Mapping[str, Any]]], names: Mapping[str, str] | None
) -> list[str]:
    """What the charts print for each of ``items``, numbered over all of them
    (not per chart) when drawn by index."""
    return drawn_names([name for name, _ in items], names)


def _at(entry: Mapping[str, Any], key: str) -> Any:
    at = entry.get("at_threshold")
    return at.get(key) if isinstance(at, Mapping) else None


def quality_bars_plots(
    labels: Mapping[str, Mapping[str, Any]], names: Mapping[str, str] | None = None
) -> list[Plot]:
    """AP, AP50 and F1 at the recommended threshold, per label (several charts
    past :data:`BAR_LABELS_PER_FIGURE` labels). ``names``: what the figures
    print per label (see :func:`~backend.evaluate.plot_base.figure_names`)."""
    items = _items(labels)
    drawn = _drawn(items, names)
    series = (
        ("ap", "AP", lambda e: e.get("ap")),
        ("ap50", "AP50", lambda e: e.get("ap50")),
        ("f1", "F1 at threshold", lambda e: _at(e, "f1")),
    )
    plots = []
    chunks = zip(
        _chunks(items, BAR_LABELS_PER_FIGURE),
        _chunks(drawn, BAR_LABELS_PER_FIGURE),
        strict=True,
    )
    for n, (chunk, shown) in enumerate(chunks):
        note = index_names_note([name for name, _ in chunk], shown)
        part = f" ({n + 1})" if len(items) > BAR_LABELS_PER_FIGURE else ""
        by = "AP"
        best = _extreme(chunk, series[0][2], True)
        worst = _extreme(chunk, series[0][2], False)
        if best is None:
            by = "F1"
            best = _extreme(chunk, series[2][2], True)
            worst = _extreme(chunk, series[2][2], False)
        if best is None:
            key = "no label has a figure yet"
        else:
            key = (
                f"best {best[0]} ({by} {two_decimals(best[1])}), "
                f"worst {worst[0]} ({by} {two_decimals(worst[1])})"
            )
        alt = (
            f"Bar chart of AP, AP50 and F1 at the recommended threshold for "
            f"{len(chunk)} label{'s' if len(chunk) != 1 else ''}{part}: {key}{note}"
        )
        png = _grouped_bars(
            chunk,
            series,
            "Quality per label",
            "score (0 to 1)",
            unit_range=True,
            drawn=shown,
        )
        plots.append(Plot(f"Quality per label{part}", alt, png))
    return plots


def error_bars_plots(
    labels: Mapping[str, Mapping[str, Any]], names: Mapping[str, str] | None = None
) -> list[Plot]:
    """Misses, false positives and wrong labels per label (counts at IoU 0.5);
    ``names`` as for :func:`quality_bars_plots`."""
    items = _items(labels)
    drawn = _drawn(items, names)
    series = (
        ("misses", "misses", lambda e: e.get("misses")),
        ("false_positives", "false positives", lambda e: e.get("false_positives")),
        ("wrong_labels", "wrong labels", lambda e: e.get("wrong_labels")),
    )
    plots = []
    chunks = zip(
        _chunks(items, BAR_LABELS_PER_FIGURE),
        _chunks(drawn, BAR_LABELS_PER_FIGURE),
        strict=True,
    )
    for n, (chunk, shown) in enumerate(chunks):
        note = index_names_note([name for name, _ in chunk], shown)
        part = f" ({n + 1})" if len(items) > BAR_LABELS_PER_FIGURE else ""
        facts = []
        for _, legend, read in series:
            most = _extreme(chunk, read, True)
            if most is not None:
                facts.append(f"most {legend}: {most[0]} ({most[1]:g})")
        alt = (
            f"Bar chart of misses, false positives and wrong labels for "
            f"{len(chunk)} label{'s' if len(chunk) != 1 else ''}{part}: "
            + ("; ".join(facts) if facts else "no counts")
            + note
        )
        png = _grouped_bars(
            chunk,
            series,
            "Errors per label (IoU 0.5)",
            "regions",
            unit_range=False,
            drawn=shown,
        )
        plots.append(Plot(f"Errors per label{part}", alt, png))
    return plots


def _percent(share: float) -> str:
    """0.125 as "12.5%", 0.5 as "50%"."""
    return f"{100 * share:.1f}".removesuffix(".0") + "%"


def effort_plot(effort: Mapping[str, Any] | None) -> Plot | None:
    """What happened to the predicted regions (unchanged, edited, deleted, as
    one stacked bar) and the share of ground truth drawn by hand; None
    without effort figures."""
    if not isinstance(effort, Mapping):
        return None
    parts = [
        ("unchanged", "accepted unchanged", number(effort.get("unchanged_share"))),
        ("edited", "edited", number(effort.get("edited_share"))),
        ("deleted", "deleted", number(effort.get("deleted_share"))),
    ]
    added = number(effort.get("added_share"))
    if all(share is None for _, _, share in parts) and added is None:
        return None

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        style(ax)
        left = 0.0
        for key, legend, share in parts:
            if share is None:
                continue
            ax.barh([1], [share], left=left, color=COLOURS[key], label=legend)
            if share >= 0.06:
                ax.text(
                    left + share / 2,
                    1,
                    _percent(share),
                    ha="center",
                    va="center",
                    fontsize=FONT_SIZE,
                )
            left += share
        if added is not None:
            ax.barh([0], [added], color=COLOURS["added"], label="drawn by hand")
            ax.text(added + 0.01, 0, _percent(added), va="center", fontsize=FONT_SIZE)
        ax.set_yticks(
            [0, 1],
            labels=["ground-truth regions", "predicted regions"],
            fontsize=FONT_SIZE,
        )
        ax.set_xlim(0, 1)
        ax.xaxis.set_major_formatter(lambda v, _: _percent(v))
        ax.set_title("Effort: what annotators did", fontsize=FONT_SIZE + 1)
        fig.legend(
            loc="outside lower center", ncols=4, fontsize=FONT_SIZE - 1, frameon=False
        )

    said = [f"{_percent(s)} {legend}" for _, legend, s in parts if s is not None]
    alt = "Effort: of the predicted regions " + (", ".join(said) or "no figures")
    if added is not None:
        alt += f"; {_percent(added)} of the ground-truth regions drawn by hand"
    return Plot("Effort", alt, render_png(draw, EFFORT_SIZE))
