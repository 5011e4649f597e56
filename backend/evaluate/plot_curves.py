"""The precision-recall curve of one label in ``rexlabel evaluate``'s report,
its recommended threshold marked and annotated (see
:mod:`backend.evaluate.plots`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

CURVE_SIZE = (4.2, 3.4)
"""A precision-recall curve in inches: three side by side fit the page's
1,320 px, and the threshold's note still fits inside the axes."""

ISO_F1_LEVELS = (0.2, 0.4, 0.6, 0.8)
"""F1 contours drawn faintly behind each precision-recall curve, so the best-F1
point can be read off against them."""

MARKERS_UP_TO = 30
"""A curve of at most this many thresholds shows each as a dot; more dots
would merge into a thick line."""


def _curve_points(curve: Sequence[Any]) -> list[tuple[float, float, float, float]]:
    """(threshold, precision, recall, f1) of the points with all four numbers."""
    points = []
    for p in curve:
        if not isinstance(p, Mapping):
            continue
        values = [number(p.get(k)) for k in ("threshold", "precision", "recall", "f1")]
        if None not in values:
            points.append(tuple(values))
    return points


def _iso_f1(level: float, steps: int = 50) -> tuple[list[float], list[float]]:
    """Recall and precision along the curve F1 = ``level`` (recall from
    level / (2 - level), where precision is 1, to 1)."""
    start = level / (2 - level)
    recall = [start + i * (1 - start) / steps for i in range(steps + 1)]
    return recall, [level * r / (2 * r - level) for r in recall]


def _recommended_point(
    points: list[tuple[float, float, float, float]], threshold: float | None
) -> tuple[float, float, float, float] | None:
    """The curve's point at ``threshold`` (the nearest, should the report
    round one of them)."""
    if threshold is None or not points:
        return None
    return min(points, key=lambda p: abs(p[0] - threshold))


def pr_curve_plot(
    label: str, entry: Mapping[str, Any], names: Mapping[str, str] | None = None
) -> Plot | None:
    """The precision-recall curve of one label over its score thresholds, the
    recommended threshold marked and annotated; None without a curve.
    ``names``: what the figures print per label (see
    :func:`~backend.evaluate.plot_base.figure_names`)."""
    points = _curve_points(entry.get("curve") or [])
    if not points:
        return None
    best = _recommended_point(points, number(entry.get("recommended_threshold")))
    (name,) = drawn_names([label], names)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        style(ax)
        for level in ISO_F1_LEVELS:
            recall, precision = _iso_f1(level)
            ax.plot(recall, precision, color="#bbbbbb", linewidth=0.7, zorder=1)
            ax.annotate(
                f"F1 {level:.1f}",
                (1.0, precision[-1]),
                xytext=(2, 0),
                textcoords="offset points",
                fontsize=FONT_SIZE - 2,
                color="#888888",
                va="center",
            )
        ax.plot(
            [p[2] for p in points],
            [p[1] for p in points],
            color=COLOURS["curve"],
            marker="o" if len(points) <= MARKERS_UP_TO else None,
            markersize=3,
            linewidth=1.6,
            zorder=2,
            label="score thresholds",
        )
        if best is not None:
            threshold, precision, recall, f1 = best
            ax.plot(
                [recall],
                [precision],
                marker="*",
                markersize=16,
                color=COLOURS["recommended"],
                zorder=3,
                linestyle="none",
                label="recommended threshold",
            )
            left = recall > 0.55
            ax.annotate(
                f"threshold {threshold:.2f}\nP {two_decimals(precision)}  "
                f"R {two_decimals(recall)}  F1 {two_decimals(f1)}",
                (recall, precision),
                xytext=(-12 if left else 12, -28 if precision > 0.5 else 24),
                textcoords="offset points",
                ha="right" if left else "left",
                fontsize=FONT_SIZE,
                color=COLOURS["recommended"],
                bbox={"boxstyle": "round", "fc": "white", "ec": COLOURS["recommended"]},
                arrowprops={"arrowstyle": "-", "color": COLOURS["recommended"]},
                zorder=4,
            )
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.04)
        ax.set_xlabel("recall", fontsize=FONT_SIZE)
        ax.set_ylabel("precision", fontsize=FONT_SIZE)
        ax.set_title(f"{name}: precision and recall", fontsize=FONT_SIZE + 1)
        ax.legend(loc="lower left", fontsize=FONT_SIZE - 1, frameon=False)

    if best is None:
        key = f"no threshold finds a {label} correctly (best F1 0)"
    else:
        threshold, precision, recall, f1 = best
        key = (
            f"recommended threshold {threshold:.2f} gives precision "
            f"{two_decimals(precision)}, recall {two_decimals(recall)}, "
            f"F1 {two_decimals(f1)}"
        )
    alt = (
        f"Precision-recall curve for {label} over {len(points)} score "
        f"threshold{'s' if len(points) != 1 else ''}; {key}"
        f"{index_names_note([label], [name])}"
    )
    return Plot(f"Precision-recall: {label}", alt, render_png(draw, CURVE_SIZE))
