"""``--apply-thresholds``: a report's thresholds into the ML backend's extra params."""

from __future__ import annotations

import argparse
import json

import pytest

from backend.commands.evaluate import EXIT_NOT_APPLIED, apply_thresholds
from backend.evaluate.apply import (
    ApplyError,
    Change,
    apply_to_project,
    config_snippet,
    recommended_thresholds,
)
from backend.planner import plan_config
from common.labelstudio.api import LabelStudioClient
from tests.backend.evaluate.test_evaluate_cli import (
    GT_TASKS,
    export,
    line,
    prelabel_jsonl,
)
from tests.backend.planner.helpers import RECT, view
from tests.fake_label_studio import FakeLabelStudio

PROJECT = 4
BACKEND_URL = "http://rexlabel.test:9090"


def report_of(**recommended) -> dict:
    return {
        "labels": {
            label: {"recommended_threshold": value, "ground_truth": 1}
            for label, value in recommended.items()
        }
    }


def test_recommendations_are_rounded_down_to_two_decimals() -> None:
    report = report_of(Car=0.4167, Person=0.29, Dog=None, Cat=1.0, Cow=0.004)
    # 0.29 stays 0.29 (0.29 * 100 is 28.999... in binary floats)
    assert recommended_thresholds(report) == {
        "Car": 0.41,
        "Cat": 1.0,
        "Cow": 0.0,
        "Person": 0.29,
    }


@pytest.mark.parametrize(
    ("report", "message"),
    [
        (report_of(Car=1.2), "label 'Car': recommended_threshold 1.2"),
        (report_of(Car="0.5"), "label 'Car': recommended_threshold '0.5'"),
        ({"overall": {}}, "no 'labels' object"),
    ],
)
def test_a_bad_report_is_refused_naming_the_label(report, message) -> None:
    with pytest.raises(ApplyError, match=message):
        recommended_thresholds(report)


def test_the_snippet_is_extra_params_the_planner_reads() -> None:
    snippet = config_snippet({"Person": 0.29, "Car": 0.41})
    extra = json.loads(snippet)
    assert extra == {"model_score_thresholds": {"Car": 0.41, "Person": 0.29}}
    plan = plan_config(view(RECT), extra)
    assert plan.control("label").threshold_of("truck") == 0.41
    assert plan.control("label").threshold_of("Person") == 0.29


@pytest.fixture
def ls():
    with FakeLabelStudio() as server:
        server.add_project(PROJECT, view(RECT))
        yield server


def client_of(ls) -> LabelStudioClient:
    return LabelStudioClient(ls.url, ls.pat)


def test_thresholds_merge_into_the_backend_keeping_every_other_key(ls) -> None:
    extra = {
        "other": 1,
        "model_score_threshold": 0.3,
        "model_score_thresholds": {"Car": 0.5, "Old label": 0.2, "Person": 0.35},
    }
    ls.add_ml_backend(PROJECT, 7, BACKEND_URL, extra)
    wanted = {"Car": 0.41, "Person": 0.35, "Dog": 0.6}
    changes = apply_to_project(client_of(ls), PROJECT, wanted)
    assert changes == [Change("Car", 0.5, 0.41), Change("Dog", None, 0.6)]
    assert ls.ml_backends[7]["extra_params"] == {
        "other": 1,
        "model_score_threshold": 0.3,
        "model_score_thresholds": {
            "Car": 0.41,
            "Old label": 0.2,  # not in the report: kept
            "Person": 0.35,
            "Dog": 0.6,
        },
    }
    assert ls.paths_requested("PATCH") == ["/api/ml/7"]
    # Applying again changes nothing and sends nothing.
    assert apply_to_project(client_of(ls), PROJECT, wanted) == []
    assert ls.paths_requested("PATCH") == ["/api/ml/7"]


@pytest.mark.parametrize("stored", [None, "", '{"other": 1}'])
def test_empty_or_textual_extra_params_are_read(ls, stored) -> None:
    ls.add_ml_backend(PROJECT, 7, BACKEND_URL, stored)
    assert apply_to_project(client_of(ls), PROJECT, {"Car": 0.4}) == [
        Change("Car", None, 0.4)
    ]
    kept = {"other": 1} if stored else {}
    assert ls.ml_backends[7]["extra_params"] == {
        **kept,
        "model_score_thresholds": {"Car": 0.4},
    }


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        ([1, 2], "ML backend 7: extra_params .* is not a JSON object"),
        ({"model_score_thresholds": [0.5]}, "'model_score_thresholds' is \\[0.5\\]"),
        ({"model_score_thresholds": {"Bus": 2}}, "label 'Bus' has threshold 2"),
    ],
)
def test_unusable_extra_params_are_left_alone(ls, stored, message) -> None:
    ls.add_ml_backend(PROJECT, 7, BACKEND_URL, stored)
    with pytest.raises(ApplyError, match=message):
        apply_to_project(client_of(ls), PROJECT, {"Car": 0.4})
    assert ls.paths_requested("PATCH") == []
    assert ls.ml_backends[7]["extra_params"] == stored


def test_several_backends_need_an_id_and_the_error_lists_them(ls) -> None:
    ls.add_ml_backend(PROJECT, 7, BACKEND_URL, {}, title="rexlabel")
    ls.add_ml_backend(PROJECT, 8, "http://other:9090", {}, title="other")
    with pytest.raises(ApplyError) as info:
        apply_to_project(client_of(ls), PROJECT, {"Car": 0.4})
    message = str(info.value)
    assert "project 4 has 2 ML backends connected" in message
    assert "7 'rexlabel' (http://rexlabel.test:9090)" in message
    assert "8 'other' (http://other:9090)" in message
    apply_to_project(client_of(ls), PROJECT, {"Car": 0.4}, ml_backend_id=8)
    assert ls.ml_backends[8]["extra_params"] == {"model_score_thresholds": {"Car": 0.4}}
    assert ls.ml_backends[7]["extra_params"] == {}
    with pytest.raises(ApplyError, match="ML backend 9 is not connected to project 4"):
        apply_to_project(client_of(ls), PROJECT, {"Car": 0.4}, ml_backend_id=9)


def test_a_project_without_a_backend_is_a_clear_error(ls) -> None:
    with pytest.raises(ApplyError, match="project 4 has no ML backend connected"):
        apply_to_project(client_of(ls), PROJECT, {"Car": 0.4})


def test_basic_auth_backends_are_checked_with_their_stored_password(ls) -> None:
    ls.add_ml_backend(
        PROJECT, 7, BACKEND_URL, {}, auth_method="BASIC_AUTH", basic_auth_user="ls"
    )
    apply_to_project(client_of(ls), PROJECT, {"Car": 0.4})
    stored = ls.ml_backends[7]
    # what the PATCH carried: Label Studio keeps its password for a blank one
    assert (stored["auth_method"], stored["basic_auth_user"]) == ("BASIC_AUTH", "ls")
    assert stored["basic_auth_pass"] == ""


# The command ----------------------------------------------------------------------
def test_files_mode_prints_the_snippet_and_writes_nothing(tmp_path, capsys) -> None:
    from backend.cli import main

    gt = export(tmp_path, GT_TASKS)
    boxes = [("cat", [20, 10, 60, 50], 0.9), ("cat", [100, 20, 160, 80], 0.6)]
    pred = prelabel_jsonl(tmp_path, [line("a.jpg", boxes)])
    out = tmp_path / "eval"
    args = ["evaluate", "--gt", str(gt), "--pred", str(pred), "--out", str(out)]
    assert main([*args, "--apply-thresholds"]) == 0
    printed = capsys.readouterr().out
    assert "nothing was written" in printed
    snippet = printed[printed.index("{") :]
    # both cats found: the best F1 (1.0) is reached at the lower score, 0.6
    assert json.loads(snippet) == {"model_score_thresholds": {"cat": 0.6}}
    assert main([*args, "--ml-backend", "3"]) == 2
    assert "--ml-backend needs --apply-thresholds" in capsys.readouterr().err


def test_project_mode_prints_old_and_new(ls, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", ls.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", ls.pat)
    ls.add_ml_backend(PROJECT, 7, BACKEND_URL, {"model_score_thresholds": {"Car": 0.5}})
    args = argparse.Namespace(project=PROJECT, ml_backend=None)
    report = report_of(Car=0.418, Dog=0.6, Cat=None)
    assert apply_thresholds(args, report) == 0
    assert capsys.readouterr().out.splitlines() == [
        "Car: 0.5 -> 0.41",
        "Dog: unset -> 0.6",
    ]
    assert apply_thresholds(args, report) == 0
    assert (
        capsys.readouterr().out.strip() == "project 4: model_score_thresholds unchanged"
    )
    bad = argparse.Namespace(project=PROJECT, ml_backend=99)
    assert apply_thresholds(bad, report) == EXIT_NOT_APPLIED
    assert "ML backend 99 is not connected" in capsys.readouterr().err
