"""PCK@0.1 and per-joint accuracy of keypoint instances, streamed image by image.

An instance is a :class:`~converters.prediction.Prediction` of type
``KEYPOINT``: its box (``coords``, xyxy) and ``keypoints``, joint name ->
``(x, y)`` or None when not visible; pixels of the original image. Joint
names are compared through :func:`converters.keypoint_sets.joint_key`
(``left_eye`` is ``left eye``). Only counters are kept, never a region.
"""

from __future__ import annotations

import math
from collections import Counter

from backend.evaluate.matching import match_image
from backend.evaluate.pairs import ImagePair
from converters.keypoint_sets import joint_key
from converters.prediction import Point, Prediction, RegionType

PCK_RATIO = 0.1
"""A joint is correct within this share of the ground-truth instance's scale:
the issue's PCK@0.1, the usual threshold for PCK of the instance box (tight
enough to tell an elbow from a wrist, loose enough for annotators' spread)."""


def instances(regions: list[Prediction]) -> list[Prediction]:
    """The keypoint instances among ``regions``, in order."""
    return [p for p in regions if p.type is RegionType.KEYPOINT]


def pck_limit(instance: Prediction) -> float:
    """The largest distance (pixels) at which a joint of ``instance`` is correct:
    :data:`PCK_RATIO` x the longer side of its box. The longer side, not the
    diagonal or the head size, because it is what every keypoint set has (no
    head in a hand) and a crouching or side-on body keeps it while its shorter
    side shrinks."""
    x0, y0, x1, y1 = instance.coords
    return PCK_RATIO * max(x1 - x0, y1 - y0)


def _joints(instance: Prediction) -> dict[str, tuple[str, Point | None]]:
    """joint_key -> (name as written, position or None)."""
    return {joint_key(n): (n, xy) for n, xy in (instance.keypoints or {}).items()}


class KeypointAccuracy:
    """PCK@:data:`PCK_RATIO` per label, per joint and overall.

    Add one :class:`ImagePair` at a time. Per image, predicted instances are
    matched to ground-truth instances of the same label by
    :func:`~backend.evaluate.matching.match_image` on the instances alone
    (greedy by score, highest first, box IoU >= 0.5). For each matched pair,
    every joint visible in the ground truth counts once: correct when the
    prediction's joint of that name is within :func:`pck_limit`; a joint the
    prediction lacks or has as not visible counts as wrong. Joints hidden in
    the ground truth do not count. Ground-truth instances no prediction matched
    are counted as ``unmatched`` and left out of PCK (OKS AP already punishes
    misses), so PCK says how well found instances are placed.
    """

    def __init__(self) -> None:
        self._instances: Counter = Counter()  # label -> ground-truth instances
        self._matched: Counter = Counter()  # label -> matched instances
        self._labels: dict[str, None] = {}  # every label seen, in order
        self._correct: Counter = Counter()  # (label, joint key) -> correct joints
        self._total: Counter = Counter()  # (label, joint key) -> scored joints
        self._names: dict[tuple[str, str], str] = {}  # (label, key) -> name shown

    def add(self, pair: ImagePair) -> None:
        """Count the keypoint instances of one image."""
        gt, pred = instances(pair.ground_truth), instances(pair.predictions)
        for p in (*gt, *pred):
            self._labels.setdefault(p.label, None)
        self._instances.update(g.label for g in gt)
        only = ImagePair(pair.key, pair.width, pair.height, gt, pred)
        for m in match_image(only).matches:
            self._matched[m.label] += 1
            self._score(gt[m.gt], pred[m.pred])

    def _score(self, truth: Prediction, guess: Prediction) -> None:
        limit = pck_limit(truth)
        guessed = _joints(guess)
        for key, (name, xy) in _joints(truth).items():
            slot = (truth.label, key)
            self._names.setdefault(slot, name)
            if xy is None:
                continue
            self._total[slot] += 1
            _, found = guessed.get(key, (None, None))
            if found is not None and math.dist(xy, found) <= limit:
                self._correct[slot] += 1

    @staticmethod
    def _share(correct: int, total: int) -> float | None:
        return correct / total if total else None

    def _counts(self, labels: list[str]) -> dict:
        wanted = set(labels)
        slots = [s for s in self._total if s[0] in wanted]
        gt = sum(self._instances[label] for label in labels)
        matched = sum(self._matched[label] for label in labels)
        return {
            "pck": self._share(
                sum(self._correct[s] for s in slots), sum(self._total[s] for s in slots)
            ),
            "instances": gt,
            "matched": matched,
            "unmatched": gt - matched,
        }

    def overall(self) -> dict:
        """``pck`` (0..1 over every scored joint of every label, None without
        any), ``instances`` (ground truth), ``matched`` and ``unmatched``."""
        return self._counts(list(self._labels))

    def per_label(self) -> dict[str, dict]:
        """Label (in order first seen, either side) -> the keys of
        :meth:`overall` plus ``joints``: joint name (as the ground truth first
        spells it) -> share correct, for every joint of a matched ground-truth
        instance; None for a joint never visible there."""
        report = {}
        for label in self._labels:
            entry = self._counts([label])
            entry["joints"] = {
                name: self._share(self._correct[s], self._total[s])
                for s, name in self._names.items()
                if s[0] == label
            }
            report[label] = entry
        return report
