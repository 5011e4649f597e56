"""``rexlabel evaluate --project``: tasks -> pairs, the version scored, paging,
and the command against the fake Label Studio (figures known by hand)."""

from __future__ import annotations

import json

import pytest

from backend.cli import main
from backend.evaluate.inputs import EvaluateInputError
from backend.evaluate.project import (
    ProjectCounts,
    ProjectError,
    choose_model_version,
    iter_project_pairs,
    task_pair,
)
from common.labelstudio import api
from common.labelstudio.api import LabelStudioClient
from tests.fake_label_studio import LEGACY_TOKEN, FakeLabelStudio, make_pat

V1, V2 = "rexlabel-0-aaaaaaaaaaaa", "rexlabel-0-bbbbbbbbbbbb"
CONFIG = (
    '<View><Image name="image" value="$image"/>'
    '<RectangleLabels name="label" toName="image"><Label value="cat"/>'
    "</RectangleLabels></View>"
)


def rect(rid, label, x, y, w, h, score=None, width=200, height=100):
    """A rectanglelabels result; x/y/w/h in percent of a 200x100 image."""
    result = {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": width,
        "original_height": height,
        "value": {"x": x, "y": y, "width": w, "height": h, "rectanglelabels": [label]},
    }
    if score is not None:
        result["score"] = score
    return result


def annotation(aid, result, cancelled=False, updated="2026-01-01T00:00:00Z"):
    return {
        "id": aid,
        "result": result,
        "was_cancelled": cancelled,
        "updated_at": updated,
    }


def prediction(pid, result, version):
    return {"id": pid, "result": result, "model_version": version}


def task(tid, annotations=(), predictions=()):
    return {
        "id": tid,
        "data": {"image": f"/data/upload/1/{tid}.png"},
        "annotations": list(annotations),
        "predictions": list(predictions),
    }


# -- one task -> one pair ------------------------------------------------------
def test_latest_non_cancelled_annotation_against_the_versions_prediction():
    t = task(
        1,
        annotations=[
            annotation(10, [rect("a", "cat", 10, 10, 20, 40)]),
            # newer but cancelled (skipped in the UI): not the ground truth
            annotation(11, [], cancelled=True, updated="2026-02-01T00:00:00Z"),
        ],
        predictions=[
            prediction(20, [rect("p", "cat", 10, 10, 20, 40, score=0.9)], V1),
            prediction(21, [rect("q", "dog", 0, 0, 50, 50, score=0.5)], V2),
        ],
    )
    counts = ProjectCounts()
    pair = task_pair(t, V1, counts)
    assert (pair.key, pair.width, pair.height) == ("/data/upload/1/1.png", 200, 100)
    # 10 % of 200 = 20 px, 10 % of 100 = 10 px, 20 % x 40 % = 40 x 40 px
    assert [(r.label, r.coords) for r in pair.ground_truth] == [
        ("cat", (20.0, 10.0, 60.0, 50.0))
    ]
    assert [(r.label, r.coords, r.score) for r in pair.predictions] == [
        ("cat", (20.0, 10.0, 60.0, 50.0), 0.9)
    ]
    assert (counts.tasks, counts.scored) == (1, 1)


def test_tasks_not_scored_are_counted_by_reason():
    counts = ProjectCounts()
    preds = [prediction(1, [], V1)]
    assert task_pair(task(1, predictions=preds), V1, counts) is None
    only_cancelled = [annotation(2, [rect("a", "cat", 1, 1, 5, 5)], cancelled=True)]
    assert task_pair(task(2, only_cancelled, preds), V1, counts) is None
    other_version = [prediction(3, [rect("p", "cat", 1, 1, 5, 5)], V2)]
    annotated = [annotation(4, [rect("a", "cat", 1, 1, 5, 5)])]
    assert task_pair(task(3, annotated, other_version), V1, counts) is None
    assert (counts.tasks, counts.scored) == (3, 0)
    assert (counts.without_annotation, counts.only_cancelled) == (2, 1)
    assert counts.without_predictions == 1


def test_an_empty_prediction_is_scored_as_nothing_found():
    annotated = [annotation(4, [rect("a", "cat", 1, 1, 5, 5)])]
    counts = ProjectCounts()
    pair = task_pair(task(5, annotated, [prediction(9, [], V1)]), V1, counts)
    assert len(pair.ground_truth) == 1 and pair.predictions == []
    assert (pair.width, pair.height) == (200, 100)
    assert counts.scored == 1


def test_sizes_that_disagree_name_the_task():
    t = task(
        7,
        [annotation(1, [rect("a", "cat", 1, 1, 5, 5)])],
        [prediction(2, [rect("p", "cat", 1, 1, 5, 5, width=400, height=200)], V1)],
    )
    with pytest.raises(EvaluateInputError, match=r"task 7 .*200x100.*400x200"):
        task_pair(t, V1, ProjectCounts())


def test_malformed_result_names_the_task():
    bad = [annotation(1, [{"type": "rectanglelabels", "value": 3}])]
    with pytest.raises(EvaluateInputError, match="task 8"):
        task_pair(task(8, bad, [prediction(2, [], V1)]), V1, ProjectCounts())


def test_unread_results_are_warnings_naming_task_and_side():
    choice = {
        "id": "c",
        "type": "choices",
        "from_name": "quality",
        "to_name": "image",
        "value": {"choices": ["good"]},
    }
    t = task(
        9,
        [annotation(1, [rect("a", "cat", 1, 1, 5, 5), choice])],
        [prediction(2, [], V1)],
    )
    counts = ProjectCounts()
    assert len(task_pair(t, V1, counts).ground_truth) == 1
    assert counts.warning_count == 1
    assert counts.warnings[0].startswith("task 9: annotation: ")


# -- which version is scored ------------------------------------------------------
def versions(*rows):
    """model-versions rows, newest first: (version, count)."""
    return [{"model_version": v, "count": n, "latest": "t"} for v, n in rows]


def test_the_projects_version_when_it_has_predictions():
    choice = choose_model_version(
        {"id": 3, "model_version": V2}, [], versions((V1, 4), (V2, 4))
    )
    assert choice.version == V2 and "project" in choice.reason


def test_a_connected_models_title_means_its_current_version():
    ml = [{"title": "rexlabel", "model_version": V2}]
    project = {"id": 3, "model_version": "rexlabel"}
    assert choose_model_version(project, ml, versions((V1, 4), (V2, 4))).version == V2


def test_otherwise_the_newest_rexlabel_predictions():
    ml = [{"title": "rexlabel", "model_version": "rexlabel-0-cccccccccccc"}]
    project = {"id": 3, "model_version": "rexlabel"}  # its version has none yet
    stored = versions(("someone-else", 2), (V1, 4), (V2, 4))
    choice = choose_model_version(project, ml, stored)
    assert choice.version == V1 and "newest rexlabel" in choice.reason
    only_theirs = versions(("someone-else", 2), ("older", 1))
    assert choose_model_version(project, ml, only_theirs).version == "someone-else"


def test_a_requested_version_must_have_predictions():
    stored = versions((V1, 4), (V2, 0))
    assert choose_model_version({"id": 3}, [], stored, V1).version == V1
    with pytest.raises(ProjectError, match=rf"project 3 .*'{V2}'.*'{V1}' \(4\)"):
        choose_model_version({"id": 3}, [], stored, V2)


def test_a_project_without_predictions_is_an_error():
    with pytest.raises(ProjectError, match="project 3 holds no predictions"):
        choose_model_version({"id": 3, "model_version": ""}, [], [])


# -- paging through a (fake) Label Studio ----------------------------------------
def fill(ls: FakeLabelStudio, tasks, project=1, model_version=""):
    ls.add_project(project, CONFIG, model_version=model_version)
    for t in tasks:
        ls.add_task(project, t["id"], t["data"])
        ls.tasks[t["id"]]["annotations"] = t["annotations"]
        for p in t["predictions"]:
            ls.add_prediction(t["id"], p["result"], p["model_version"])


def cats(n_tasks):
    """Tasks 1..n: each one cat at (20,10)-(60,50), predicted exactly by V1
    (score 0.9); task 3 not annotated."""
    return [
        task(
            i,
            [] if i == 3 else [annotation(i, [rect("a", "cat", 10, 10, 20, 40)])],
            [prediction(i, [rect("p", "cat", 10, 10, 20, 40, score=0.9)], V1)],
        )
        for i in range(1, n_tasks + 1)
    ]


def test_pairs_stream_page_by_page():
    with FakeLabelStudio() as ls:
        fill(ls, cats(7))
        client = LabelStudioClient(ls.url, LEGACY_TOKEN)
        counts = ProjectCounts()
        pairs = iter_project_pairs(client, 1, V1, counts, page_size=3)
        first = next(pairs)
        # one page read so far, not the project
        assert len(ls.paths_requested("GET")) == 1
        rest = list(pairs)
        listed = [p for p in ls.paths_requested("GET") if p.startswith("/api/tasks/")]
    assert [first.key, *(p.key for p in rest)] == [
        f"/data/upload/1/{i}.png" for i in (1, 2, 4, 5, 6, 7)
    ]
    assert len(listed) == 3
    assert all("page_size=3" in p and "fields=all" in p for p in listed)
    assert (counts.tasks, counts.scored, counts.without_annotation) == (7, 6, 1)


# -- the command ---------------------------------------------------------------------
@pytest.fixture
def fake_ls(monkeypatch):
    with FakeLabelStudio() as ls:
        monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
        monkeypatch.setenv("LABEL_STUDIO_API_KEY", LEGACY_TOKEN)
        yield ls


def evaluate(tmp_path, *args):
    out = tmp_path / "eval"
    code = main(["evaluate", *args, "--out", str(out)])
    report = json.loads((out / "report.json").read_text()) if code == 0 else None
    return code, report


def test_project_report_with_the_chosen_version(fake_ls, tmp_path, capsys):
    tasks = cats(4)
    # task 4's V1 box is shifted right by 20 px: IoU 20x40 / 60x40 = 1/3, a
    # false positive and a miss; a newer V2 prediction is not the project's
    tasks[3]["predictions"] = [
        prediction(4, [rect("p", "cat", 20, 10, 20, 40, score=0.8)], V1),
        prediction(5, [rect("q", "cat", 10, 10, 20, 40, score=0.9)], V2),
    ]
    fill(fake_ls, tasks, model_version="rexlabel")
    fake_ls.add_ml_backend(
        1, 1, "http://rexlabel:9090", title="rexlabel", model_version=V1
    )
    code, report = evaluate(tmp_path, "--project", "1")
    assert code == 0
    inputs = report["inputs"]
    assert inputs["model_version"] == V1
    assert "connected model 'rexlabel'" in inputs["model_version_chosen_as"]
    assert (inputs["tasks"], inputs["tasks_scored"]) == (4, 3)
    assert inputs["tasks_without_annotation"] == 1
    overall = report["overall"]
    assert (overall["images"], overall["ground_truth"], overall["predictions"]) == (
        3,
        3,
        3,
    )
    at = overall["at_threshold"]
    assert (at["true_positives"], at["false_positives"], at["misses"]) == (2, 0, 1)
    out = capsys.readouterr().out
    assert f"model version {V1!r}" in out and "4 tasks read, 3 scored" in out

    code, report = evaluate(tmp_path, "--project", "1", "--model-version", V2)
    assert code == 0
    assert report["inputs"]["model_version"] == V2
    # only task 4 holds a V2 prediction, and it is exact
    assert report["inputs"]["tasks_without_predictions"] == 2
    assert report["overall"]["ap"] == pytest.approx(1.0)


def test_unknown_version_exits_2_listing_the_projects(fake_ls, tmp_path, capsys):
    fill(fake_ls, cats(2))
    code, _ = evaluate(tmp_path, "--project", "1", "--model-version", "nope")
    assert code == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and f"'{V1}' (2)" in err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("project", "has no project 5 that this token can see"),
        ("token", "refused the token in LABEL_STUDIO_API_KEY (HTTP 401)"),
        ("pat", "rejected the personal access token"),
        ("url", "to Label Studio at http://127.0.0.1:9 failed"),
    ],
)
def test_label_studio_errors_exit_2_without_the_token(
    fake_ls, tmp_path, capsys, monkeypatch, change, expected
):
    fill(fake_ls, cats(2))
    project = "5" if change == "project" else "1"
    secret = {"token": "f" * 40, "pat": make_pat()}.get(change, LEGACY_TOKEN)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", secret)
    if change == "url":
        monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
        monkeypatch.setattr(api, "RETRY_BACKOFF_S", 0.0)
    code, _ = evaluate(tmp_path, "--project", project)
    assert code == 2
    err = capsys.readouterr().err
    assert expected in err
    assert secret not in err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (
            ["--project", "1", "--gt", "a.json"],
            "--project cannot be combined with --gt",
        ),
        (["--model-version", "v", "--gt", "a", "--pred", "b"], "--model-version"),
        (["--gt", "a.json"], "--gt and --pred"),
        ([], "--project ID"),
    ],
)
def test_exactly_one_source(tmp_path, capsys, args, named):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", *args, "--out", str(tmp_path / "x")])
    assert exit_.value.code == 2
    assert named in capsys.readouterr().err


def test_project_thresholds_applied_to_its_model(fake_ls, tmp_path, capsys):
    """--project with --apply-thresholds: the recommended threshold of the
    project's report lands in its connected model's extra params."""
    fill(fake_ls, cats(3), model_version=V1)
    fake_ls.add_ml_backend(1, 2, "http://rexlabel:9090", {"other": 1})
    code, report = evaluate(tmp_path, "--project", "1", "--apply-thresholds")
    assert code == 0
    assert report["labels"]["cat"]["recommended_threshold"] == pytest.approx(0.9)
    assert fake_ls.ml_backends[2]["extra_params"] == {
        "other": 1,
        "model_score_thresholds": {"cat": 0.9},
    }
    assert "cat: unset -> 0.9" in capsys.readouterr().out


def test_project_region_far_outside_exits_2_naming_the_task(fake_ls, tmp_path, capsys):
    tasks = cats(2)
    far = {
        **rect("q", "cat", 0, 0, 0, 0),
        "type": "polygonlabels",
        "value": {"points": [[1, 1], [3e8, 1], [5, 5]], "polygonlabels": ["cat"]},
        "score": 0.5,
    }
    tasks[1]["predictions"] = [prediction(2, [far], V1)]
    fill(fake_ls, tasks, model_version=V1)
    code, _ = evaluate(tmp_path, "--project", "1")
    assert code == 2
    err = capsys.readouterr().err
    assert f"the prediction {V1!r}: task 2 (/data/upload/1/2.png): region 0" in err
    assert "vertex 1 (6e+08, 1) lies further outside the 200x100 image" in err


def test_project_scoring_errors_exit_2(fake_ls, tmp_path, capsys, monkeypatch):
    """COCOeval refusing the regions (a CocoError, as for keypoint sets that
    disagree) is bad input, not a traceback."""
    import backend.evaluate.report as report_module
    from converters.coco import CocoError

    def refuse(pairs):
        raise CocoError("keypoint instance of prediction 0 has joints ['paw']")

    monkeypatch.setattr(report_module, "build_report", refuse)
    fill(fake_ls, cats(2), model_version=V1)
    code, _ = evaluate(tmp_path, "--project", "1")
    assert code == 2
    assert "project 1: keypoint instance" in capsys.readouterr().err


def test_project_labels_and_versions_print_escaped(fake_ls, tmp_path, capsys):
    escape = "\x1b[31mred\x1b]0;owned\x07"
    label, version = f"cat{escape}", f"v{escape}"
    tasks = [
        task(
            i,
            [annotation(i, [rect("a", label, 10, 10, 20, 40)])],
            [prediction(i, [rect("p", label, 10, 10, 20, 40, score=0.9)], version)],
        )
        for i in (1, 2)
    ]
    fill(fake_ls, tasks, model_version=version)
    fake_ls.add_ml_backend(1, 2, "http://rexlabel:9090")
    code, _ = evaluate(tmp_path, "--project", "1", "--apply-thresholds")
    assert code == 0
    assert fake_ls.ml_backends[2]["extra_params"]["model_score_thresholds"] == {
        label: 0.9
    }
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err
    assert "cat\\x1b[31mred\\x1b]0;owned\\x07: unset -> 0.9" in captured.out
