"""Label config -> what the model is asked (one plan per config).

Every region control tag on an ``<Image>`` becomes one :class:`ControlPlan`
holding one :class:`~common.jobspec.ModelCall` (``key`` = the control's name);
all calls on one image go to the worker as one :class:`~common.jobspec.ImageJob`,
so a config with several controls is served in one pass over the image.

=====================================  ======================================
control tag                            model call
=====================================  ======================================
``RectangleLabels``                    ``detection`` of the labels
``KeyPointLabels`` (joints of a set)   ``keypoint`` (category: the set name)
``KeyPointLabels`` (other labels)      ``pointing`` of the labels
``PolygonLabels`` / ``BrushLabels``    ``detection`` then SAM (polygon/brush)
``Rectangle``/``Polygon`` + per-region ``ocr_box`` / ``ocr_polygon``
``TextArea`` (``perRegion="true"``)    (category ``text line``)
=====================================  ======================================

The phrases asked are each ``<Label>``'s value, or its ``predicted_values``
aliases. Attributes on the control tag override the plan (project-wide
defaults may come from the model's "Extra params" JSON, same names):

- ``rex_task``: any Rex-Omni task that fits the control's geometry.
- ``rex_categories``: the phrases to ask (comma separated). Detection and
  pointing phrases must map to a label; for keypoints the instance category
  (``cat,dog``); for OCR the granularity (``word`` or ``text line``).
- ``model_score_threshold``: drop predictions scoring below (0..1).
- ``model_score_thresholds`` (extra params only): ``{"<label value>": 0.42}``,
  the threshold of each label's regions, wherever the label is (the label
  of the region as Label Studio shows it: a keypoint instance's box label,
  an OCR region's ``Labels`` label, a drawn box's label). Precedence: this
  entry, then the control's ``model_score_threshold``, then the project-wide
  one. An entry that is not a number from 0 to 1 is a PlanError naming the
  label; a label no control has is a note (renamed labels). Masks from
  keypoint clicks are never cut (as with ``model_score_threshold``).
  ``rexlabel evaluate --apply-thresholds`` writes it.
- ``rex_max_instances``: runaway guard for this control.
- ``rex_tile="auto|on|off"``, ``rex_tile_size`` (pixels) and
  ``rex_tile_overlap`` (share of a tile, 0 to 0.9): tiled inference for this
  control (unset: the worker's REXLABEL_TILE* settings; keypoint controls
  are never tiled); see docs/tiling.md.
- ``rex_sam="true|false"``: masks for Polygon/Brush controls (Polygon without
  SAM gets the detected box as a 4-point polygon).
- ``rex_skip="true"``: leave this control out of pre-annotation.
- ``rex_target``: on a prompt ``TextArea`` or a smart ``KeyPointLabels``, the
  control that receives interactive results.

A ``Rectangle``/``Polygon`` with a per-region ``TextArea`` is read as OCR; a
``Labels`` tag on the same image then labels the OCR regions (its ``<Label
predicted_values="text line">`` maps the category). A ``RectangleLabels`` or
``PolygonLabels`` beside a per-region TextArea stays a detection unless
``rex_task`` says ``ocr_box``/``ocr_polygon``. In Label Studio's stock OCR
template (both ``Rectangle`` and ``Polygon``) only the first one is served.

The package, along its seams:

- :mod:`~backend.planner.plan`: :class:`ControlPlan`, :class:`Plan` and the
  errors;
- :mod:`~backend.planner.config`: reading the config (``LabelInterface``) and
  its attributes;
- :mod:`~backend.planner.controls`: which control gets which task
  (:func:`plan_config`);
- :mod:`~backend.planner.keypoint_boxes`: keypoint instances boxed by a
  ``RectangleLabels``;
- :mod:`~backend.planner.interactive`: drawn boxes, typed phrases and clicks
  (:func:`plan_interactive`).

Which tags draw regions, their result types, geometries and the tasks they
can show come from :mod:`converters.tags`. A config that cannot be served
raises :class:`PlanError` naming the tag.
"""

from backend.planner.config import (
    IMAGE_TAGS,
    LABEL_THRESHOLDS_PARAM,
    PARSED_CONFIG_CACHE,
    UNSERVABLE_REGION_TAGS,
    label_thresholds_of,
    parse_config,
)
from backend.planner.controls import OCR_DEFAULT_CATEGORY, plan_config
from backend.planner.interactive import (
    DRAWN_BOX_IOU,
    POINT_PROMPT_TARGETS,
    PROMPT_MAX_CHARS,
    TEXT_PROMPT_TARGETS,
    plan_interactive,
)
from backend.planner.keypoint_boxes import HUMAN_WORDS
from backend.planner.plan import (
    SHOWN_VALUE_CHARS,
    ContextError,
    ControlPlan,
    Plan,
    PlanError,
    checked_task_id,
    is_id,
    shown,
    task_id_of,
)

__all__ = [
    "DRAWN_BOX_IOU",
    "HUMAN_WORDS",
    "IMAGE_TAGS",
    "LABEL_THRESHOLDS_PARAM",
    "OCR_DEFAULT_CATEGORY",
    "PARSED_CONFIG_CACHE",
    "POINT_PROMPT_TARGETS",
    "PROMPT_MAX_CHARS",
    "SHOWN_VALUE_CHARS",
    "TEXT_PROMPT_TARGETS",
    "UNSERVABLE_REGION_TAGS",
    "ContextError",
    "ControlPlan",
    "Plan",
    "PlanError",
    "checked_task_id",
    "is_id",
    "label_thresholds_of",
    "parse_config",
    "plan_config",
    "plan_interactive",
    "shown",
    "task_id_of",
]
