"""How much of the pre-labelling annotators kept: regions accepted unchanged,
edited, deleted, and drawn by hand.

Read from :func:`backend.evaluate.matching.match_image` outcomes at IoU 0.5.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from backend.evaluate.matching import ImageMatch

UNCHANGED_IOU = 0.9
"""A matched region this close (IoU 0..1) to what was submitted was accepted as
it was: a few pixels off on a typical box, inside annotators' own jitter."""


@dataclass(frozen=True)
class Effort:
    """Counts, and shares of the predicted regions (0..1; 0 with none).

    ``unchanged``: same label, IoU >= :data:`UNCHANGED_IOU`; ``edited``:
    matched below that, or relabelled (a wrong label); ``deleted``: any other
    prediction; ``added``: ground truth no prediction found nor was relabelled
    into, ``added_share`` of all ground-truth regions.
    """

    predictions: int
    ground_truth: int
    unchanged: int
    edited: int
    deleted: int
    added: int

    def share(self, count: int) -> float:
        return count / self.predictions if self.predictions else 0.0

    @property
    def unchanged_share(self) -> float:
        return self.share(self.unchanged)

    @property
    def edited_share(self) -> float:
        return self.share(self.edited)

    @property
    def deleted_share(self) -> float:
        return self.share(self.deleted)

    @property
    def added_share(self) -> float:
        return self.added / self.ground_truth if self.ground_truth else 0.0


FIELDS = ("predictions", "ground_truth", "unchanged", "edited", "deleted", "added")


class EffortTally:
    """The :class:`Effort` counts per label (a prediction's counts under its
    label, an added region's under its own), fed one image's
    :class:`ImageMatch` at a time."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = {name: Counter() for name in FIELDS}

    def add(self, m: ImageMatch) -> None:
        c = self.counts
        for t in m.matches:
            c["ground_truth"][t.label] += 1
            c["predictions"][t.label] += 1
            c["unchanged" if t.iou >= UNCHANGED_IOU else "edited"][t.label] += 1
        relabelled = set()
        for fp in m.false_positives:
            c["predictions"][fp.label] += 1
            if fp.wrong_label is None:
                c["deleted"][fp.label] += 1
            else:
                c["edited"][fp.label] += 1
                relabelled.add(fp.gt)
        for j in m.misses:
            c["ground_truth"][m.gt_labels[j]] += 1
            if j not in relabelled:
                c["added"][m.gt_labels[j]] += 1

    def result(self, without: Collection[str] = ()) -> Effort:
        """The counts over all labels but ``without``."""
        totals = {
            name: sum(n for label, n in counter.items() if label not in without)
            for name, counter in self.counts.items()
        }
        return Effort(**totals)


def effort(matches: Iterable[ImageMatch]) -> Effort:
    """Count what happened to every predicted and ground-truth region."""
    tally = EffortTally()
    for m in matches:
        tally.add(m)
    return tally.result()
