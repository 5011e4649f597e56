"""The grammar of Rex-Omni and every format a prediction goes in and out of.

Pure Python: no torch, no network, no Redis.
"""

from converters.answer import format_answer
from converters.coco import CocoCategory, CocoImage, from_coco, to_coco, to_coco_results
from converters.draw import draw
from converters.geometry import bin_to_pixel, pixel_to_bin, smart_resize
from converters.keypoint_sets import KEYPOINT_SETS, KeypointSet, get_keypoint_set
from converters.labelstudio.reader import from_labelstudio
from converters.labelstudio.writer import to_labelstudio, to_labelstudio_prediction
from converters.parser import parse_output
from converters.prediction import (
    ParseResult,
    Prediction,
    PredictionError,
    RegionType,
    predictions_from_dicts,
    predictions_to_dicts,
)
from converters.prompts import SYSTEM_PROMPT, build_messages, build_prompt
from converters.tasks import Task

__all__ = [
    "KEYPOINT_SETS",
    "SYSTEM_PROMPT",
    "CocoCategory",
    "CocoImage",
    "KeypointSet",
    "ParseResult",
    "Prediction",
    "PredictionError",
    "RegionType",
    "Task",
    "bin_to_pixel",
    "build_messages",
    "build_prompt",
    "draw",
    "format_answer",
    "from_coco",
    "from_labelstudio",
    "get_keypoint_set",
    "parse_output",
    "pixel_to_bin",
    "predictions_from_dicts",
    "predictions_to_dicts",
    "smart_resize",
    "to_coco",
    "to_coco_results",
    "to_labelstudio",
    "to_labelstudio_prediction",
]
