import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from converters.answer import format_answer
from converters.geometry import pixel_to_bin
from converters.grammar import GRAMMAR_TOKENS, MAX_BIN
from converters.parser import parse_output
from converters.prediction import Prediction, RegionType
from converters.tasks import BOX_TASKS, OCR_TASKS, POINT_TASKS, Task

ORS, ORE = "<|object_ref_start|>", "<|object_ref_end|>"
BS, BE = "<|box_start|>", "<|box_end|>"


def test_detection_answer_is_the_training_grammar():
    predictions = [
        Prediction("box", "cat", (100, 20, 300, 40)),
        Prediction("box", "dog", (0, 0, 999, 999)),
        Prediction("box", "cat", (10, 20, 30, 40)),
    ]
    answer = format_answer(
        "detection", predictions, 999, 999, categories=["bird", "cat"]
    )
    assert answer == (
        f"{ORS}bird{ORE}{BS}None{BE}, "
        f"{ORS}cat{ORE}{BS}<10><20><30><40>,<100><20><300><40>{BE}, "
        f"{ORS}dog{ORE}{BS}<0><0><999><999>{BE}"
    )
    assert not answer.endswith("<|im_end|>")
    unsorted = format_answer("detection", predictions, 999, 999, sort_by_x0=False)
    assert "<100><20><300><40>,<10><20><30><40>" in unsorted


def test_none_groups_parse_back_to_nothing_without_warnings():
    answer = format_answer("pointing", [], 640, 480, categories=["a", "b", "a"])
    assert answer == f"{ORS}a{ORE}{BS}None{BE}, {ORS}b{ORE}{BS}None{BE}"
    result = parse_output(answer, "pointing", 640, 480)
    assert result.predictions == [] and result.warnings == []
    assert format_answer("detection", [], 640, 480) == ""


def test_ocr_answer_is_one_group_per_text_in_reading_order():
    predictions = [
        Prediction("polygon", "word", ((1, 2), (10, 2), (10, 5)), text="Hi"),
        Prediction("box", "word", (1, 2, 10, 5), text="Hi"),
    ]
    answer = format_answer("ocr_polygon", predictions, 999, 999)
    assert answer == (
        f"{ORS}Hi{ORE}{BS}<1><2><10><2><10><5>{BE}, "
        f"{ORS}Hi{ORE}{BS}<1><2><10><2><10><5><1><5>{BE}"
    )
    with pytest.raises(ValueError, match="prediction 0 is a polygon"):
        format_answer("ocr_box", predictions, 999, 999)
    with pytest.raises(ValueError, match="no text"):
        format_answer("ocr_box", [Prediction("box", "word", (1, 2, 3, 4))], 9, 9)


def test_keypoint_answer_is_fenced_json_with_spaced_bins():
    person = Prediction(
        "keypoint",
        "person",
        (0, 0, 740, 494),
        keypoints={"nose": (400, 173.6), "right eye": None},
        instance_id="person1",
    )
    answer = format_answer("keypoint", [person, person], 740, 494)
    assert answer.startswith("```json\n{\n") and answer.endswith("}\n```")
    body = json.loads(answer.removeprefix("```json\n").removesuffix("\n```"))
    assert body == {
        "person1": {
            "bbox": " <0> <0> <999> <999> ",
            "keypoints": {"nose": " <540> <351> ", "right eye": "unvisible"},
        },
        "person2": {
            "bbox": " <0> <0> <999> <999> ",
            "keypoints": {"nose": " <540> <351> ", "right eye": "unvisible"},
        },
    }
    parsed = parse_output(answer, "keypoint", 740, 494)
    assert [p.instance_id for p in parsed.predictions] == ["person1", "person2"]
    assert parsed.predictions[0].keypoints["right eye"] is None


def test_tiny_boxes_stay_one_bin_wide_so_they_survive_parsing():
    answer = format_answer("detection", [Prediction("box", "a", (5, 5, 5, 5))], 9, 9)
    assert answer == f"{ORS}a{ORE}{BS}<555><555><556><556>{BE}"
    edge = format_answer("detection", [Prediction("box", "a", (9, 9, 9, 9))], 9, 9)
    assert "<998><998><999><999>" in edge


@pytest.mark.parametrize(
    ("task", "prediction", "message"),
    [
        ("detection", Prediction("point", "a", (1, 2)), "prediction 0 is a point"),
        ("pointing", Prediction("box", "a", (1, 2, 3, 4)), "takes points"),
        ("keypoint", Prediction("box", "a", (1, 2, 3, 4)), "keypoint instances"),
        ("detection", Prediction("box", "a<|box_end|>", (1, 2, 3, 4)), "special"),
        ("detection", Prediction("box", " ", (1, 2, 3, 4)), "label"),
        ("ocr_box", Prediction("box", "w", (1, 2, 3, 4), text="<|im_end|>"), "text"),
        (
            "keypoint",
            Prediction("keypoint", "a", (1, 2, 3, 4), keypoints={"x```": None}),
            "joint name",
        ),
    ],
)
def test_predictions_that_do_not_fit_are_named(task, prediction, message):
    with pytest.raises(ValueError, match=message):
        format_answer(task, [prediction], 10, 10)


def test_bad_sizes_and_objects_are_rejected():
    with pytest.raises(ValueError, match="width"):
        format_answer("detection", [], 0, 10)
    with pytest.raises(ValueError, match="prediction 0 must be a Prediction"):
        format_answer("detection", [{"type": "box"}], 10, 10)


# Round trip: parse_output(format_answer(x)) == x within one bin --------------


def _no_special_tokens(text: str) -> bool:
    return not any(token in text for token in GRAMMAR_TOKENS)


def _json_safe(text: str) -> bool:
    return _no_special_tokens(text) and "```" not in text


phrases = (
    st.text(min_size=1, max_size=20)
    .map(str.strip)
    .filter(lambda s: s and _no_special_tokens(s))
)
ocr_texts = st.text(max_size=20).map(str.strip).filter(_no_special_tokens)
word_labels = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1),
    min_size=1,
    max_size=3,
).map(" ".join)
sizes = st.tuples(
    st.integers(1, 4000) | st.floats(1, 4000), st.integers(1, 4000) | st.floats(1, 4000)
)


@st.composite
def coordinate(draw, size):
    return draw(st.floats(0, size, allow_nan=False))


@st.composite
def box(draw, width, height):
    xs = sorted([draw(coordinate(width)), draw(coordinate(width))])
    ys = sorted([draw(coordinate(height)), draw(coordinate(height))])
    return (xs[0], ys[0], xs[1], ys[1])


@st.composite
def scene(draw, task):
    width, height = draw(sizes)
    count = draw(st.integers(0, 6))
    predictions = []
    for _ in range(count):
        if task is Task.KEYPOINT:
            joints = draw(
                st.dictionaries(
                    st.text(max_size=12).filter(_json_safe),
                    st.none() | st.tuples(coordinate(width), coordinate(height)),
                    max_size=5,
                )
            )
            label = draw(word_labels)
            instance_id = draw(
                st.none() | st.integers(1, 5).map(lambda n, lab=label: f"{lab}{n}")
            )
            predictions.append(
                Prediction(
                    "keypoint",
                    label,
                    draw(box(width, height)),
                    keypoints=joints,
                    instance_id=instance_id,
                )
            )
        elif task in POINT_TASKS:
            point = (draw(coordinate(width)), draw(coordinate(height)))
            predictions.append(Prediction("point", draw(phrases), point))
        elif task is Task.OCR_POLYGON:
            vertices = draw(
                st.lists(
                    st.tuples(coordinate(width), coordinate(height)),
                    min_size=3,
                    max_size=8,
                )
            )
            predictions.append(
                Prediction("polygon", "text line", vertices, text=draw(ocr_texts))
            )
        elif task in OCR_TASKS:
            predictions.append(
                Prediction(
                    "box", "word", draw(box(width, height)), text=draw(ocr_texts)
                )
            )
        else:
            predictions.append(
                Prediction("box", draw(phrases), draw(box(width, height)))
            )
    return width, height, predictions


def _answer_order(task, predictions, width):
    """The order format_answer writes: by phrase, then by x0 bin."""
    if task in OCR_TASKS or task is Task.KEYPOINT:
        return predictions
    by_label = {}
    for p in predictions:
        by_label.setdefault(p.label.strip(), []).append(p)
    return [
        p
        for group in by_label.values()
        for p in sorted(group, key=lambda p: pixel_to_bin(p.bbox[0], width))
    ]


def _near(got, want, size):
    """Within one bin (size/999 px) of the original."""
    return abs(got - want) <= size / MAX_BIN + 1e-9


def _assert_same_geometry(got, want, width, height):
    if want.type is RegionType.POLYGON:
        pairs = list(zip(got.coords, want.coords, strict=True))
        assert all(
            _near(g[0], w[0], width) and _near(g[1], w[1], height) for g, w in pairs
        )
        return
    scales = (width, height) * (2 if len(want.coords) == 4 else 1)
    assert all(
        _near(g, w, s) for g, w, s in zip(got.coords, want.coords, scales, strict=True)
    ), (got.coords, want.coords)


@settings(max_examples=40, deadline=None)
@given(st.data())
@pytest.mark.parametrize("task", list(Task))
def test_round_trip_for_every_task(task, data):
    width, height, predictions = data.draw(scene(task))
    category = "word" if task is Task.OCR_BOX else "text line"
    answer = format_answer(task, predictions, width, height)
    result = parse_output(answer, task, width, height, category=category)
    assert result.warnings == [] and not result.truncated
    expected = _answer_order(task, predictions, width)
    assert len(result.predictions) == len(expected)
    for got, want in zip(result.predictions, expected, strict=True):
        assert got.type is want.type
        _assert_same_geometry(got, want, width, height)
        if task in OCR_TASKS:
            assert (got.label, got.text) == (want.label, want.text)
        else:
            assert got.label == want.label.strip()
        if task is Task.KEYPOINT:
            assert list(got.keypoints) == list(want.keypoints)
            for name, point in want.keypoints.items():
                if point is None:
                    assert got.keypoints[name] is None
                else:
                    assert _near(got.keypoints[name][0], point[0], width)
                    assert _near(got.keypoints[name][1], point[1], height)
    if task is Task.KEYPOINT:
        ids = [p.instance_id for p in result.predictions]
        assert len(set(ids)) == len(ids)
        wanted = [p.instance_id for p in predictions]
        if None not in wanted and len(set(wanted)) == len(wanted):
            assert ids == wanted


@settings(max_examples=25, deadline=None)
@given(st.data())
@pytest.mark.parametrize("task", sorted(BOX_TASKS - OCR_TASKS))
def test_round_trip_survives_vllm_style_spacing(task, data):
    width, height, predictions = data.draw(scene(task))
    answer = format_answer(task, predictions, width, height)
    spaced = answer.replace("><", "> <").replace(",", " , ")
    plain = parse_output(answer, task, width, height)
    again = parse_output(spaced, task, width, height)
    assert [p.coords for p in again.predictions] == [
        p.coords for p in plain.predictions
    ]
