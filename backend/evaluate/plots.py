"""The figures of ``rexlabel evaluate``'s HTML report, as PNG bytes with alt text.

Read from the report dict of :func:`backend.evaluate.report.build_report`:
per label a precision-recall curve with the recommended threshold marked; bars
per label (AP, AP50, F1; misses, false positives, wrong labels); the confusion
matrix as a heatmap; the effort shares. A figure whose data is absent (an old
report, no predictions of a label) is skipped, never drawn empty.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DPI = 100
"""Pixels per inch of every PNG: sizes below read as pixels / 100, sharp at a
normal zoom, and a curve stays near 30 KB inside the single HTML file."""

CURVE_SIZE = (4.2, 3.4)
"""A precision-recall curve in inches: three side by side fit the page's
1,320 px, and the threshold's note still fits inside the axes."""

BAR_WIDTH = 7.5
"""Width in inches of the per-label bar charts (label names, then bars)."""

BAR_ROW_HEIGHT = 0.42
"""Inches per label in a bar chart: three bars of a group stay readable."""

BAR_BASE_HEIGHT = 1.3
"""Inches a bar chart needs besides its rows: title, axis and legend."""

BAR_LABELS_PER_FIGURE = 40
"""Labels per bar chart; more labels make more charts, so none grows taller
than about 18 inches (a screen and a half)."""

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

EFFORT_SIZE = (7.5, 2.4)
"""Inches of the effort chart: two stacked bars and a legend."""

FONT_SIZE = 9
"""Points of all text in the figures: readable at 100 DPI, yet long label
names fit the bar charts."""

MAX_NAME_CHARS = 28
"""Label names longer than this are cut (with an ellipsis) in the figures; the
report's tables show them whole."""

ISO_F1_LEVELS = (0.2, 0.4, 0.6, 0.8)
"""F1 contours drawn faintly behind each precision-recall curve, so the best-F1
point can be read off against them."""

MARKERS_UP_TO = 30
"""A curve of at most this many thresholds shows each as a dot; more dots
would merge into a thick line."""

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

BACKGROUND = "background"
"""The confusion axis entry for "nothing there" (as backend.evaluate.matching)."""


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


@dataclass
class ReportPlots:
    """Every figure of a report; None or empty where the report lacks the data."""

    bars: list[Plot] = field(default_factory=list)
    """Quality bars, then error bars (several of each past
    :data:`BAR_LABELS_PER_FIGURE` labels)."""
    confusion: Plot | None = None
    effort: Plot | None = None
    curves: dict[str, Plot] = field(default_factory=dict)
    """One precision-recall curve per label that has one."""


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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _f(value: float) -> str:
    return f"{value:.2f}"


def _style(ax: Any) -> None:
    ax.tick_params(labelsize=FONT_SIZE)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _curve_points(curve: Sequence[Any]) -> list[tuple[float, float, float, float]]:
    """(threshold, precision, recall, f1) of the points with all four numbers."""
    points = []
    for p in curve:
        if not isinstance(p, Mapping):
            continue
        values = [_number(p.get(k)) for k in ("threshold", "precision", "recall", "f1")]
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


def pr_curve_plot(label: str, entry: Mapping[str, Any]) -> Plot | None:
    """The precision-recall curve of one label over its score thresholds, the
    recommended threshold marked and annotated; None without a curve."""
    points = _curve_points(entry.get("curve") or [])
    if not points:
        return None
    best = _recommended_point(points, _number(entry.get("recommended_threshold")))
    name = figure_text(label)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        _style(ax)
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
                f"threshold {threshold:.2f}\nP {_f(precision)}  R {_f(recall)}  "
                f"F1 {_f(f1)}",
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
            f"{_f(precision)}, recall {_f(recall)}, F1 {_f(f1)}"
        )
    alt = (
        f"Precision-recall curve for {label} over {len(points)} score "
        f"threshold{'s' if len(points) != 1 else ''}; {key}"
    )
    return Plot(f"Precision-recall: {label}", alt, render_png(draw, CURVE_SIZE))


def _grouped_bars(
    labels: Sequence[tuple[str, Mapping[str, Any]]],
    series: Sequence[tuple[str, str, Callable[[Mapping[str, Any]], Any]]],
    title: str,
    xlabel: str,
    unit_range: bool,
) -> bytes:
    """Horizontal bars, one group per label (top to bottom in order), one bar per
    series ``(key, legend, read)``; a missing value is marked "n/a"."""
    rows = len(labels)
    bar = 0.8 / len(series)

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        _style(ax)
        top = 0.0
        for i, (key, legend, read) in enumerate(series):
            ys, widths, missing = [], [], []
            for row, (_, entry) in enumerate(labels):
                y = rows - 1 - row + 0.4 - (i + 0.5) * bar
                value = _number(read(entry))
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
            labels=[figure_text(name) for name, _ in labels],
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
    known = [(name, v) for name, e in labels if (v := _number(read(e))) is not None]
    if not known:
        return None
    pick = max if highest else min
    return pick(known, key=lambda item: item[1])


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _at(entry: Mapping[str, Any], key: str) -> Any:
    at = entry.get("at_threshold")
    return at.get(key) if isinstance(at, Mapping) else None


def quality_bars_plots(labels: Mapping[str, Mapping[str, Any]]) -> list[Plot]:
    """AP, AP50 and F1 at the recommended threshold, per label (several charts
    past :data:`BAR_LABELS_PER_FIGURE` labels)."""
    items = [(str(k), v) for k, v in labels.items() if isinstance(v, Mapping)]
    series = (
        ("ap", "AP", lambda e: e.get("ap")),
        ("ap50", "AP50", lambda e: e.get("ap50")),
        ("f1", "F1 at threshold", lambda e: _at(e, "f1")),
    )
    plots = []
    for n, chunk in enumerate(_chunks(items, BAR_LABELS_PER_FIGURE)):
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
                f"best {best[0]} ({by} {_f(best[1])}), "
                f"worst {worst[0]} ({by} {_f(worst[1])})"
            )
        alt = (
            f"Bar chart of AP, AP50 and F1 at the recommended threshold for "
            f"{len(chunk)} label{'s' if len(chunk) != 1 else ''}{part}: {key}"
        )
        png = _grouped_bars(
            chunk, series, "Quality per label", "score (0 to 1)", unit_range=True
        )
        plots.append(Plot(f"Quality per label{part}", alt, png))
    return plots


def error_bars_plots(labels: Mapping[str, Mapping[str, Any]]) -> list[Plot]:
    """Misses, false positives and wrong labels per label (counts at IoU 0.5)."""
    items = [(str(k), v) for k, v in labels.items() if isinstance(v, Mapping)]
    series = (
        ("misses", "misses", lambda e: e.get("misses")),
        ("false_positives", "false positives", lambda e: e.get("false_positives")),
        ("wrong_labels", "wrong labels", lambda e: e.get("wrong_labels")),
    )
    plots = []
    for n, chunk in enumerate(_chunks(items, BAR_LABELS_PER_FIGURE)):
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
        )
        png = _grouped_bars(
            chunk, series, "Errors per label (IoU 0.5)", "regions", unit_range=False
        )
        plots.append(Plot(f"Errors per label{part}", alt, png))
    return plots


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
    counts = [[int(_number(v) or 0) for v in r] for r in rows]
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


def confusion_plot(confusion: Mapping[str, Any] | None) -> Plot | None:
    """The confusion matrix as a heatmap: colour is the share of each ground-truth
    row, the count is written in the cell (up to :data:`CONFUSION_COUNTS_UP_TO`
    rows); None when the report has no matrix."""
    table = _confusion_table(confusion) if isinstance(confusion, Mapping) else None
    if table is None:
        return None
    axis, counts = table
    n = len(axis)
    side = min(CONFUSION_MAX_SIDE, max(CONFUSION_MIN_SIDE, 1.8 + CONFUSION_CELL * n))
    shares = [[c / (sum(r) or 1) for c in r] for r in counts]

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        ax.tick_params(labelsize=FONT_SIZE)
        image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
        names = [figure_text(a) for a in axis]
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
    )
    return Plot("Confusion matrix", alt, render_png(draw, (side + 1.2, side)))


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
        ("unchanged", "accepted unchanged", _number(effort.get("unchanged_share"))),
        ("edited", "edited", _number(effort.get("edited_share"))),
        ("deleted", "deleted", _number(effort.get("deleted_share"))),
    ]
    added = _number(effort.get("added_share"))
    if all(share is None for _, _, share in parts) and added is None:
        return None

    def draw(fig: Any) -> None:
        ax = fig.add_subplot()
        _style(ax)
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


def report_plots(report: Mapping[str, Any]) -> ReportPlots:
    """Every figure of ``report`` (see the module docstring); absent parts are
    skipped."""
    labels = report.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    overall = report.get("overall")
    overall = overall if isinstance(overall, Mapping) else {}
    plots = ReportPlots(
        confusion=confusion_plot(report.get("confusion")),
        effort=effort_plot(overall.get("effort")),
    )
    if labels:
        plots.bars = quality_bars_plots(labels) + error_bars_plots(labels)
    for label, entry in labels.items():
        if isinstance(entry, Mapping) and (plot := pr_curve_plot(str(label), entry)):
            plots.curves[str(label)] = plot
    return plots
