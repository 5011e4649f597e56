"""Training examples of the README model (worker.training.readme_tasks): each
answer says exactly what the scene shows, in the model's grammar."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest
from PIL import Image

from converters.parser import parse_output
from converters.prediction import RegionType
from converters.tasks import Task
from worker.training import readme_tasks
from worker.training.objects import OBJECT_WORDS
from worker.training.readme_tasks import (
    add_position_code,
    ask_words,
    detection_answer,
    detection_example,
    keypoint_example,
    keypoint_truth,
    readme_examples,
    render_scene,
    visual_prompt_example,
)
from worker.training.synthetic import IMAGE_SIZE

BIN_PX = IMAGE_SIZE / 999 + 1e-6
"""A coordinate survives the answer's bins to within one bin."""


def _close(a, b) -> bool:
    return all(abs(u - v) <= BIN_PX for u, v in zip(a, b, strict=True))


def test_a_detection_answer_lists_the_asked_words_only_in_asked_order() -> None:
    rng = random.Random(3)
    scene = render_scene(rng, ["car", "person", "dog"], [(20, 24)] * 3)
    asked = ["dog", "bottle", "car"]
    answer = detection_answer(scene, asked)
    result = parse_output(answer, Task.DETECTION, IMAGE_SIZE, IMAGE_SIZE)
    assert [p.label for p in result.predictions] == ["dog", "car"]
    truth = {o.word: o.box for o in scene.objects}
    for prediction in result.predictions:
        assert _close(prediction.coords, truth[prediction.label])
    assert "person" not in answer
    assert "<|object_ref_start|>bottle<|object_ref_end|><|box_start|>None" in answer


def test_asked_words_are_distinct_and_mix_present_and_absent() -> None:
    rng = random.Random(0)
    mixes = set()
    for _ in range(300):
        scene = render_scene(rng, rng.sample(OBJECT_WORDS, 2), [(20, 24)] * 2)
        asked = ask_words(rng, scene, 3)
        assert len(asked) == len(set(asked)) == 3
        present = {o.word for o in scene.objects}
        mixes.add(sum(word in present for word in asked))
    assert mixes == {0, 1, 2}


def test_detection_examples_ask_one_to_three_phrases() -> None:
    rng = random.Random(1)
    counts = set()
    for _ in range(200):
        example = detection_example(rng)
        asked = example.prompt.removeprefix("Detect ").split(". Output")[0]
        counts.add(len(asked.split(", ")))
    assert counts == {1, 2, 3}


def test_a_visual_prompt_is_one_object_and_the_answer_holds_all_of_its_kind() -> None:
    example = visual_prompt_example(random.Random(5))
    result = parse_output(example.answer, Task.VISUAL_PROMPTING, IMAGE_SIZE, IMAGE_SIZE)
    assert 2 <= len(result.predictions) <= 3
    assert {p.label for p in result.predictions} == {"object_1"}
    (reference,) = re.findall(r'\["((?:<\d+>){4})"\]', example.prompt)
    bins = [int(v) for v in re.findall(r"<(\d+)>", reference)]
    answered = [
        [int(v) for v in re.findall(r"<(\d+)>", box)]
        for box in re.findall(r"(?:<\d+>){4}", example.answer)
    ]
    assert any(
        all(abs(a - b) <= 1 for a, b in zip(bins, box, strict=True)) for box in answered
    ), (bins, answered)


def test_a_keypoint_answer_holds_every_person_with_its_joints() -> None:
    rng = random.Random(2)
    example = keypoint_example(rng)
    result = parse_output(example.answer, Task.KEYPOINT, IMAGE_SIZE, IMAGE_SIZE)
    assert result.predictions
    for person in result.predictions:
        assert person.type is RegionType.KEYPOINT and person.label == "person"
        assert len(person.keypoints) == 17 and None not in person.keypoints.values()


def test_keypoint_truth_lists_people_left_to_right() -> None:
    scene = render_scene(random.Random(4), ["person", "person", "cat"], [(40, 50)] * 3)
    people = keypoint_truth(scene)
    assert len(people) == 2
    assert people[0].coords[0] < people[1].coords[0]


def test_the_stream_gives_one_task_per_batch_of_the_trained_tasks() -> None:
    def start(example) -> str:
        return example.prompt.split(" ")[0]

    rng = random.Random(0)
    start_of = {task: start(make(rng)) for task, make in readme_tasks._MAKERS.items()}
    stream = readme_examples(batch_size=4, seed=0)
    kinds = []
    for _ in range(30):
        starts = {start(next(stream)) for _ in range(4)}
        assert len(starts) == 1, starts
        kinds.append(starts.pop())
    assert set(kinds) == {start_of[task] for task in readme_tasks.TASK_SHARES}
    assert start_of[Task.KEYPOINT] not in kinds  # measured too costly to train


def test_the_position_code_grows_red_to_the_right_and_green_downwards() -> None:
    coded = np.asarray(add_position_code(Image.new("RGB", (112, 112), (100,) * 3)))
    amplitude = readme_tasks.POSITION_CODE
    assert coded[50, 0, 0] == 100 - amplitude and coded[50, -1, 0] == 100 + amplitude
    assert coded[0, 50, 1] == 100 - amplitude and coded[-1, 50, 1] == 100 + amplitude
    assert (coded[..., 2] == 100).all()


def test_a_scene_that_cannot_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        render_scene(random.Random(0), ["person"] * 12, [(100, 110)] * 12)


def test_a_present_word_stands_in_any_slot_of_the_prompt() -> None:
    """Filled slot by slot, present words came first and the model learnt
    that later phrases answer None: the order is shuffled."""
    rng = random.Random(6)
    slots = [0, 0, 0]
    for _ in range(300):
        scene = render_scene(rng, ["cat"], [(20, 24)])
        asked = ask_words(rng, scene, 3)
        if "cat" in asked:
            slots[asked.index("cat")] += 1
    assert min(slots) > 0.2 * sum(slots), slots
