"""``rexlabel evaluate`` on bad files: exit 2, naming the file, the task or
line, and what was expected; nothing untrusted reaches the terminal raw."""

from __future__ import annotations

import json

import pytest

from backend.cli import main
from tests.backend.evaluate.test_evaluate_cli import (
    GT_TASKS,
    export,
    line,
    prelabel_jsonl,
    rect,
)

ESCAPE = "\x1b[31mred\x1b]0;owned\x07"
"""Terminal escapes: colour, and a window title set by an OSC sequence."""


def evaluate(tmp_path, gt, pred, *more):
    out = tmp_path / "eval"
    return main(
        ["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(out), *more]
    )


def good_predictions(tmp_path):
    return prelabel_jsonl(tmp_path, [line("a.jpg", [("cat", [20, 10, 60, 50], 0.9)])])


def with_region(region, **fields):
    """One prelabel line for a.jpg (200x100) holding ``region``."""
    return {**line("a.jpg", []), "calls": [{"predictions": [region]}], **fields}


CAT = {"type": "box", "label": "cat", "coords": [20, 10, 60, 50], "score": 0.9}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (
            [with_region({**CAT, "coords": [20, 10, 1e308, 50]})],
            "line 1 (a.jpg): region 0 ('cat' box): bottom-right corner (1e+308, 50) "
            "lies further outside the 200x100 image than its size",
        ),
        (
            [
                with_region(
                    {
                        "type": "polygon",
                        "label": "cat",
                        "coords": [[0, 0], [1e12, 0], [1e12, 1e12]],
                        "score": 0.9,
                    }
                )
            ],
            "line 1 (a.jpg): region 0 ('cat' polygon): vertex 1 (1e+12, 0)",
        ),
        (
            [with_region(CAT, width=100000, height=100000)],
            "line 1 (a.jpg): image size 100000x100000 is more than the 64225280 pixels",
        ),
        (
            [with_region({**CAT, "mask": {"size": [50, 50], "counts": "0"}})],
            "region 0 ('cat' box): mask size [50, 50] (h, w) is not the image's "
            "[100, 200]",
        ),
        (
            [with_region({**CAT, "mask": {"size": [100, 200], "counts": "!!!x"}})],
            "mask counts '!!!x' are not a compressed RLE, expected 20000 pixels",
        ),
        (
            [with_region(CAT, image=None)],
            "line 1: 'image' must be the image's path or URL, got None",
        ),
        (
            [{k: v for k, v in with_region(CAT).items() if k != "image"}],
            "line 1: no 'image' field",
        ),
        (
            [with_region(CAT, calls="x")],
            "line 1: 'calls' must be a list of objects with a 'predictions' list",
        ),
        ([with_region(CAT, width="200")], "line 1: width must be an integer"),
    ],
)
def test_bad_prediction_lines_exit_2_naming_file_line_and_part(
    tmp_path, capsys, lines, expected
):
    gt = export(tmp_path, GT_TASKS)
    pred = prelabel_jsonl(tmp_path, lines, name="bad.jsonl")
    assert evaluate(tmp_path, gt, pred) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rexlabel evaluate: {pred}: ")
    assert expected in err
    assert "Traceback" not in err


def coco_file(tmp_path, image, annotation):
    dataset = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 200, "height": 100, **image}
        ],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, **annotation}],
    }
    path = tmp_path / "pred.coco.json"
    path.write_text(json.dumps(dataset))
    return path


@pytest.mark.parametrize(
    ("image", "annotation", "expected"),
    [
        (
            {},
            {"bbox": [20, 10, -40, -40], "score": 0.9},
            "image 1 (a.jpg): region 0 ('cat' box): box (20, 10, -20, -30) has a "
            "negative width or height",
        ),
        (
            {"width": "200"},
            {"bbox": [20, 10, 40, 40]},
            "image 1 (a.jpg): width must be an integer, got '200'",
        ),
        (
            {"width": 100000, "height": 100000},
            {"bbox": [20, 10, 40, 40]},
            "image 1 (a.jpg): image size 100000x100000 is more than",
        ),
        (
            {},
            {"bbox": [0, 0, 9, 9], "segmentation": {"size": [9, 9], "counts": "0"}},
            "annotation 5 (image 1): segmentation size [9, 9] (h, w) is not the "
            "image's [100, 200]",
        ),
        (
            {},
            {"segmentation": [[0, 0, 9, 0, 9, 9], [0, 0, 3e8, 0, 5, 5]]},
            "annotation 5 (image 1): segmentation polygon 1: vertex 1 (3e+08, 0)",
        ),
    ],
)
def test_bad_coco_exits_2_naming_file_image_and_part(
    tmp_path, capsys, image, annotation, expected
):
    gt = export(tmp_path, GT_TASKS)
    pred = coco_file(tmp_path, image, annotation)
    assert evaluate(tmp_path, gt, pred) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rexlabel evaluate: {pred}: ")
    assert expected in err


def one_task(result, annotations=None):
    return [
        {
            "id": 1,
            "data": {"image": "a.jpg"},
            "annotations": annotations
            if annotations is not None
            else [{"id": 10, "result": result}],
        }
    ]


def test_a_label_studio_polygon_far_outside_names_task_and_region(tmp_path, capsys):
    far = {
        **rect("p1", "cat", 0, 0, 0, 0),
        "type": "polygonlabels",
        "value": {"points": [[10, 10], [1e9, 10], [50, 50]], "polygonlabels": ["cat"]},
    }
    gt = export(tmp_path, one_task([far]), name="gt.json")
    assert evaluate(tmp_path, gt, good_predictions(tmp_path)) == 2
    err = capsys.readouterr().err
    # 1e9 % of 200 px
    assert (
        f"{gt}: task 1 (a.jpg): region 0 ('cat' polygon): vertex 1 (2e+09, 10)" in err
    )


def test_annotations_not_a_list_say_what_was_expected(tmp_path, capsys):
    gt = export(tmp_path, one_task([], annotations="oops"), name="gt.json")
    assert evaluate(tmp_path, gt, good_predictions(tmp_path)) == 2
    err = capsys.readouterr().err
    assert (
        f"{gt}: task 1: 'annotations' must be a list of annotation objects, "
        "got 'oops'" in err
    )


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (
            {"id": 1, "data": "x", "annotations": []},
            "task 1: 'data' must be an object, got 'x'",
        ),
        (
            {
                "id": 1,
                "data": {"image": "a.jpg"},
                "annotations": [{"id": 4, "result": "x"}],
            },
            "task 1: annotation 4: 'result' must be a list of result objects, got 'x'",
        ),
    ],
)
def test_malformed_tasks_say_what_was_expected(tmp_path, capsys, task, expected):
    gt = export(tmp_path, [task], name="gt.json")
    assert evaluate(tmp_path, gt, good_predictions(tmp_path)) == 2
    assert f"{gt}: {expected}" in capsys.readouterr().err


def test_a_few_pixels_of_overhang_are_scored(tmp_path):
    # (-2, 10)-(60, 101): 1 % of 200 px left of the image, 1 px below it
    gt = export(tmp_path, one_task([rect("r", "cat", -1, 10, 31, 91)]), name="gt.json")
    pred = prelabel_jsonl(tmp_path, [line("a.jpg", [("cat", [-2, 10, 60, 101], 0.9)])])
    assert evaluate(tmp_path, gt, pred) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["overall"]["ap"] == pytest.approx(1.0)


# -- what pairs ----------------------------------------------------------------
def test_nothing_pairing_exits_2_showing_a_reference_of_each_side(tmp_path, capsys):
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/local-files/?d=photos/1.jpg"},
            "annotations": [{"id": 1, "result": [rect("r", "cat", 10, 10, 20, 40)]}],
        }
    ]
    gt = export(tmp_path, tasks, name="gt.json")
    pred = prelabel_jsonl(
        tmp_path, [line("photos/1.jpg", [("cat", [20, 10, 60, 50], 0.9)])]
    )
    assert evaluate(tmp_path, gt, pred) == 2
    err = capsys.readouterr().err
    assert f"not one of the 1 images in {pred} pairs" in err
    assert "'/data/local-files/?d=photos/1.jpg'" in err and "'photos/1.jpg'" in err
    assert "task id" in err  # how images pair
    assert not (tmp_path / "eval" / "report.json").exists()


def test_an_empty_predictions_file_exits_2(tmp_path, capsys):
    gt = export(tmp_path, GT_TASKS)
    pred = tmp_path / "empty.jsonl"
    pred.write_text("")
    assert evaluate(tmp_path, gt, pred) == 2
    assert f"{pred}: no predictions in it" in capsys.readouterr().err


# -- the terminal ----------------------------------------------------------------
def test_labels_and_task_data_reach_the_terminal_escaped(tmp_path, capsys):
    """A label and a task id carrying terminal escapes: the table, the
    warnings and the printed thresholds show them escaped, and the printed
    JSON still reads back to the label."""
    label = f"cat{ESCAPE}"
    two_labels = rect("r", label, 10, 10, 20, 40)
    two_labels["value"]["rectanglelabels"] = [label, "dog"]  # warned about
    tasks = [
        {
            "id": f"t{ESCAPE}",
            "data": {"image": "a.jpg"},
            "annotations": [{"id": 1, "result": [two_labels]}],
        }
    ]
    gt = export(tmp_path, tasks, name="gt.json")
    pred = prelabel_jsonl(tmp_path, [line("a.jpg", [(label, [20, 10, 60, 50], 0.9)])])
    assert evaluate(tmp_path, gt, pred, "--apply-thresholds") == 0
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert "\x1b" not in stream and "\x07" not in stream
    assert "cat\\x1b[31mred\\x1b]0;owned\\x07" in captured.out  # the table
    assert "task t\\x1b[31mred" in captured.err  # the warning
    snippet = captured.out[captured.out.index("{") :]
    assert json.loads(snippet)["model_score_thresholds"] == {label: 0.9}


def test_library_warnings_quoting_a_label_are_escaped(capsys):
    """matplotlib warns of a glyph its font lacks, quoting the character."""
    import warnings

    from backend.commands.evaluate import show_warning

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show_warning
        warnings.warn("Glyph 27 (\x1b) missing from font(s) DejaVu Sans.", stacklevel=1)
    err = capsys.readouterr().err
    assert "Glyph 27 (\\x1b) missing" in err and "\x1b" not in err


def test_help_is_plain_text(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "--project reads the project" in text
    assert "``" not in text and "::" not in text
