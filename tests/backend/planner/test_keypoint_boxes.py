"""Keypoint instances boxed by a RectangleLabels of their category."""

from __future__ import annotations

import pytest

from backend.planner import plan_config
from converters.tasks import Task
from tests.backend.planner.helpers import PERSON_BOX, POSE, RECT, view


def test_keypoint_instances_get_their_box_from_a_rectangle_of_that_category() -> None:
    plan = plan_config(view(PERSON_BOX, POSE))
    # The rectangle's only label comes with the instances: no detection call.
    (kp,) = plan.controls
    assert kp.control == "kp"
    assert kp.call.task is Task.KEYPOINT
    assert kp.box_control == "box"
    assert kp.box_map.resolve("person") == "Person"
    assert any("RectangleLabels 'box': Person boxes" in n for n in plan.notes)
    (job,) = plan.image_jobs({"id": 3, "data": {"image": "a.jpg"}})
    assert [c.key for c in job.calls] == ["kp"]


def test_box_rectangle_still_detects_its_other_labels() -> None:
    rect = RECT.replace(
        '<Label value="Person"/>', '<Label value="Person" predicted_values="man"/>'
    )
    plan = plan_config(view(rect, POSE))
    assert plan.control("kp").box_control == "label"
    rect_plan = plan.control("label")
    assert rect_plan.call.task is Task.DETECTION
    # "man" is an alias of the Person label, which the keypoint instances get.
    assert rect_plan.call.categories == ["car", "truck"]
    assert rect_plan.label_map.labels == ["Car"]


def test_only_the_phrases_naming_an_instance_category_stop_being_detected() -> None:
    animal = '<Label value="nose"/><Label value="neck"/><Label value="root of tail"/>'
    plan = plan_config(
        view(
            '<RectangleLabels name="box" toName="image">'
            '<Label value="Animal" predicted_values="cat,dog"/></RectangleLabels>',
            f'<KeyPointLabels name="kp" toName="image" rex_categories="cat">'
            f"{animal}</KeyPointLabels>",
        )
    )
    assert plan.control("kp").box_map.resolve("cat") == "Animal"
    assert plan.control("box").call.categories == ["dog"]


@pytest.mark.parametrize(
    "rect",
    [
        # No label for the category.
        RECT.replace('<Label value="Person"/>', ""),
        # A RectangleLabels out of pre-annotation does not get boxes either.
        PERSON_BOX.replace('toName="image"', 'toName="image" rex_skip="true"'),
        # Another image.
        PERSON_BOX.replace('toName="image"', 'toName="other"'),
    ],
    ids=["no-label", "rex-skip", "other-image"],
)
def test_keypoints_without_a_box_rectangle_are_unchanged(rect: str) -> None:
    config = view(rect, POSE).replace(
        "</View>", '<Image name="other" value="$other"/></View>'
    )
    plan = plan_config(config)
    kp = plan.control("kp")
    assert kp.box_control is None and kp.box_map is None
    assert kp.call.categories == ["person"]
    for control in plan.controls:
        if control.tag == "RectangleLabels":
            assert control.call.categories in (["car", "truck"], ["Person"])


# Animal keypoints with a species box (issue 11 point 3) ---------------------------
ANIMAL_JOINTS = "".join(
    f'<Label value="{j.title()}"/>' for j in ("left eye", "nose", "root of tail")
)


ANIMAL_POSE = (
    f'<KeyPointLabels name="kp" toName="image">{ANIMAL_JOINTS}</KeyPointLabels>'
)


def test_animal_keypoints_ask_for_the_species_of_a_rectangle() -> None:
    species = (
        '<RectangleLabels name="box" toName="image"><Label value="Person"/>'
        '<Label value="Cat"/><Label value="Dog" predicted_values="dog,puppy"/>'
        "</RectangleLabels>"
    )
    plan = plan_config(view(species, ANIMAL_POSE))
    kp = plan.control("kp")
    assert kp.call.keypoint_type == "animal"
    assert kp.call.categories == ["Cat", "dog", "puppy"]
    assert kp.box_control == "box"
    assert kp.box_map.resolve("puppy") == "Dog"
    assert kp.box_map.resolve("cat") == "Cat"
    # The people are still detected; the animals come with their joints.
    assert plan.control("box").call.categories == ["Person"]


def test_animal_keypoints_skip_a_rectangle_of_people_only() -> None:
    people = PERSON_BOX.replace('name="box"', 'name="people"')
    animals = (
        '<RectangleLabels name="pets" toName="image"><Label value="Horse"/>'
        "</RectangleLabels>"
    )
    plan = plan_config(view(people, animals, ANIMAL_POSE))
    kp = plan.control("kp")
    assert (kp.box_control, kp.call.categories) == ("pets", ["Horse"])
    assert plan.control("people").call.categories == ["Person"]
    alone = plan_config(view(PERSON_BOX, ANIMAL_POSE)).control("kp")
    assert (alone.box_control, alone.call.categories) == (None, ["animal"])


def test_animal_rex_categories_still_choose_the_species() -> None:
    rect = (
        '<RectangleLabels name="box" toName="image"><Label value="cat"/>'
        '<Label value="dog"/></RectangleLabels>'
    )
    kp = ANIMAL_POSE.replace('name="kp"', 'name="kp" rex_categories="dog"')
    plan = plan_config(view(rect, kp))
    assert plan.control("kp").call.categories == ["dog"]
    assert plan.control("box").call.categories == ["cat"]
