"""One image's ground truth and predictions, the unit every metric reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from converters.coco import DEFAULT_RESULT_SCORE
from converters.prediction import Prediction


@dataclass
class ImagePair:
    """The annotators' regions and ours for one image.

    Attributes:
        key: what names the image in messages and COCO (``file_name``): a task
            id or path.
        width, height: original image size in pixels; needed to compare masks
            and polygons (rasterised at this size).
        ground_truth: the submitted regions, pixels of the original image.
        predictions: our regions, same pixels.
    """

    key: str
    width: int
    height: int
    ground_truth: list[Prediction] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)


def score_of(p: Prediction) -> float:
    """A prediction's score, :data:`DEFAULT_RESULT_SCORE` when it has none (as
    the COCO results list writes it), so ranking and COCOeval agree."""
    return DEFAULT_RESULT_SCORE if p.score is None else p.score
