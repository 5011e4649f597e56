"""Precision, recall and F1 per label at every score threshold, and the
threshold to recommend as ``model_score_threshold``.

Read from :func:`backend.evaluate.matching.match_image` outcomes at IoU 0.5:
matching is greedy by score, so keeping only predictions with score >= t
leaves their matches as they were, and the counts at t are those of the
predictions scoring at least t. A wrong-label prediction is a false positive
of its predicted label.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

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


def label_thresholds(matches: Iterable[ImageMatch]) -> dict[str, LabelThresholds]:
    """Per label (sorted): the curve at every distinct score and the best F1."""
    outcomes: dict[str, list[tuple[float, bool]]] = defaultdict(list)
    n_gt: dict[str, int] = defaultdict(int)
    for m in matches:
        for j in m.misses:
            n_gt[m.gt_labels[j]] += 1
        for t in m.matches:
            n_gt[t.label] += 1
            outcomes[t.label].append((t.score, True))
        for fp in m.false_positives:
            outcomes[fp.label].append((fp.score, False))
    report = {}
    for label in sorted({*n_gt, *outcomes}):
        ranked = sorted(outcomes.get(label, []), key=lambda o: -o[0])
        entry = LabelThresholds(label, n_gt.get(label, 0))
        tp = fp = 0
        for n, (score, hit) in enumerate(ranked):
            tp, fp = tp + hit, fp + (not hit)
            if n + 1 < len(ranked) and ranked[n + 1][0] == score:
                continue  # one point per distinct score
            entry.curve.append(_point(score, tp, fp, entry.ground_truth))
        best = max(entry.curve, key=lambda p: (p.f1, p.threshold), default=None)
        entry.recommended = best if best is not None and best.f1 > 0 else None
        report[label] = entry
    return report
