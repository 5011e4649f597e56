import json

import pytest

from converters.keypoint_sets import HAND
from converters.prompts import (
    PROMPT_TEMPLATES,
    SYSTEM_PROMPT,
    build_messages,
    build_prompt,
)
from converters.tasks import Task
from tests.converters.conftest import vector_params


def _call(vector):
    return build_prompt(
        vector["task"],
        vector["categories"],
        keypoint_type=vector["keypoint_type"],
        visual_prompt_boxes=vector["visual_prompt_boxes"],
        image_size=vector["image_size"],
    )


@pytest.mark.parametrize("vector", vector_params("prompt_vectors"))
def test_prompt_vectors(vector):
    raises = vector.get("raises")
    if raises is None:
        assert _call(vector) == vector["prompt"]
        return
    # "ValueError: message" names the exact message; "ValueError (why)" only the type.
    kind, _, rest = raises.partition(":")
    kind = kind.split(" ")[0]
    assert kind == "ValueError"
    with pytest.raises(ValueError) as info:
        _call(vector)
    if rest and not raises.startswith(f"{kind} ("):
        assert rest.strip() in str(info.value)


def test_every_task_has_a_template():
    assert set(PROMPT_TEMPLATES) == set(Task)


def test_hand_keypoint_prompt_lists_the_21_joints_in_order():
    prompt = build_prompt("keypoint", ["hand"], keypoint_type="hand")
    listed = prompt.split("coordinates of its ", 1)[1].split(" as [x0, y0]?")[0]
    assert listed.split(", ") == list(HAND.joints)
    assert len(HAND.joints) == 21
    assert listed.startswith("wrist, thumb root, thumb's third knuckle")


def test_task_name_is_case_insensitive_and_bare_string_is_used_as_is():
    assert build_prompt("POINTING", "a, b") == "Point to a, b."


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "pointing", "categories": []}, "empty list"),
        ({"task": "pointing", "categories": "  "}, "empty string"),
        ({"task": "pointing", "categories": ["a", ""]}, "category 1"),
        ({"task": "pointing", "categories": ["a", 3]}, "category 1"),
        (
            {"task": "keypoint", "categories": ["cat"], "keypoint_type": "bird"},
            "Unknown keypoint type 'bird'",
        ),
        (
            {
                "task": "visual_prompting",
                "categories": None,
                "visual_prompt_boxes": [[1, 2, 3, 4]],
            },
            "image_size",
        ),
        (
            {
                "task": "visual_prompting",
                "categories": None,
                "visual_prompt_boxes": [],
                "image_size": (10, 10),
            },
            "boxes are required",
        ),
        (
            {
                "task": "visual_prompting",
                "categories": None,
                "visual_prompt_boxes": [[1, 2, 3]],
                "image_size": (10, 10),
            },
            "visual prompt box 0",
        ),
        (
            {
                "task": "visual_prompting",
                "categories": None,
                "visual_prompt_boxes": [[1, 2, 3, 4]],
                "image_size": (0, 10),
            },
            "image_size",
        ),
        ({"task": "segment", "categories": ["a"]}, "Unknown task"),
    ],
)
def test_bad_input_names_what_is_wrong(kwargs, message):
    task = kwargs.pop("task")
    categories = kwargs.pop("categories")
    with pytest.raises(ValueError, match=message):
        build_prompt(task, categories, **kwargs)


def test_visual_prompt_is_json_with_default_separators():
    prompt = build_prompt(
        "visual_prompting",
        None,
        visual_prompt_boxes=[(0, 0, 50, 50), (50, 50, 100, 100)],
        image_size=(100, 100),
    )
    blob = prompt.removeprefix("Given reference boxes ").split(" indicating")[0]
    expected = ["<0><0><499><499>", "<499><499><999><999>"]
    assert json.loads(blob) == {"object_1": expected}
    assert '", "' in blob and '": ["' in blob


def test_build_messages_image_first_then_text():
    messages = build_messages("Point to cats.", "IMAGE")
    assert messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": "IMAGE"},
                {"type": "text", "text": "Point to cats."},
            ],
        },
    ]
    assert SYSTEM_PROMPT == "You are a helpful assistant"
    json.dumps(messages)  # plain data when the image is a URL
    with pytest.raises(ValueError, match="prompt"):
        build_messages("", "IMAGE")
    with pytest.raises(ValueError, match="image"):
        build_messages("Point to cats.", None)
