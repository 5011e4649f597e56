"""Keypoint sets Rex-Omni knows (person, animal, hand): joint names and skeletons.

Joint order matters: it is the order the prompt lists them in, and the order of
COCO ``keypoints`` triplets. Skeleton edges are pairs of joint names.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True)
class KeypointSet:
    name: str
    joints: tuple[str, ...]
    skeleton: tuple[tuple[str, str], ...]

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
    names = {str(n).strip().lower() for n in joint_names}
    if not names:
        return None
    best = None
    for kp_set in sorted(KEYPOINT_SETS.values(), key=lambda s: len(s.joints)):
        if names <= set(kp_set.joints) and (best is None):
            best = kp_set
    if best is not None:
        return best
    # Partial cover: choose the set sharing the most joints, if it shares most of them.
    scored = sorted(KEYPOINT_SETS.values(), key=lambda s: -len(names & set(s.joints)))
    top = scored[0]
    return top if len(names & set(top.joints)) * 2 > len(names) else None
