"""``rexlabel evaluate``'s report as one self-contained HTML file.

:func:`write_html` renders the report dict of
:func:`backend.evaluate.report.build_report` (plus ``inputs``): inline CSS,
the figures of :mod:`backend.evaluate.plots` as ``data:`` PNGs with alt text,
no JavaScript and nothing fetched, so the file opens anywhere and can be mailed.

Every string from the report (labels, file names, joint names) comes from
untrusted data and goes through :func:`html.escape`; the page's
Content-Security-Policy also forbids scripts and any request, so a missed
escape could still run nothing. A value that is missing or None shows as
:data:`MISSING`.
"""

from __future__ import annotations

import html
import json
import math
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from backend.evaluate.plot_base import Plot, figure_names
from backend.evaluate.plots import report_plots

MISSING = "–"
"""What a missing, None or non-finite value shows as (an en dash)."""

TITLE = "rexlabel evaluate: pre-labels against ground truth"
"""The page's title and heading."""

CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
"""No scripts, no requests: only the inline style and the embedded images."""

DECIMALS = 3
"""Digits after the point of rates, AP and thresholds: AP moves in the third
digit between runs worth telling apart."""

ONLY_IN = {
    "ground_truth": "only in ground truth",
    "predictions": "only in predictions",
}
"""How ``only_in`` is written next to a label."""

FLAGS = {
    "points_only": "points only: scored by hit rate, not as boxes",
    "unscored": "no scores: no threshold to recommend",
}
"""Badges for a label's true flags (``points_only``, ``unscored``)."""

ONLY_IN_MEANING = {
    "ground_truth": "annotators used it, the model never predicted it",
    "predictions": "the model predicted it, no annotator used it",
}

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
       color: #1d232a; margin: 0 auto; max-width: 1320px; padding: 24px; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.25em; margin: 32px 0 8px; border-bottom: 1px solid #dde2e7;
     padding-bottom: 4px; }
h3 { font-size: 1.05em; margin: 18px 0 6px; overflow-wrap: anywhere; }
p.lead { color: #56606b; margin: 0 0 12px; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 12px;
        font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e5e9ed; padding: 4px 10px; text-align: right;
         vertical-align: top; }
th { background: #f3f5f7; font-weight: 600; }
th:first-child, td:first-child { text-align: left; max-width: 340px;
         min-width: 6em; overflow-wrap: break-word; }
td.text { text-align: left; overflow-wrap: break-word; }
tr.only-in td { background: #fff7e6; }
.badge { display: inline-block; font-size: 0.78em; padding: 0 6px; margin-left: 6px;
         border-radius: 8px; background: #ffe2b3; color: #7a4b00; white-space: nowrap; }
.wide { overflow-x: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 8px 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eef0f2; }
figcaption { color: #56606b; font-size: 0.88em; }
.kpis { display: flex; flex-wrap: wrap; gap: 10px; margin: 8px 0 4px; }
.kpis div { background: #f3f5f7; border-radius: 6px; padding: 8px 14px;
            min-width: 110px; }
.kpis b { display: block; font-size: 1.45em; }
.kpis span { color: #56606b; font-size: 0.86em; }
.note { color: #56606b; font-size: 0.92em; }
details { margin: 4px 0 12px; }
"""
"""The page's only style: readable tables, figures that wrap, no web fonts."""


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML and attribute values."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A number or text for a table cell, escaped; None, NaN and anything
    missing show as :data:`MISSING`."""
    if value is None or isinstance(value, bool):
        return MISSING if value is None else ("yes" if value else "no")
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{DECIMALS}f}" if math.isfinite(value) else MISSING
    if isinstance(value, Mapping | list):
        return esc(json.dumps(value, ensure_ascii=False))
    return esc(value)


def percent(value: Any) -> str:
    """A share (0..1) as a percentage, :data:`MISSING` when not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return MISSING
    return f"{100 * value:.1f}%" if math.isfinite(value) else MISSING


def dig(entry: Any, *keys: str) -> Any:
    """``entry[k1][k2]...``, None where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(entry, Mapping):
            return None
        entry = entry.get(key)
    return entry


Column = tuple[str, str, tuple[str, ...]]
"""(header, what it means, the keys that lead to the value in a label's or the
overall entry)."""

BASE_COLUMNS: list[Column] = [
    ("GT", "ground-truth regions", ("ground_truth",)),
    ("pred", "predicted regions", ("predictions",)),
    ("AP", "COCO AP, IoU 0.50:0.95 (boxes)", ("ap",)),
    ("AP50", "COCO AP at IoU 0.5", ("ap50",)),
    ("AR", "COCO AR, 100 detections", ("ar",)),
    ("threshold", "recommended score threshold (best F1)", ("recommended_threshold",)),
    ("P", "precision at the threshold", ("at_threshold", "precision")),
    ("R", "recall at the threshold", ("at_threshold", "recall")),
    ("F1", "F1 at the threshold", ("at_threshold", "f1")),
    ("misses", "ground truth nothing found (IoU 0.5, any score)", ("misses",)),
    ("FP", "predictions that found nothing of their label", ("false_positives",)),
    ("wrong labels", "on another label's region (IoU 0.5)", ("wrong_labels",)),
]
"""The per-label and overall columns every report has."""

OPTIONAL_COLUMNS: list[Column] = [
    ("mask AP", "segm AP of masks and polygons", ("segm", "ap")),
    ("mask IoU", "mean IoU of matched masks", ("segm", "mean_iou")),
    ("OKS AP", "keypoint AP (COCOeval keypoints)", ("keypoints", "ap")),
    ("PCK", "PCK@0.1 of the instance box", ("keypoints", "pck")),
    ("CER", "character error rate of matched text", ("ocr", "cer")),
    ("WER", "word error rate of matched text", ("ocr", "wer")),
    ("point hits", "points inside a region of the label", ("point_hit_rate",)),
]
"""Columns shown when some label (or the overall entry) has their first key."""


def _columns(entries: Iterable[Mapping[str, Any]]) -> list[Column]:
    entries = list(entries)
    return BASE_COLUMNS + [
        c for c in OPTIONAL_COLUMNS if any(e.get(c[2][0]) is not None for e in entries)
    ]


def _table(
    head: list[str], rows: Iterable[str], titles: list[str] | None = None
) -> str:
    """A table in a horizontally scrolling box; ``head`` and ``titles`` (the
    headers' tooltips) are escaped here, ``rows`` are finished ``<tr>``s."""
    titles = titles or [""] * len(head)
    cells = "".join(
        f'<th scope="col" title="{esc(t)}">{esc(h)}</th>'
        for h, t in zip(head, titles, strict=True)
    )
    return (
        f'<div class="wide"><table><thead><tr>{cells}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _pairs_table(
    rows: Iterable[tuple[str, str]], head: tuple[str, str], text: bool = False
) -> str:
    """Two columns: a name (escaped here) and a value already formatted, set
    left like text when ``text``, else right like numbers."""
    css = ' class="text"' if text else ""
    body = [f'<tr><th scope="row">{esc(k)}</th><td{css}>{v}</td></tr>' for k, v in rows]
    return _table(list(head), body)


def _figure(plot: Plot) -> str:
    """The plot as an ``<img>`` with its alt text, which is also the caption
    (the key number, for everyone)."""
    width, height = png_size(plot.png)
    return (
        f'<figure style="max-width: {width}px">'
        f'<img src="{plot.data_uri}" alt="{esc(plot.alt)}" '
        f'width="{width}" height="{height}">'
        f"<figcaption>{esc(plot.alt)}</figcaption></figure>"
    )


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels from a PNG's IHDR chunk."""
    return struct.unpack(">II", png[16:24])


def _labels(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    labels = report.get("labels")
    if not isinstance(labels, Mapping):
        return {}
    return {str(k): v for k, v in labels.items() if isinstance(v, Mapping)}


def _inputs_section(report: Mapping[str, Any]) -> str:
    inputs = report.get("inputs")
    if not isinstance(inputs, Mapping) or not inputs:
        return '<p class="note">The report does not say where its data came from.</p>'
    rows = [(str(k).replace("_", " "), fmt(v)) for k, v in inputs.items()]
    return _pairs_table(rows, ("input", "value"), text=True)


KEY_FIGURES: list[tuple[str, tuple[str, ...], bool]] = [
    ("images", ("images",), False),
    ("ground-truth regions", ("ground_truth",), False),
    ("predicted regions", ("predictions",), False),
    ("AP (boxes)", ("ap",), False),
    ("AP50", ("ap50",), False),
    ("F1 at the thresholds", ("at_threshold", "f1"), False),
    ("accepted unchanged", ("effort", "unchanged_share"), True),
]
"""(name, keys in the overall entry, is a share) of the figures shown first."""


def _cells(entry: Mapping[str, Any], columns: list[Column]) -> str:
    return "".join(f"<td>{fmt(dig(entry, *keys))}</td>" for _, _, keys in columns)


def _overall_section(report: Mapping[str, Any]) -> str:
    overall = report.get("overall")
    overall = overall if isinstance(overall, Mapping) else {}
    cards = "".join(
        f"<div><b>{percent(dig(overall, *keys)) if share else fmt(dig(overall, *keys))}"
        f"</b><span>{esc(name)}</span></div>"
        for name, keys, share in KEY_FIGURES
    )
    columns = _columns([overall])
    row = f'<tr><th scope="row">all labels</th>{_cells(overall, columns)}</tr>'
    at = overall.get("at_threshold")
    counts = ", ".join(
        f"{fmt(dig(at, key))} {name}"
        for key, name in (
            ("true_positives", "true positives"),
            ("false_positives", "false positives"),
            ("misses", "misses"),
        )
    )
    return (
        f'<div class="kpis">{cards}</div>'
        + _table(
            ["", *(h for h, _, _ in columns)], [row], ["", *(t for _, t, _ in columns)]
        )
        + f'<p class="note">At each label\'s recommended threshold: {counts}; P, R '
        "and F1 are counted from these. Misses, FP and wrong labels in the table "
        "count all predictions, any score.</p>"
    )


def _label_cell(
    name: str, entry: Mapping[str, Any], anchor: str | None, drawn: str
) -> str:
    text = esc(name)
    if anchor:
        text = f'<a href="#{anchor}">{text}</a>'
    only = entry.get("only_in")
    if only in ONLY_IN:
        text += f'<span class="badge">{ONLY_IN[only]}</span>'
    for flag, badge in FLAGS.items():
        if entry.get(flag) is True:
            text += f'<span class="badge">{badge}</span>'
    if drawn != name and drawn.startswith("#"):  # no font here draws the name
        text += f'<span class="badge">{esc(drawn)} in the figures</span>'
    return f'<th scope="row">{text}</th>'


def _labels_section(
    labels: Mapping[str, Mapping[str, Any]], anchors: dict[str, str]
) -> str:
    if not labels:
        return '<p class="note">No labels on either side.</p>'
    columns = _columns(labels.values())
    drawn = figure_names(labels)
    rows = []
    for name, entry in labels.items():
        css = ' class="only-in"' if entry.get("only_in") in ONLY_IN else ""
        cells = _cells(entry, columns)
        label = _label_cell(name, entry, anchors.get(name), drawn[name])
        rows.append(f"<tr{css}>{label}{cells}</tr>")
    head = ["label", *(h for h, _, _ in columns)]
    titles = ["", *(t for _, t, _ in columns)]
    one_side = [
        (n, e["only_in"]) for n, e in labels.items() if e.get("only_in") in ONLY_IN
    ]
    note = ""
    if one_side:
        items = "".join(
            f"<li><b>{esc(n)}</b>: {ONLY_IN[side]} ({ONLY_IN_MEANING[side]})</li>"
            for n, side in one_side
        )
        note = f"<h3>Labels present on one side only</h3><ul>{items}</ul>"
    return _table(head, rows, titles) + note


def _confusion_section(report: Mapping[str, Any], plot: Plot | None) -> str:
    confusion = report.get("confusion")
    axis = dig(confusion, "axis")
    rows = dig(confusion, "rows")
    if plot is None or not isinstance(axis, list) or not isinstance(rows, list):
        return '<p class="note">The report has no confusion matrix.</p>'
    body = [
        f'<tr><th scope="row">{esc(a)}</th>'
        + "".join(f"<td>{fmt(v)}</td>" for v in row)
        + "</tr>"
        for a, row in zip(axis, rows, strict=False)
    ]
    return (
        _figure(plot)
        + "<details><summary>Counts as a table (rows ground truth, columns "
        "predictions)</summary>"
        + _table(["ground truth \\ predicted", *(str(a) for a in axis)], body)
        + "</details>"
    )


def _effort_section(report: Mapping[str, Any], plot: Plot | None) -> str:
    effort = dig(report, "overall", "effort")
    if not isinstance(effort, Mapping):
        return '<p class="note">The report has no effort figures.</p>'
    rows = [
        (
            "predicted regions accepted unchanged (IoU ≥ 0.9, same label)",
            percent(effort.get("unchanged_share")),
        ),
        (
            "predicted regions edited (moved or relabelled)",
            percent(effort.get("edited_share")),
        ),
        ("predicted regions deleted", percent(effort.get("deleted_share"))),
        ("ground-truth regions drawn by hand", percent(effort.get("added_share"))),
    ]
    return _pairs_table(rows, ("what annotators did", "share")) + (
        _figure(plot) if plot else ""
    )


def _curves_section(
    labels: Mapping[str, Mapping[str, Any]],
    curves: Mapping[str, Plot],
    anchors: dict[str, str],
) -> str:
    parts = []
    for name, entry in labels.items():
        plot = curves.get(name)
        anchor = anchors[name]
        threshold = fmt(entry.get("recommended_threshold"))
        body = (
            _figure(plot)
            if plot
            else '<p class="note">No precision-recall curve: no scored prediction '
            f"of this label. Recommended threshold: {threshold}.</p>"
        )
        parts.append(f'<div><h3 id="{anchor}">{esc(name)}</h3>{body}</div>')
    return f'<div class="figures">{"".join(parts)}</div>'


def _ocr_section(
    report: Mapping[str, Any], labels: Mapping[str, Mapping[str, Any]]
) -> str:
    overall = dig(report, "overall", "ocr")
    with_text = {
        n: e["ocr"] for n, e in labels.items() if isinstance(e.get("ocr"), Mapping)
    }
    if not isinstance(overall, Mapping) and not with_text:
        return ""
    rows = []
    if isinstance(overall, Mapping):
        rows.append(("(all labels)", overall))
    rows += list(with_text.items())
    body = [
        f'<tr><th scope="row">{esc(n)}</th><td>{fmt(dig(o, "pairs"))}</td>'
        f"<td>{fmt(dig(o, 'cer'))}</td><td>{fmt(dig(o, 'wer'))}</td></tr>"
        for n, o in rows
    ]
    return (
        '<h2 id="ocr">OCR</h2><p class="note">Character and word error rates of the '
        "text of regions matched at IoU 0.5 (0 is perfect).</p>"
        + _table(["label", "matched regions", "CER", "WER"], body)
    )


def _keypoints_section(labels: Mapping[str, Mapping[str, Any]]) -> str:
    parts = []
    for name, entry in labels.items():
        kp = entry.get("keypoints")
        if not isinstance(kp, Mapping):
            continue
        summary = [
            (k, fmt(kp.get(k))) for k in ("ap", "ap50", "ar", "pck", "instances")
        ]
        joints = kp.get("joints")
        table = ""
        if isinstance(joints, Mapping) and joints:
            rows = [
                f'<tr><th scope="row">{esc(j)}</th><td>{percent(v)}</td></tr>'
                for j, v in joints.items()
            ]
            table = _table(["joint", "accuracy (PCK@0.1)"], rows)
        parts.append(
            f"<h3>{esc(name)}</h3>"
            + _pairs_table([(k.upper(), v) for k, v in summary], ("measure", "value"))
            + table
        )
    if not parts:
        return ""
    return '<h2 id="keypoints">Keypoints</h2>' + "".join(parts)


def render_html(report: Mapping[str, Any]) -> str:
    """The whole page for ``report`` as a string."""
    labels = _labels(report)
    plots = report_plots(report)
    anchors = {name: f"label-{n}" for n, name in enumerate(labels, start=1)}
    images = dig(report, "overall", "images")
    sections = [
        f"<h1>{esc(TITLE)}</h1>",
        f'<p class="lead">{fmt(images)} images, {len(labels)} labels. Regions are '
        "matched at IoU 0.5; AP comes from pycocotools' COCOeval.</p>",
        '<nav><a href="#inputs">Inputs</a><a href="#overall">Overall</a>'
        '<a href="#labels">Per label</a><a href="#curves">Precision-recall</a>'
        '<a href="#bars">Bars</a><a href="#confusion">Confusion</a>'
        '<a href="#effort">Effort</a></nav>',
        '<h2 id="inputs">Inputs</h2>',
        _inputs_section(report),
        '<h2 id="overall">Overall</h2>',
        _overall_section(report),
        '<h2 id="labels">Per label</h2>',
        _labels_section(labels, anchors),
        '<h2 id="curves">Precision-recall per label</h2>',
        '<p class="note">Each point keeps the predictions scoring at least a '
        "threshold; the star is the recommended <code>model_score_threshold</code> "
        "(best F1).</p>",
        _curves_section(labels, plots.curves, anchors),
        '<h2 id="bars">Quality and errors per label</h2>',
        '<div class="figures">' + "".join(_figure(p) for p in plots.bars) + "</div>",
        '<h2 id="confusion">Confusion matrix</h2>',
        _confusion_section(report, plots.confusion),
        '<h2 id="effort">Effort</h2>',
        _effort_section(report, plots.effort),
        _ocr_section(report, labels),
        _keypoints_section(labels),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" '
        f'content="{CONTENT_SECURITY_POLICY}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(TITLE)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body></html>\n"
    )


def write_html(report: Mapping[str, Any], path: str | Path) -> None:
    """Write ``report`` as one self-contained HTML file at ``path`` (UTF-8)."""
    Path(path).write_text(render_html(report), encoding="utf-8")
