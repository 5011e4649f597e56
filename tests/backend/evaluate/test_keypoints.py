import pytest

from backend.evaluate.keypoints import PCK_RATIO, KeypointAccuracy, pck_limit
from converters.prediction import Prediction, RegionType
from tests.backend.evaluate.helpers import box, pair

PERSON_BOX = (0, 0, 100, 50)  # longer side 100 px: a joint may be 10 px off


def instance(label, coords, joints, score=None):
    return Prediction(RegionType.KEYPOINT, label, coords, score=score, keypoints=joints)


def person(joints, coords=PERSON_BOX, score=None):
    return instance("person", coords, joints, score)


def shifted(joints, dx, dy):
    return {
        n: None if xy is None else (xy[0] + dx, xy[1] + dy) for n, xy in joints.items()
    }


JOINTS = {"nose": (50, 10), "left eye": (45, 8), "right eye": (55, 8)}


def accuracy(*pairs):
    acc = KeypointAccuracy()
    for p in pairs:
        acc.add(p)
    return acc


def test_the_limit_is_a_tenth_of_the_longer_box_side():
    assert PCK_RATIO == 0.1
    assert pck_limit(person({}, (0, 0, 100, 50))) == pytest.approx(10.0)
    assert pck_limit(person({}, (10, 20, 40, 80))) == pytest.approx(6.0)  # 30 x 60


def test_a_perfect_prediction_has_pck_one():
    acc = accuracy(pair([person(JOINTS)], [person(JOINTS, score=0.9)]))
    assert acc.overall() == {"pck": 1.0, "instances": 1, "matched": 1, "unmatched": 0}
    assert acc.per_label() == {
        "person": {
            "pck": 1.0,
            "instances": 1,
            "matched": 1,
            "unmatched": 0,
            "joints": {"nose": 1.0, "left eye": 1.0, "right eye": 1.0},
        }
    }


def test_a_joint_exactly_at_the_limit_is_correct_and_just_beyond_is_wrong():
    guess = dict(JOINTS)
    guess["nose"] = (50 + 6, 10 + 8)  # 3-4-5: exactly 10 px away
    guess["left eye"] = (45, 8 + 10.01)  # 10.01 px away
    acc = accuracy(pair([person(JOINTS)], [person(guess)]))
    joints = acc.per_label()["person"]["joints"]
    assert joints == {"nose": 1.0, "left eye": 0.0, "right eye": 1.0}
    assert acc.overall()["pck"] == pytest.approx(2 / 3)


def test_the_longer_side_counts_for_a_tall_box_too():
    tall = (0, 0, 50, 100)  # a 10 px shift is within 0.1 x 100, not 0.1 x 50
    acc = accuracy(pair([person(JOINTS, tall)], [person(shifted(JOINTS, 10, 0), tall)]))
    assert acc.overall()["pck"] == 1.0


def test_a_missing_joint_is_wrong_and_a_hidden_ground_truth_joint_does_not_count():
    truth = {**JOINTS, "left ear": (40, 10), "right ear": None}
    guess = {
        "nose": (50, 10),
        "left eye": None,  # predicted as not visible: wrong
        # "right eye" missing altogether: wrong
        "left ear": (40, 10),
        "right ear": (0, 0),  # hidden in the ground truth: not scored
    }
    acc = accuracy(pair([person(truth)], [person(guess)]))
    label = acc.per_label()["person"]
    assert label["pck"] == pytest.approx(2 / 4)
    assert label["joints"] == {
        "nose": 1.0,
        "left eye": 0.0,
        "right eye": 0.0,
        "left ear": 1.0,
        "right ear": None,
    }


def test_joint_names_match_by_their_key_and_show_as_the_ground_truth_spells_them():
    acc = accuracy(
        pair([person({"left_eye": (45, 8)})], [person({"Left Eye": (45, 8)})])
    )
    assert acc.per_label()["person"]["joints"] == {"left_eye": 1.0}


def test_two_labels_each_and_pooled_over_all_joints():
    hand_box = (200, 200, 240, 220)  # longer side 40: 4 px allowed
    hand = {
        "wrist": (210, 210),
        "thumb root": (215, 212),
        "pinky finger's root": (230, 212),
    }
    guess_hand = shifted(hand, 3, 0)  # all within 4 px
    guess_person = {**JOINTS, "nose": (70, 10)}  # 20 px off
    acc = accuracy(
        pair(
            [person(JOINTS), instance("hand", hand_box, hand)],
            [person(guess_person), instance("hand", hand_box, guess_hand)],
            width=300,
            height=300,
        )
    )
    labels = acc.per_label()
    assert labels["person"]["pck"] == pytest.approx(2 / 3)
    assert labels["hand"]["pck"] == 1.0
    assert acc.overall() == {
        "pck": pytest.approx(5 / 6),
        "instances": 2,
        "matched": 2,
        "unmatched": 0,
    }


def test_unmatched_instances_are_counted_and_left_out_of_pck():
    second = (0, 60, 100, 100)
    far = {"nose": (50, 70)}
    acc = accuracy(
        pair([person(JOINTS), person(far, second)], [person(JOINTS)], key="a"),
        # box IoU 2500 / 7500 = 1/3 < 0.5: no match although the joints agree
        pair([person(JOINTS)], [person(JOINTS, (50, 0, 150, 50))], key="b", width=200),
    )
    assert acc.overall() == {"pck": 1.0, "instances": 3, "matched": 1, "unmatched": 2}
    assert acc.per_label()["person"]["joints"] == {
        "nose": 1.0,
        "left eye": 1.0,
        "right eye": 1.0,
    }


def test_the_higher_scored_prediction_takes_the_instance():
    good = person(JOINTS, score=0.4)
    bad = person(shifted(JOINTS, 0, 20), score=0.9)  # 20 px off
    acc = accuracy(pair([person(JOINTS)], [good, bad]))
    assert acc.overall() == {"pck": 0.0, "instances": 1, "matched": 1, "unmatched": 0}


def test_boxes_are_not_instances_and_one_sided_labels_are_reported():
    acc = accuracy(pair([box("person", *PERSON_BOX)], [person(JOINTS)]))
    assert acc.per_label() == {
        "person": {
            "pck": None,
            "instances": 0,
            "matched": 0,
            "unmatched": 0,
            "joints": {},
        }
    }
    assert KeypointAccuracy().overall() == {
        "pck": None,
        "instances": 0,
        "matched": 0,
        "unmatched": 0,
    }
