"""Precision, recall and F1 per label at every score threshold, and the
threshold to recommend as ``model_score_threshold``.

Read from :func:`backend.evaluate.matching.match_image` outcomes at IoU 0.5:
matching is greedy by score, so keeping only predictions with score >= t
leaves their matches as they were, and the counts at t are those of the
predictions scoring at least t. A wrong-label prediction is a false positive
of its predicted label. :class:`ThresholdTally` keeps one (score, hit) entry
per prediction (a compact array per label), so images can stream through it.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from backend.evaluate.matching import ImageMatch


@dataclass(frozen=True)
class ThresholdPoint:
    """Counts and rates (0..1) when predictions scoring >= ``threshold`` are kept."""

    threshold: float
    true_positives: int
    false_positives: int
    misses: int
    precision: float
    recall: float
    f1: float


@dataclass
class LabelThresholds:
    """A label's curve, highest threshold first, and the recommendation: the
    threshold with the best F1 (ties: the higher one, fewer regions to delete);
    None when no threshold finds anything (best F1 0)."""

    label: str
    ground_truth: int
    curve: list[ThresholdPoint] = field(default_factory=list)
    recommended: ThresholdPoint | None = None


def _point(threshold: float, tp: int, fp: int, n_gt: int) -> ThresholdPoint:
    misses = n_gt - tp
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_gt if n_gt else 0.0
    f1 = 2 * tp / (2 * tp + fp + misses) if tp else 0.0
    return ThresholdPoint(threshold, tp, fp, misses, precision, recall, f1)


def _curve(scores: np.ndarray, hits: np.ndarray, n_gt: int) -> list[ThresholdPoint]:
    """One point per distinct score, highest first."""
    if not len(scores):
        return []
    order = np.argsort(-scores, kind="stable")
    ranked, hit = scores[order], hits[order].astype(bool)
    tp = np.cumsum(hit)
    fp = np.cumsum(~hit)
    last = np.append(ranked[1:] != ranked[:-1], True)  # last of each score
    return [
        _point(float(s), int(t), int(f), n_gt)
        for s, t, f in zip(ranked[last], tp[last], fp[last], strict=True)
    ]


class ThresholdTally:
    """Per label: the score and outcome of every prediction, and the ground
    truth count, fed one image's :class:`ImageMatch` at a time."""

    def __init__(self) -> None:
        self.scores: dict[str, array] = defaultdict(lambda: array("d"))
        self.hits: dict[str, bytearray] = defaultdict(bytearray)
        self.ground_truth: dict[str, int] = defaultdict(int)

    def add(self, m: ImageMatch) -> None:
        for j in m.misses:
            self.ground_truth[m.gt_labels[j]] += 1
        for t in m.matches:
            self.ground_truth[t.label] += 1
            self.scores[t.label].append(t.score)
            self.hits[t.label].append(1)
        for fp in m.false_positives:
            self.scores[fp.label].append(fp.score)
            self.hits[fp.label].append(0)

    def result(self) -> dict[str, LabelThresholds]:
        """Per label (sorted): the curve at every distinct score and the best F1."""
        report = {}
        for label in sorted({*self.ground_truth, *self.scores}):
            n_gt = self.ground_truth.get(label, 0)
            entry = LabelThresholds(label, n_gt)
            entry.curve = _curve(
                np.frombuffer(self.scores.get(label, array("d")), dtype=np.float64),
                np.frombuffer(bytes(self.hits.get(label, b"")), dtype=np.uint8),
                n_gt,
            )
            best = max(entry.curve, key=lambda p: (p.f1, p.threshold), default=None)
            entry.recommended = best if best is not None and best.f1 > 0 else None
            report[label] = entry
        return report


def label_thresholds(matches: Iterable[ImageMatch]) -> dict[str, LabelThresholds]:
    """Per label (sorted): the curve at every distinct score and the best F1."""
    tally = ThresholdTally()
    for m in matches:
        tally.add(m)
    return tally.result()
