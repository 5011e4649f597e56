"""The report's figures: PNGs of the expected size, alt text with the key
numbers (known by hand from the reports in ``reports.py``), the recommended
threshold drawn, absent parts skipped, and nothing left behind in matplotlib."""

from __future__ import annotations

import gc
import io
import logging
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import pytest
from PIL import Image

from backend.evaluate.plot_bars import (
    BAR_BASE_HEIGHT,
    BAR_LABELS_PER_FIGURE,
    BAR_ROW_HEIGHT,
    effort_plot,
    error_bars_plots,
    quality_bars_plots,
)
from backend.evaluate.plot_base import (
    COLOURS,
    DPI,
    PRIMARY_FAMILY,
    figure_names,
    figure_text,
    font_families,
    render_png,
)
from backend.evaluate.plot_confusion import confusion_plot
from backend.evaluate.plot_curves import CURVE_SIZE, pr_curve_plot
from backend.evaluate.plots import report_plots
from backend.evaluate.report import build_report
from tests.backend.evaluate.helpers import box, pair
from tests.backend.evaluate.reports import (
    HOSTILE,
    built_report,
    full_report,
    without_newer_keys,
)

REPO_ROOT = Path(__file__).resolve().parents[3]


def image(png: bytes) -> Image.Image:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    return Image.open(io.BytesIO(png)).convert("RGB")


def pixels_of(png: bytes, colour: str) -> int:
    """How many pixels are exactly ``colour`` (#rrggbb)."""
    rgb = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return sum(count for count, c in image(png).getcolors(1 << 20) if c == rgb)


def test_the_curve_of_a_label_names_its_recommended_threshold_and_marks_it():
    car = full_report()["labels"]["car"]
    plot = pr_curve_plot("car", car)
    # the best F1 of car's curve: 8 of 10 found, 1 false positive at 0.7
    assert plot.alt == (
        "Precision-recall curve for car over 4 score thresholds; recommended "
        "threshold 0.70 gives precision 0.89, recall 0.80, F1 0.84"
    )
    assert image(plot.png).size == (CURVE_SIZE[0] * DPI, CURVE_SIZE[1] * DPI)
    assert pixels_of(plot.png, COLOURS["recommended"]) > 100  # the star and its note


def test_a_curve_without_a_recommendation_says_so_and_marks_nothing():
    hostile = full_report()["labels"][HOSTILE]
    plot = pr_curve_plot(HOSTILE, hostile)
    assert plot.alt == (
        f"Precision-recall curve for {HOSTILE} over 1 score threshold; "
        f"no threshold finds a {HOSTILE} correctly (best F1 0)"
    )
    assert pixels_of(plot.png, COLOURS["recommended"]) == 0


@pytest.mark.parametrize("curve", [None, [], [{"threshold": 0.5}]])
def test_no_curve_no_figure(curve):
    entry = {"recommended_threshold": None}
    if curve is not None:
        entry["curve"] = curve
    assert pr_curve_plot("sign", entry) is None


def test_bars_name_the_best_and_worst_label_and_the_most_errors():
    labels = full_report()["labels"]
    (quality,) = quality_bars_plots(labels)
    assert quality.alt == (
        "Bar chart of AP, AP50 and F1 at the recommended threshold for 4 labels: "
        "best car (AP 0.61), worst person (AP 0.40)"
    )
    (errors,) = error_bars_plots(labels)
    assert errors.alt == (
        "Bar chart of misses, false positives and wrong labels for 4 labels: "
        "most misses: sign (3); most false positives: car (8); "
        "most wrong labels: car (1)"
    )
    rows = 4
    height = round((BAR_BASE_HEIGHT + BAR_ROW_HEIGHT * rows) * DPI)
    assert image(quality.png).height == height


def test_bars_of_the_built_report_rank_a_perfect_person_first():
    """build_report: the person box is exact (AP 1), the sign only got a
    wrong-label box (AP 0)."""
    (quality,) = quality_bars_plots(built_report()["labels"])
    assert quality.alt.endswith("best person (AP 1.00), worst sign (AP 0.00)")


def test_many_labels_are_split_over_several_bar_charts():
    labels = {f"label {n:02d}": {"ap": n / 100, "misses": n} for n in range(45)}
    first, second = quality_bars_plots(labels)
    assert first.title == "Quality per label (1)" and second.title.endswith("(2)")
    assert f"for {BAR_LABELS_PER_FIGURE} labels (1): best label 39 (AP 0.39)" in (
        first.alt
    )
    assert "for 5 labels (2): best label 44 (AP 0.44), worst label 40" in second.alt


def test_the_confusion_heatmap_sums_right_wrong_missed_and_background():
    plot = confusion_plot(full_report()["confusion"])
    # diagonal 9+3, car->person 1, person and sign missed 1+3, background row 7+1+1
    assert plot.alt == (
        "Confusion matrix at IoU 0.5 of 4 labels and background, rows ground "
        "truth, columns predictions: 12 found with the right label, 1 with a "
        "wrong label (most: car predicted as person, 1), 4 missed, 9 predicted "
        "where nothing was"
    )
    image(plot.png)


@pytest.mark.parametrize(
    "confusion",
    [
        None,
        {},
        {"axis": ["a", "background"], "rows": [[1, 0]]},
        {"axis": [], "rows": []},
    ],
)
def test_no_or_a_malformed_confusion_matrix_draws_nothing(confusion):
    assert confusion_plot(confusion) is None


def test_effort_shares_are_said_in_percent():
    plot = effort_plot(full_report()["overall"]["effort"])
    assert plot.alt == (
        "Effort: of the predicted regions 50% accepted unchanged, 25% edited, "
        "25% deleted; 12.5% of the ground-truth regions drawn by hand"
    )
    assert effort_plot(None) is None
    assert effort_plot({}) is None


def test_a_report_without_curves_or_confusion_gets_the_other_figures():
    """An older report.json (no "curve", no "confusion") still gets its bars."""
    built = report_plots(without_newer_keys(built_report()))
    assert [p.title for p in built.bars] == ["Quality per label", "Errors per label"]
    assert built.effort.title == "Effort"
    assert built.confusion is None and built.curves == {}
    full = report_plots(full_report())
    assert full.confusion.title == "Confusion matrix"
    assert list(full.curves) == ["car", "person", HOSTILE]  # sign: empty curve
    empty = report_plots({})
    assert (empty.bars, empty.confusion, empty.effort, empty.curves) == (
        [], None, None, {},
    )  # fmt: skip


def test_label_names_are_never_read_as_mathtext():
    assert figure_text("$x^2$") == r"\$x^2\$"
    assert figure_text("a" * 40) == "a" * 27 + "…"
    assert figure_text("two\nlines") == "two lines"
    entry = {"curve": [{"threshold": 0.5, "precision": 1, "recall": 1, "f1": 1}]}
    entry["recommended_threshold"] = 0.5
    plot = pr_curve_plot("cost $5 or $", entry)  # unbalanced $ breaks mathtext
    assert plot.alt.startswith("Precision-recall curve for cost $5 or $ over 1")
    (bars,) = quality_bars_plots({"$\\frac{": {"ap": 0.5}})
    image(bars.png)


def test_the_same_report_gives_the_same_bytes():
    car = full_report()["labels"]["car"]
    assert pr_curve_plot("car", car).png == pr_curve_plot("car", car).png


def test_a_rendered_figure_is_freed():
    figures = []

    def draw(fig):
        figures.append(weakref.ref(fig))
        fig.add_subplot().plot([0, 1], [0, 1])

    image(render_png(draw, (2, 2)))
    gc.collect()
    assert figures and figures[0]() is None


def test_matplotlib_loads_only_when_drawing_and_its_global_state_stays():
    code = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
import backend.cli, backend.evaluate.html, backend.evaluate.plots
assert "matplotlib" not in sys.modules, "imported on import"
import matplotlib
rc_before = matplotlib.rcParams.copy()  # copy() leaves the backend unresolved
from backend.evaluate.plots import report_plots
from tests.backend.evaluate.reports import full_report
assert len(report_plots(full_report()).curves) == 3
assert "matplotlib.pyplot" not in sys.modules, "pyplot keeps figures alive"
assert matplotlib.rcParams.copy() == rc_before, "rcParams (backend too) changed"
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


CAT, DOG = "猫", "狗"
"""Chinese labels: DejaVu Sans, matplotlib's own font, has neither."""

NO_FONT_HAS = ("\u0378", "\u0379")
"""Unassigned code points: no font draws them, on any machine."""


def _font_has(family: str, character: str) -> bool:
    """Whether the font file matplotlib's font manager picks for ``family``
    maps ``character`` to a glyph."""
    from matplotlib import font_manager
    from matplotlib.ft2font import FT2Font

    props = font_manager.FontProperties(family=family)
    path = font_manager.findfont(props, fallback_to_default=False)
    return ord(character) in FT2Font(path).get_charmap()


def test_labels_the_machine_has_no_font_for_are_drawn_as_their_row():
    labels = ["cat", NO_FONT_HAS[0], f"dog {NO_FONT_HAS[1]}"]
    assert figure_names(labels) == {
        "cat": "cat",
        NO_FONT_HAS[0]: "#2",
        f"dog {NO_FONT_HAS[1]}": "#3",
    }
    (bars,) = quality_bars_plots({name: {"ap": 0.5} for name in labels})
    assert bars.alt.endswith(
        f"; in the figure #2 is {NO_FONT_HAS[0]}, #3 is dog {NO_FONT_HAS[1]}"
    )


def test_the_whole_report_numbers_labels_as_its_per_label_table():
    """The confusion axis holds only some labels, yet #n is the label's row in
    report["labels"] (the per-label table), in every figure."""
    first, second = NO_FONT_HAS
    report = {
        "labels": {"cat": {"ap": 1.0}, first: {"ap": 0.5}, second: {"ap": 0.2}},
        "confusion": {"axis": [second, "background"], "rows": [[1, 0], [0, 0]]},
    }
    plots = report_plots(report)
    assert plots.confusion.alt.endswith(f"; in the figure #3 is {second}")
    assert plots.bars[0].alt.endswith(f"; in the figure #2 is {first}, #3 is {second}")


def test_chinese_labels_draw_without_glyph_warnings_and_stay_told_apart(caplog):
    """A covering font installed (scripts/test.sh installs fonts-wqy-microhei):
    the labels are drawn in it; none: they are drawn as #1 and #2. Either way
    no "Glyph ... missing" warning, and the two labels draw differently (as
    empty boxes they gave the same pixels)."""
    found = pair(
        [box(CAT, 0, 0, 20, 20), box(DOG, 40, 40, 60, 60)],
        [
            box(CAT, 0, 0, 20, 20, score=0.9),
            box(DOG, 40, 40, 60, 60, score=0.8),
            box("cat", 70, 70, 90, 90, score=0.4),
        ],
    )
    report = build_report([found])
    assert list(report["labels"]) == ["cat", DOG, CAT]  # sorted by code point
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.DEBUG):
            plots = report_plots(report)
    said = [str(w.message) for w in caught] + [r.getMessage() for r in caplog.records]
    assert not [line for line in said if "Glyph" in line or "findfont" in line]
    for plot in [*plots.bars, plots.confusion, *plots.curves.values()]:
        image(plot.png)

    names = figure_names(report["labels"])
    assert names["cat"] == "cat"
    for row, label in ((2, DOG), (3, CAT)):
        if names[label] == label:
            fallbacks = font_families()[1:]
            assert font_families()[0] == PRIMARY_FAMILY
            assert any(_font_has(family, label) for family in fallbacks)
        else:
            assert names[label] == f"#{row}"
            assert f"#{row} is {label}" in plots.curves[label].alt
    assert plots.curves[CAT].png != plots.curves[DOG].png  # the titles differ


def test_the_glyph_warning_is_silenced_only_while_drawing():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    def draw(fig):
        fig.text(0.5, 0.5, NO_FONT_HAS[0])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filters = list(warnings.filters)
        image(render_png(draw, (1, 1)))
        assert warnings.filters == filters
        assert caught == []
        plain = Figure(figsize=(1, 1))  # the same text drawn without render_png
        FigureCanvasAgg(plain)
        draw(plain)
        plain.savefig(io.BytesIO(), format="png")
    assert [str(w.message) for w in caught] == [
        "Glyph 888 (\\u0378) missing from font(s) DejaVu Sans."
    ]
