"""The browser tests' own helpers, without a browser (fast): the scripted
Rex-Omni answers the prompts rexlabel really sends, in a form the real parser
reads back, and stored results become the regions-panel rows expected."""

from __future__ import annotations

import json

import requests

from converters.parser import parse_output
from converters.prompts import build_prompt
from converters.tasks import Task
from tests.ui.labelstudio_ui import Row, expected_rows, instances, rows_match
from tests.ui.scripted_rexomni import (
    KEYPOINT_JOINTS,
    MODEL_ID,
    OCR_LINES,
    ScriptedRexOmni,
    answer_for,
    completion,
)

WIDTH, HEIGHT = 320, 240


def test_scripted_answers_parse_into_what_the_tests_expect() -> None:
    keypoint = build_prompt(Task.KEYPOINT, ["person"], keypoint_type="person")
    ocr = build_prompt(Task.OCR_BOX, ["text line"])
    people = parse_output(answer_for(keypoint), Task.KEYPOINT, WIDTH, HEIGHT)
    assert people.warnings == [] and len(people.predictions) == len(KEYPOINT_JOINTS)
    for found, joints in zip(people.predictions, KEYPOINT_JOINTS, strict=True):
        visible = {name for name, xy in joints.items() if xy is not None}
        assert {n for n, xy in found.keypoints.items() if xy} == visible
    lines = parse_output(answer_for(ocr), Task.OCR_BOX, WIDTH, HEIGHT)
    assert [p.text for p in lines.predictions] == list(OCR_LINES)
    assert answer_for(build_prompt(Task.DETECTION, ["car"])) is None


def test_completion_tokens_spell_the_answer_with_log_probabilities() -> None:
    answer = answer_for("Detect all text line and recognize them.")
    choice = completion(answer)["choices"][0]
    tokens = [entry["token"] for entry in choice["logprobs"]["content"]]
    assert "".join(tokens) == choice["message"]["content"] == answer + "<|im_end|>"
    assert "<|box_start|>" in tokens and "<100>" in tokens


def test_server_lists_its_model_and_refuses_an_unknown_prompt() -> None:
    with ScriptedRexOmni() as server:
        models = requests.get(f"{server.url}/models", timeout=5).json()
        assert models["data"] == [{"id": MODEL_ID}]
        body = {"messages": [{"role": "user", "content": [{"type": "text"}]}]}
        body["messages"][0]["content"][0]["text"] = "Point to cat."
        refused = requests.post(f"{server.url}/chat/completions", json=body, timeout=5)
        assert refused.status_code == 400 and "Point to cat." in refused.text
        assert server.prompts == ["Point to cat."]
    assert not server.thread.is_alive()


def _result(rid: str, kind: str, value: dict, **extra) -> dict:
    return {"id": rid, "type": kind, "value": value, **extra}


def test_expected_rows_join_ocr_parts_and_nest_joints() -> None:
    box = {"x": 1, "y": 2, "width": 3, "height": 4}
    results = [
        _result("a", "rectangle", box, score=0.5),
        _result("a", "labels", {**box, "labels": ["Text"]}, score=0.5),
        _result("a", "textarea", {**box, "text": ["EXIT"]}, score=0.5),
        _result("p", "rectanglelabels", {**box, "rectanglelabels": ["person"]}),
        _result("k", "keypointlabels", {"keypointlabels": ["nose"]}, parentID="p"),
    ]
    rows = expected_rows(json.loads(json.dumps(results)))
    assert rows == [
        Row("rectangleregion", "Text", 0.5, "EXIT", 0),
        Row("rectangleregion", "person", None, None, 0),
        Row("keypointregion", "nose", None, None, 1),
    ]
    assert [
        (top.label, [j.label for j in under]) for top, under in instances(rows)
    ] == [
        ("Text", []),
        ("person", ["nose"]),
    ]


def test_rows_match_allows_the_two_decimals_shown_only() -> None:
    stored = [Row("brushregion", "cat", 0.3349), Row("brushregion", "cat", 0.71)]
    assert rows_match(
        [Row("brushregion", "cat", 0.71), Row("brushregion", "cat", 0.33)], stored
    )
    assert not rows_match(
        [Row("brushregion", "cat", 0.34), Row("brushregion", "cat", 0.71)], stored
    )
    assert not rows_match(
        [Row("brushregion", "dog", 0.33), Row("brushregion", "cat", 0.71)], stored
    )
    assert not rows_match([Row("brushregion", "cat", 0.71)], stored)
