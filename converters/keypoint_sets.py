"""Keypoint sets Rex-Omni knows (person, animal, hand): joint names and skeletons.

Joint order matters: it is the order the prompt lists them in, and the order of
COCO ``keypoints`` triplets. Skeleton edges are pairs of joint names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

_JOINT_SEPARATORS = re.compile(r"[\s_\-]+")


def joint_key(name: str) -> str:
    """A joint name as compared: case-folded, ``_``/``-``/spaces as one space.

    ``"Left_Eye"``, ``"left-eye"`` and ``" left  eye "`` all give ``"left eye"``.
    Joint names match only through this key, never fuzzily: ``left knee`` and
    ``left eye`` are different joints however alike they look.
    """
    return _JOINT_SEPARATORS.sub(" ", str(name)).strip().casefold()


@dataclass(frozen=True)
class KeypointSet:
    name: str
    joints: tuple[str, ...]
    skeleton: tuple[tuple[str, str], ...]

    def joint_for(self, name: str) -> str | None:
        """The set's own spelling of joint ``name`` (see :func:`joint_key`), or
        None when ``name`` is not one of its joints."""
        key = joint_key(name)
        return next((j for j in self.joints if joint_key(j) == key), None)

    def skeleton_indices(self, base: int = 1) -> list[list[int]]:
        """Edges as joint indices (COCO uses 1-based indices, hence ``base``)."""
        index = {joint: i + base for i, joint in enumerate(self.joints)}
        return [[index[a], index[b]] for a, b in self.skeleton]


PERSON = KeypointSet(
    name="person",
    joints=(
        "nose",
        "left eye",
        "right eye",
        "left ear",
        "right ear",
        "left shoulder",
        "right shoulder",
        "left elbow",
        "right elbow",
        "left wrist",
        "right wrist",
        "left hip",
        "right hip",
        "left knee",
        "right knee",
        "left ankle",
        "right ankle",
    ),
    skeleton=(
        ("nose", "left eye"),
        ("nose", "right eye"),
        ("left eye", "left ear"),
        ("right eye", "right ear"),
        ("left shoulder", "right shoulder"),
        ("left shoulder", "left elbow"),
        ("right shoulder", "right elbow"),
        ("left elbow", "left wrist"),
        ("right elbow", "right wrist"),
        ("left shoulder", "left hip"),
        ("right shoulder", "right hip"),
        ("left hip", "right hip"),
        ("left hip", "left knee"),
        ("right hip", "right knee"),
        ("left knee", "left ankle"),
        ("right knee", "right ankle"),
    ),
)

ANIMAL = KeypointSet(
    name="animal",
    joints=(
        "left eye",
        "right eye",
        "nose",
        "neck",
        "root of tail",
        "left shoulder",
        "left elbow",
        "left front paw",
        "right shoulder",
        "right elbow",
        "right front paw",
        "left hip",
        "left knee",
        "left back paw",
        "right hip",
        "right knee",
        "right back paw",
    ),
    skeleton=(
        ("left eye", "right eye"),
        ("left eye", "nose"),
        ("right eye", "nose"),
        ("nose", "neck"),
        ("neck", "left shoulder"),
        ("neck", "right shoulder"),
        ("left shoulder", "left elbow"),
        ("right shoulder", "right elbow"),
        ("left elbow", "left front paw"),
        ("right elbow", "right front paw"),
        ("neck", "left hip"),
        ("neck", "right hip"),
        ("left hip", "left knee"),
        ("right hip", "right knee"),
        ("left knee", "left back paw"),
        ("right knee", "right back paw"),
        ("neck", "root of tail"),
    ),
)

_FINGERS = ("thumb", "forefinger", "middle finger", "ring finger", "pinky finger")


def _finger_joints(finger: str) -> tuple[str, str, str, str]:
    root = "thumb root" if finger == "thumb" else f"{finger}'s root"
    return (
        root,
        f"{finger}'s third knuckle",
        f"{finger}'s second knuckle",
        f"{finger}'s first knuckle",
    )


def _hand() -> KeypointSet:
    joints: list[str] = ["wrist"]
    edges: list[tuple[str, str]] = []
    for finger in _FINGERS:
        chain = _finger_joints(finger)
        joints.extend(chain)
        edges.append(("wrist", chain[0]))
        edges.extend(pairwise(chain))
    return KeypointSet(name="hand", joints=tuple(joints), skeleton=tuple(edges))


HAND = _hand()

KEYPOINT_SETS: dict[str, KeypointSet] = {s.name: s for s in (PERSON, ANIMAL, HAND)}


def get_keypoint_set(name: str) -> KeypointSet:
    """The keypoint set called ``name``; ValueError naming the known sets otherwise."""
    try:
        return KEYPOINT_SETS[str(name).strip().lower()]
    except KeyError:
        known = ", ".join(KEYPOINT_SETS)
        raise ValueError(
            f"Unknown keypoint type {name!r}; expected one of: {known}"
        ) from None


def guess_keypoint_set(joint_names) -> KeypointSet | None:
    """The set whose joints best cover ``joint_names`` (all of them), else None.

    Used to pick a skeleton for drawing and to decide whether Label Studio
    KeyPointLabels are joints of a known set. Ties prefer the smaller set.
    """
    names = {joint_key(n) for n in joint_names}
    if not names:
        return None

    def keys(kp_set: KeypointSet) -> set[str]:
        return {joint_key(j) for j in kp_set.joints}

    by_size = sorted(KEYPOINT_SETS.values(), key=lambda s: len(s.joints))
    covering = next((s for s in by_size if names <= keys(s)), None)
    if covering is not None:
        return covering
    # Partial cover: choose the set sharing the most joints, if it shares most of them.
    top = max(by_size, key=lambda s: len(names & keys(s)))
    return top if len(names & keys(top)) * 2 > len(names) else None
