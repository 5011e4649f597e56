"""Small builders for the evaluate tests."""

from __future__ import annotations

from backend.evaluate.pairs import ImagePair
from converters.prediction import Prediction, RegionType


def box(label, x0, y0, x1, y1, score=None, text=None):
    return Prediction(RegionType.BOX, label, (x0, y0, x1, y1), score=score, text=text)


def point(label, x, y, score=None):
    return Prediction(RegionType.POINT, label, (x, y), score=score)


def pair(gt, pred, key="img", width=100, height=100):
    return ImagePair(key, width, height, list(gt), list(pred))
