"""The figures of ``rexlabel evaluate``'s HTML report, as PNG bytes with alt text.

Read from the report dict of :func:`backend.evaluate.report.build_report`:
per label a precision-recall curve with the recommended threshold marked; bars
per label (AP, AP50, F1; misses, false positives, wrong labels); the confusion
matrix as a heatmap; the effort shares. A figure whose data is absent (an old
report, no predictions of a label) is skipped, never drawn empty.

The figures are drawn in :mod:`backend.evaluate.plot_curves`,
:mod:`backend.evaluate.plot_bars` and :mod:`backend.evaluate.plot_confusion`,
on what :mod:`backend.evaluate.plot_base` shares (matplotlib loaded only when
drawing, nothing global touched); this module gathers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.evaluate.plot_bars import (
    effort_plot,
    error_bars_plots,
    quality_bars_plots,
)
from backend.evaluate.plot_base import Plot, figure_names
from backend.evaluate.plot_confusion import confusion_plot
from backend.evaluate.plot_curves import pr_curve_plot


@dataclass
class ReportPlots:
    """Every figure of a report; None or empty where the report lacks the data."""

    bars: list[Plot] = field(default_factory=list)
    """Quality bars, then error bars (several of each past
    :data:`~backend.evaluate.plot_bars.BAR_LABELS_PER_FIGURE` labels)."""
    confusion: Plot | None = None
    effort: Plot | None = None
    curves: dict[str, Plot] = field(default_factory=dict)
    """One precision-recall curve per label that has one."""


def report_plots(report: Mapping[str, Any]) -> ReportPlots:
    """Every figure of ``report`` (see the module docstring); absent parts are
    skipped."""
    labels = report.get("labels")
    labels = labels if isinstance(labels, Mapping) else {}
    overall = report.get("overall")
    overall = overall if isinstance(overall, Mapping) else {}
    # one numbering for every figure: a label's row in the per-label table
    names = figure_names(str(k) for k, v in labels.items() if isinstance(v, Mapping))
    plots = ReportPlots(
        confusion=confusion_plot(report.get("confusion"), names),
        effort=effort_plot(overall.get("effort")),
    )
    if labels:
        plots.bars = quality_bars_plots(labels, names) + error_bars_plots(labels, names)
    for label, entry in labels.items():
        if isinstance(entry, Mapping) and (
            plot := pr_curve_plot(str(label), entry, names)
        ):
            plots.curves[str(label)] = plot
    return plots
