"""Mean IoU of matched masks and polygons, streamed image by image.

The IoU is the one :func:`~backend.evaluate.matching.match_image` matched by
(:attr:`Match.iou`, 0..1): whenever an image has a polygon or mask on either
side, every region there is rasterised at the image size by pycocotools (a box
as its rectangle, a polygon filled, a mask as it is), so nothing is computed
twice. Only counters are kept, never a region.
"""

from __future__ import annotations

from collections import Counter

from backend.evaluate.matching import ImageMatch
from backend.evaluate.pairs import ImagePair
from converters.prediction import Prediction, RegionType


def has_area(region: Prediction) -> bool:
    """A polygon or a region with a mask: what mean IoU scores (boxes, points
    and keypoint instances without a mask are boxes here)."""
    return region.type is RegionType.POLYGON or region.mask is not None


class MaskIoU:
    """Mean IoU per label and overall of matched pairs in which the ground
    truth or the prediction (or both) is a polygon or mask. Pairs of two boxes
    do not count: their IoU is the box metrics' business. A label with a
    polygon or mask on either side is reported even with no such pair matched.
    """

    def __init__(self) -> None:
        self._iou_sum: Counter = Counter()  # label -> sum of IoUs
        self._matched: Counter = Counter()  # label -> pairs counted
        self._labels: dict[str, None] = {}  # labels with an area, in order

    def add(self, pair: ImagePair, match: ImageMatch) -> None:
        """Count one image; ``match`` is ``match_image(pair)``."""
        if match.key != pair.key:
            raise ValueError(
                f"match is for image {match.key!r} but the pair is {pair.key!r}"
            )
        for p in (*pair.ground_truth, *pair.predictions):
            if has_area(p):
                self._labels.setdefault(p.label, None)
        for m in match.matches:
            try:
                truth, guess = pair.ground_truth[m.gt], pair.predictions[m.pred]
            except IndexError:
                raise ValueError(
                    f"match of image {pair.key!r} names ground truth {m.gt} or "
                    f"prediction {m.pred}, which the pair does not have"
                ) from None
            if has_area(truth) or has_area(guess):
                self._iou_sum[m.label] += m.iou
                self._matched[m.label] += 1

    def _summary(self, labels: list[str]) -> dict:
        matched = sum(self._matched[label] for label in labels)
        total = sum(self._iou_sum[label] for label in labels)
        return {"mean_iou": total / matched if matched else None, "matched": matched}

    def overall(self) -> dict:
        """``mean_iou`` (0..1 over every counted pair of every label, None
        without any) and ``matched`` (pairs counted)."""
        return self._summary(list(self._labels))

    def per_label(self) -> dict[str, dict]:
        """Label (in order first seen) -> the keys of :meth:`overall`."""
        return {label: self._summary([label]) for label in self._labels}
