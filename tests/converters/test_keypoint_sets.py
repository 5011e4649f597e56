import pytest

from converters.keypoint_sets import (
    ANIMAL,
    HAND,
    PERSON,
    get_keypoint_set,
    guess_keypoint_set,
    joint_key,
)


def test_sets_have_the_documented_sizes_and_valid_edges():
    assert (len(PERSON.joints), len(ANIMAL.joints), len(HAND.joints)) == (17, 17, 21)
    for kp_set in (PERSON, ANIMAL, HAND):
        assert len(set(kp_set.joints)) == len(kp_set.joints)
        for a, b in kp_set.skeleton:
            assert a in kp_set.joints and b in kp_set.joints


def test_hand_joint_names_and_chain():
    assert HAND.joints[:5] == (
        "wrist",
        "thumb root",
        "thumb's third knuckle",
        "thumb's second knuckle",
        "thumb's first knuckle",
    )
    assert HAND.joints[5] == "forefinger's root"
    assert HAND.joints[-1] == "pinky finger's first knuckle"
    assert ("wrist", "middle finger's root") in HAND.skeleton
    assert len(HAND.skeleton) == 20


def test_coco_skeleton_indices_are_one_based():
    assert PERSON.skeleton_indices()[0] == [1, 2]
    assert ANIMAL.skeleton_indices(base=0)[-1] == [3, 4]


def test_lookup_and_guess():
    assert get_keypoint_set("Hand") is HAND
    with pytest.raises(ValueError, match="person, animal, hand"):
        get_keypoint_set("dog")
    assert guess_keypoint_set(["wrist", "thumb root"]) is HAND
    assert guess_keypoint_set(["root of tail", "left front paw"]) is ANIMAL
    assert guess_keypoint_set(["nose", "left ankle"]) is PERSON
    assert guess_keypoint_set(["Car", "Bus"]) is None
    assert guess_keypoint_set([]) is None


@pytest.mark.parametrize(
    "spelling", ["left_eye", "Left Eye", "left-eye", " LEFT  EYE "]
)
def test_joint_spellings_match_exactly_after_normalisation(spelling):
    assert joint_key(spelling) == "left eye"
    assert PERSON.joint_for(spelling) == "left eye"
    assert guess_keypoint_set([spelling, "Right_Knee"]) is PERSON
    assert ANIMAL.joint_for("Left_Front_Paw") == "left front paw"
    assert HAND.joint_for("Ring-Finger's Root") == "ring finger's root"


def test_a_look_alike_is_no_joint():
    assert PERSON.joint_for("left knee") == "left knee"
    assert PERSON.joint_for("left kne") is None  # never fuzzy
    assert HAND.joint_for("ring finger root") is None
