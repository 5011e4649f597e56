import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.parser import DEFAULT_OCR_LABEL, parse_output
from converters.prediction import Prediction, RegionType
from converters.tasks import Task
from tests.converters.conftest import vector_params

ORS, ORE = "<|object_ref_start|>", "<|object_ref_end|>"
BS, BE = "<|box_start|>", "<|box_end|>"


def group(phrase: str, items: str) -> str:
    return f"{ORS}{phrase}{ORE}{BS}{items}{BE}"


def close(got, want) -> bool:
    """Equal, with floats to 1e-9 (lists and tuples alike)."""
    if isinstance(want, float) or isinstance(got, float):
        return math.isclose(got, want, rel_tol=0.0, abs_tol=1e-9)
    if isinstance(want, (list, tuple)):
        return (
            isinstance(got, (list, tuple))
            and len(got) == len(want)
            and all(close(g, w) for g, w in zip(got, want, strict=True))
        )
    if isinstance(want, dict):
        return (
            isinstance(got, dict)
            and got.keys() == want.keys()
            and all(close(got[k], want[k]) for k in want)
        )
    return got == want


def test_vectors_cover_every_task_and_grammar(rex_vectors):
    """Guards the parametrised tests below against silently testing little."""
    tasks = {Task.from_value(v["task"]) for v in rex_vectors["parse_vectors"]}
    assert tasks >= {Task.DETECTION, Task.POINTING, Task.KEYPOINT, Task.OCR_BOX}
    assert any(v["expected"]["truncated"] for v in rex_vectors["parse_vectors"])
    for section in ("prompt_vectors", "smart_resize_vectors", "pixel_to_bin_vectors"):
        assert rex_vectors[section], section


@pytest.mark.parametrize("vector", vector_params("parse_vectors"))
def test_parse_vectors(vector):
    width, height = vector["image_size"]
    result = parse_output(
        vector["raw_output"], vector["task"], width, height, category=vector["category"]
    )
    got = result.to_dict()
    for key, want in vector["expected"].items():
        if key == "predictions":
            assert len(got["predictions"]) == len(want), got
            for prediction, expected in zip(got["predictions"], want, strict=True):
                subset = {name: prediction[name] for name in expected}
                assert close(subset, expected), (subset, expected)
        else:
            assert close(got[key], want), (key, got[key], want)


def boxes(result):
    return [(p.label, p.coords) for p in result.predictions]


# Well-formed text ------------------------------------------------------------


def test_box_geometry_is_upstream_expression_and_spans_point_at_items():
    text = group("dog", "<10><20><30><40>,<500><600><700><800>") + "<|im_end|>"
    result = parse_output(text, "detection", 640, 480)
    assert result.warnings == [] and not result.truncated
    first, second = result.predictions
    assert first.coords == (
        10 / 999 * 640,
        20 / 999 * 480,
        30 / 999 * 640,
        40 / 999 * 480,
    )
    assert text[slice(*first.span)] == "<10><20><30><40>"
    assert text[slice(*second.span)] == "<500><600><700><800>"


def test_vllm_spacing_parses_like_the_trained_grammar():
    compact = group("a b", "<1><2><3><4>,<5><6><7><8>") + ", " + group("c", "None")
    spaced = (
        f" {ORS} a b {ORE} {BS} <1> <2> <3> <4> , <5> <6>\n<7> <8> {BE} , "
        f"{ORS} c {ORE} {BS} None {BE} "
    )
    want = parse_output(compact, "detection", 999, 999)
    got = parse_output(spaced, "detection", 999, 999)
    assert (
        boxes(got)
        == boxes(want)
        == [
            ("a b", (1.0, 2.0, 3.0, 4.0)),
            ("a b", (5.0, 6.0, 7.0, 8.0)),
        ]
    )
    assert got.warnings == []
    assert [spaced[slice(*p.span)] for p in got.predictions] == [
        "<1> <2> <3> <4>",
        "<5> <6>\n<7> <8>",
    ]


def test_points_and_gui_points():
    text = group("pigeon", "<0><0>,<999><999>")
    for task in ("pointing", Task.GUI_POINTING):
        result = parse_output(text, task, 200, 100)
        assert [p.coords for p in result.predictions] == [(0.0, 0.0), (200.0, 100.0)]
        assert {p.type for p in result.predictions} == {RegionType.POINT}
        assert [text[slice(*p.span)] for p in result.predictions] == [
            "<0><0>",
            "<999><999>",
        ]


def test_ocr_polygons_keep_identical_strings_apart_and_label_by_category():
    quad = "<1><2><10><2><10><5><1><5>"
    text = ", ".join([group("Hello", quad), group("Hello", quad), group("", quad)])
    result = parse_output(text, "ocr_polygon", 999, 999, category="text line")
    assert [(p.label, p.text) for p in result.predictions] == [
        ("text line", "Hello"),
        ("text line", "Hello"),
        ("text line", ""),
    ]
    assert result.predictions[0].coords == ((1, 2), (10, 2), (10, 5), (1, 5))
    assert text[slice(*result.predictions[1].span)] == quad
    default = parse_output(text, "ocr_box", 999, 999)
    assert default.predictions == []  # quads are not boxes
    assert len(default.warnings) == 3
    boxed = parse_output(group("Hi", "<1><2><3><4>"), "ocr_box", 999, 999)
    assert (boxed.predictions[0].label, boxed.predictions[0].text) == (
        DEFAULT_OCR_LABEL,
        "Hi",
    )


def test_none_group_gives_nothing_and_no_warning():
    text = group("cat", "None") + ", " + group("dog", " None ")
    result = parse_output(text, "detection", 10, 10)
    assert result.predictions == [] and result.warnings == [] and not result.truncated


def test_no_task_types_items_by_count():
    text = group("x", "<1><2>,<1><2><3><4>,<1><2><3><4><5><6>,<1><2><3>")
    result = parse_output(text, None, 999, 999)
    assert [p.type for p in result.predictions] == [
        RegionType.POINT,
        RegionType.BOX,
        RegionType.POLYGON,
    ]
    assert len(result.warnings) == 1 and "3 numbers" in result.warnings[0]


def test_endoftext_also_ends_the_answer():
    text = group("a", "<1><1><2><2>") + "<|endoftext|>" + group("b", "<3><3><4><4>")
    assert [p.label for p in parse_output(text, "detection", 9, 9).predictions] == ["a"]


def test_parsed_predictions_are_valid_canonical_predictions():
    text = ", ".join([group("a", "<5><9><1><2>"), group("b", "<1><2><3><4><5><6>")])
    for task in (None, "detection"):
        for prediction in parse_output(text, task, 640, 480).predictions:
            again = Prediction.from_dict(prediction.to_dict())
            assert again == prediction
    json.dumps(parse_output(text, None, 640, 480).to_dict())


# Malformed and truncated text ------------------------------------------------


def test_missing_box_end_does_not_swallow_the_next_group():
    text = f"{ORS}a{ORE}{BS}<1><2><3><4>, " + group("b", "<5><6><7><8>")
    result = parse_output(text, "detection", 999, 999)
    assert boxes(result) == [("a", (1.0, 2.0, 3.0, 4.0)), ("b", (5.0, 6.0, 7.0, 8.0))]
    assert not result.truncated
    assert any("no <|box_end|>" in w for w in result.warnings)


def test_newline_inside_coordinates_keeps_the_group():
    text = group("a", "<1><2>\n<3><4>,\n<5><6><7><8>")
    result = parse_output(text, "detection", 999, 999)
    assert len(result.predictions) == 2 and result.warnings == []


def test_phrase_may_contain_angle_brackets():
    result = parse_output(group("a<b>c", "<1><2><3><4>"), "detection", 999, 999)
    assert boxes(result) == [("a<b>c", (1.0, 2.0, 3.0, 4.0))]


@pytest.mark.parametrize("task", ["detection", None])
def test_box_cut_after_two_numbers_is_not_a_point(task):
    text = f"{ORS}a{ORE}{BS}<1><2><3><4>,<5><6>"
    result = parse_output(text, task, 999, 999)
    assert result.truncated
    assert [p.type for p in result.predictions] == [RegionType.BOX]
    assert any("cut" in w for w in result.warnings)
    # The last item is complete only if the task says how long an item is.
    last_box = parse_output(text[: text.rindex(",")], task, 999, 999)
    assert len(last_box.predictions) == (1 if task else 0)


def test_polygon_cut_to_six_numbers_is_not_a_triangle():
    text = f"{ORS}Hi{ORE}{BS}<1><2><3><4><5><6>"
    result = parse_output(text, "ocr_polygon", 999, 999, category="word")
    assert result.predictions == [] and result.truncated
    assert any("cut off" in w for w in result.warnings)


def test_cut_inside_a_token_drops_only_that_item():
    text = f"{ORS}a{ORE}{BS}<1><2><3><4>,<5><6><7><8"
    result = parse_output(text, "detection", 999, 999)
    assert boxes(result) == [("a", (1.0, 2.0, 3.0, 4.0))] and result.truncated


def test_bins_above_999_are_clamped_with_a_warning():
    result = parse_output(group("a", "<1><2><1000><5000>"), "detection", 640, 480)
    assert result.predictions[0].coords == (1 / 999 * 640, 2 / 999 * 480, 640, 480)
    assert any("clamped" in w for w in result.warnings)
    spaced = parse_output(group("a", "<1> <2> <1000> <5000>"), "detection", 640, 480)
    assert spaced.predictions[0].coords == result.predictions[0].coords
    point = parse_output(group("a", "<1200><3>"), "pointing", 640, 480)
    assert point.predictions[0].coords[0] == 640.0 and point.warnings


def test_box_corners_are_ordered_and_zero_area_boxes_dropped():
    text = group("a", "<30><40><10><20>,<5><5><5><9>,<1><2><3><4>")
    result = parse_output(text, "detection", 999, 999)
    assert [p.coords for p in result.predictions] == [
        (10.0, 20.0, 30.0, 40.0),
        (1.0, 2.0, 3.0, 4.0),
    ]
    assert any("put in order" in w for w in result.warnings)
    assert any("zero-area" in w for w in result.warnings)


def test_wrong_size_items_are_dropped_with_warnings():
    text = group("a", "<1><2><3><4>,<1><2>,junk<1><2><3><4>")
    result = parse_output(text, "detection", 999, 999)
    assert len(result.predictions) == 1
    assert len(result.warnings) == 2
    points = parse_output(text, "gui_pointing", 999, 999)
    assert [p.coords for p in points.predictions] == [(1.0, 2.0)]


def test_groups_without_tokens_or_phrase_end_are_reported():
    text = f"{ORS}a{ORE} , {ORS}b{BS}<1><2><3><4>{BE}, " + group("c", "")
    result = parse_output(text, "detection", 999, 999)
    assert result.predictions == []
    assert len(result.warnings) == 3
    assert not result.truncated


def test_stray_tokens_outside_groups_are_reported_but_prose_is_not():
    prose = "Sure! " + group("a", "<1><2><3><4>") + " That is all."
    assert parse_output(prose, "detection", 9, 9).warnings == []
    stray = "<1><2><3><4> " + group("a", "<1><2><3><4>") + "<5><6><7><8>"
    assert len(parse_output(stray, "detection", 9, 9).warnings) == 2


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="width"):
        parse_output("", "detection", 0, 10)
    with pytest.raises(ValueError, match="height"):
        parse_output("", "detection", 10, float("nan"))
    with pytest.raises(TypeError, match="text"):
        parse_output(None, "detection", 10, 10)
    with pytest.raises(ValueError, match="Unknown task"):
        parse_output("", "segment", 10, 10)


# Keypoints -------------------------------------------------------------------

KP_A = '"person1": {"bbox": " <1> <2> <30> <40> ", "keypoints": {"nose": " <5> <6> "}}'
KP_B = '"person2": {"bbox": "<10><20><300><400>", "keypoints": {"nose": "unvisible"}}'


def test_keypoint_spans_cover_each_instance():
    text = "```json\n{" + KP_A + ", " + KP_B + "}\n```<|im_end|>"
    result = parse_output(text, "keypoint", 999, 999, category="person")
    assert [text[slice(*p.span)] for p in result.predictions] == [KP_A, KP_B]
    assert result.predictions[0].keypoints == {"nose": (5.0, 6.0)}
    assert result.predictions[1].keypoints == {"nose": None}
    assert result.warnings == [] and not result.truncated


def test_truncated_keypoint_json_keeps_complete_instances():
    text = "```json\n{" + KP_A + ", " + KP_B[:50]
    result = parse_output(text, "keypoint", 999, 999)
    assert [p.instance_id for p in result.predictions] == ["person1"]
    assert result.truncated and result.warnings


def test_malformed_instance_is_skipped_and_later_ones_kept():
    bad = '"person9": {"bbox": "<1><2><3><4>", "keypoints": {"nose": <5><6>}}'
    text = "{" + KP_A + ", " + bad + ", " + KP_B + "}"
    result = parse_output(text, "keypoint", 999, 999)
    assert [p.instance_id for p in result.predictions] == ["person1", "person2"]
    assert not result.truncated
    assert any("malformed" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("instance", "reason"),
    [
        ('"p": {"bbox": ["<1>", "<2>", "<3>", "<4>"], "keypoints": {}}', "bbox"),
        ('"p": {"bbox": "<1><2><3>", "keypoints": {}}', "bbox"),
        ('"p": {"keypoints": {}}', "lacks bbox"),
        ('"p": {"bbox": "<1><2><3><4>", "keypoints": []}', "keypoints"),
        ('"p": [1, 2]', "not an object"),
    ],
)
def test_invalid_instances_are_skipped_with_a_warning(instance, reason):
    result = parse_output("{" + instance + "}", "keypoint", 999, 999)
    assert result.predictions == []
    assert any(reason in w for w in result.warnings), result.warnings


def test_malformed_joints_become_not_visible_with_a_warning():
    joints = '{"nose": "<1>", "eye": null, "ear": [1, 2], "hip": "<1001><3>"}'
    text = '{"cat 2": {"bbox": "<40><2><3><4>", "keypoints": ' + joints + "}}"
    result = parse_output(text, "keypoint", 999, 999, category="animal")
    (cat,) = result.predictions
    assert cat.keypoints == {"nose": None, "eye": None, "ear": None, "hip": (999, 3)}
    assert cat.label == "cat" and cat.coords == (3.0, 2.0, 40.0, 4.0)
    assert len(result.warnings) == 4  # nose, ear, clamp, corner order


def test_keypoint_answer_cut_right_after_the_fence_is_truncated():
    result = parse_output("```json\n", "keypoint", 9, 9)
    assert result.truncated and result.predictions == [] and result.warnings
    assert not parse_output("No people.", "keypoint", 9, 9).truncated


def test_keypoint_labels_and_braces_inside_strings():
    text = (
        'Here: {"left_hand_2": {"bbox": "<1><1><2><2>", "keypoints": {"x}{": null}},'
        ' "7": {"bbox": "<1><1><2><2>", "keypoints": {}}} trailing }'
    )
    result = parse_output(text, "keypoint", 999, 999)
    assert [p.label for p in result.predictions] == ["left_hand", "keypoint_instance"]
    assert not result.truncated


# Never raises ----------------------------------------------------------------

TOKENS = [
    ORS,
    ORE,
    BS,
    BE,
    "<|im_end|>",
    "<|endoftext|>",
    ",",
    ", ",
    " ",
    "\n",
    "None",
    "person",
    "<0>",
    "<999>",
    "<1000>",
    "<12>",
    "<-3>",
    "<",
    ">",
    "{",
    "}",
    "[",
    "]",
    '"',
    ":",
    "```json\n",
    "```",
    '"bbox": ',
    '"keypoints": ',
    '"person1": ',
    '" <1> <2> "',
    '"unvisible"',
    "null",
    "\\",
    "5",
]

grammar_text = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)


def _well_formed_boxes(draw_values):
    return ", ".join(
        group(f"p{i}", ",".join("".join(f"<{v}>" for v in item) for item in items))
        for i, items in enumerate(draw_values)
    )


cut_text = st.builds(
    lambda values, cut: _well_formed_boxes(values)[:cut],
    st.lists(
        st.lists(st.lists(st.integers(0, 1200), min_size=1, max_size=9), max_size=4),
        max_size=4,
    ),
    st.integers(0, 400),
)

ALL_TASKS = [None, *Task]


@settings(max_examples=300)
@given(st.one_of(st.text(), grammar_text, cut_text), st.sampled_from(ALL_TASKS))
def test_no_text_makes_the_parser_raise(text, task):
    result = parse_output(text, task, 640, 480, category="word")
    for prediction in result.predictions:
        assert Prediction.from_dict(prediction.to_dict()) == prediction
        start, end = prediction.span
        assert 0 <= start < end <= len(text)
        x0, y0, x1, y1 = prediction.bbox
        assert 0 <= x0 <= x1 <= 640 and 0 <= y0 <= y1 <= 480


# The fast path and the checking path agree -----------------------------------

bins = st.integers(0, 999).map(str) | st.sampled_from(["0999", "1000", "007", "5000"])
items = st.lists(bins, min_size=1, max_size=10)


@settings(max_examples=200)
@given(
    st.lists(st.lists(items, min_size=1, max_size=5), min_size=1, max_size=4),
    st.sampled_from(ALL_TASKS),
)
def test_fast_path_and_checking_path_agree(groups, task):
    """``<1><2>`` items take the fast path; the same items with two spaces
    between tokens take the checking path: same predictions, same warnings."""

    def answer(separator: str) -> str:
        return ", ".join(
            group(f"p{i}", ",".join(separator.join(f"<{b}>" for b in it) for it in its))
            for i, its in enumerate(groups)
        )

    fast = parse_output(answer(""), task, 640, 480, category="word")
    slow = parse_output(answer("  "), task, 640, 480, category="word")
    assert [(p.type, p.label, p.text, p.coords) for p in fast.predictions] == [
        (p.type, p.label, p.text, p.coords) for p in slow.predictions
    ]
    assert len(fast.warnings) == len(slow.warnings)


phrase_text = st.text(st.characters(exclude_characters="<|"), max_size=8)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(phrase_text, st.lists(items, max_size=3) | st.just(None)),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([", ", ",", " , ", ",\n"]),
    st.sampled_from(ALL_TASKS),
)
def test_plain_group_path_and_careful_scanner_agree(groups, separator, task):
    """A trailing ``<`` sends an answer to the careful scanner: same result."""
    text = separator.join(
        group(
            phrase,
            "None"
            if its is None
            else ",".join("".join(f"<{b}>" for b in it) for it in its),
        )
        for phrase, its in groups
    )
    fast = parse_output(text, task, 640, 480, category="word")
    careful = parse_output(text + "<", task, 640, 480, category="word")
    assert fast.predictions == careful.predictions
    assert [p.span for p in fast.predictions] == [p.span for p in careful.predictions]
    assert fast.warnings == careful.warnings
    assert fast.truncated == careful.truncated


@pytest.mark.parametrize("task", ["detection", "keypoint", "ocr_box"])
def test_a_coordinate_token_of_thousands_of_digits_is_malformed_not_a_crash(task):
    """int() of more than 4300 digits raises: a server's answer stopped parsing."""
    huge = "<" + "9" * 5000 + ">"
    joints = f'"keypoints": {{"nose": "{huge}<1>"}}'
    text = (
        f"<|object_ref_start|>car<|object_ref_end|><|box_start|>{huge}<1><2><3>,"
        f"<1><2><3><4><|box_end|>"
        f'{{"car1": {{"bbox": "{huge}<1><2><3>", {joints}}}}}'
    )
    result = parse_output(text, task=task, width=100, height=100)
    assert any(
        word in w for w in result.warnings for word in ("malformed", "not 4 bins")
    )
