"""How much of the pre-labelling annotators kept: regions accepted unchanged,
edited, deleted, and drawn by hand.

Read from :func:`backend.evaluate.matching.match_image` outcomes at IoU 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable
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


class EffortTally:
    """The :class:`Effort` counts, fed one image's :class:`ImageMatch` at a time."""

    def __init__(self) -> None:
        self.unchanged = self.edited = self.deleted = self.added = 0
        self.predictions = self.ground_truth = 0

    def add(self, m: ImageMatch) -> None:
        self.ground_truth += len(m.matches) + len(m.misses)
        self.predictions += len(m.matches) + len(m.false_positives)
        for t in m.matches:
            if t.iou >= UNCHANGED_IOU:
                self.unchanged += 1
            else:
                self.edited += 1
        relabelled = {fp.gt for fp in m.false_positives if fp.wrong_label is not None}
        self.edited += len(relabelled)
        self.deleted += sum(fp.wrong_label is None for fp in m.false_positives)
        self.added += sum(j not in relabelled for j in m.misses)

    def result(self) -> Effort:
        return Effort(
            self.predictions,
            self.ground_truth,
            self.unchanged,
            self.edited,
            self.deleted,
            self.added,
        )


def effort(matches: Iterable[ImageMatch]) -> Effort:
    """Count what happened to every predicted and ground-truth region."""
    tally = EffortTally()
    for m in matches:
        tally.add(m)
    return tally.result()
