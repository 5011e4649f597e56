"""The grammar of Rex-Omni and every format a prediction goes in and out of.

Pure Python: no torch, no network, no Redis.
"""

from converters.keypoint_sets import KEYPOINT_SETS, KeypointSet, get_keypoint_set
from converters.prediction import (
    ParseResult,
    Prediction,
    PredictionError,
    RegionType,
    predictions_from_dicts,
    predictions_to_dicts,
)
from converters.tasks import Task

__all__ = [
    "KEYPOINT_SETS",
    "KeypointSet",
    "ParseResult",
    "Prediction",
    "PredictionError",
    "RegionType",
    "Task",
    "get_keypoint_set",
    "predictions_from_dicts",
    "predictions_to_dicts",
]
