"""Label Studio's region control tags: the one table every part of rexlabel reads.

For each tag that draws regions on an image: the ``type`` of the results it
holds, its geometry, whether it carries labels, and which Rex-Omni tasks give
predictions it can show. The planner (which control gets which task), the
backend's prediction writer, the Label Studio writer/reader and the export to
COCO (``backend.bulk.convert``: which controls become categories) all look tags
up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from converters.tasks import Task


class Geometry(str, Enum):
    """The shape a control draws."""

    RECTANGLE = "rectangle"
    POLYGON = "polygon"
    BRUSH = "brush"
    KEYPOINT = "keypoint"


_BOX_OUTPUT_TASKS = frozenset({Task.DETECTION, Task.GUI_GROUNDING, Task.OCR_BOX})


@dataclass(frozen=True)
class RegionTag:
    """One region control tag of a Label Studio labeling config."""

    tag: str
    """The config's tag name, e.g. ``RectangleLabels``."""
    geometry: Geometry
    labelled: bool
    """Its results carry a label list (``rectanglelabels: [..]``)."""
    tasks: frozenset[Task]
    """Tasks whose predictions this geometry can show (a box task's boxes on a
    polygon control become 4-point polygons; points go only to keypoints)."""

    @property
    def result_type(self) -> str:
        """The ``type`` of this tag's results: ``rectanglelabels``, ``rectangle``."""
        return self.labelled_type if self.labelled else self.geometry.value

    @property
    def labelled_type(self) -> str:
        """The labelled form of this geometry's results: ``rectanglelabels`` (a
        label-less tag's regions are written this way, then the label removed)."""
        return f"{self.geometry.value}labels"


_TASKS_BY_GEOMETRY = {
    Geometry.RECTANGLE: _BOX_OUTPUT_TASKS,
    Geometry.POLYGON: _BOX_OUTPUT_TASKS | {Task.OCR_POLYGON},
    Geometry.BRUSH: frozenset({Task.DETECTION, Task.GUI_GROUNDING}),
    Geometry.KEYPOINT: frozenset({Task.POINTING, Task.GUI_POINTING, Task.KEYPOINT}),
}
_TAG_STEMS = {
    Geometry.RECTANGLE: "Rectangle",
    Geometry.POLYGON: "Polygon",
    Geometry.BRUSH: "Brush",
    Geometry.KEYPOINT: "KeyPoint",
}

REGION_TAGS: dict[str, RegionTag] = {}
for _geometry, _tasks in _TASKS_BY_GEOMETRY.items():
    for _labelled in (True, False):
        _tag = _TAG_STEMS[_geometry] + ("Labels" if _labelled else "")
        REGION_TAGS[_tag] = RegionTag(_tag, _geometry, _labelled, _tasks)
"""Every region control tag by name: ``RectangleLabels``, ``Rectangle``, ..."""

REGION_TAGS_BY_TYPE: dict[str, RegionTag] = {
    t.result_type: t for t in REGION_TAGS.values()
}
"""The same tags by the ``type`` of their results."""

LABELS_TAG = "Labels"
"""The stock OCR template's separate label control (results of type ``labels``)."""
LABELS_TYPE = "labels"
TEXT_TAG = "TextArea"
"""Per-region text (OCR transcriptions; results of type ``textarea``)."""
TEXT_TYPE = "textarea"


def region_tag(tag: str) -> RegionTag | None:
    """The table's entry for a control tag name, None when it draws no regions."""
    return REGION_TAGS.get(tag)


def geometry_types(geometry: Geometry) -> frozenset[str]:
    """Both result types of a geometry: ``{"rectanglelabels", "rectangle"}``."""
    return frozenset(
        t.result_type for t in REGION_TAGS.values() if t.geometry is geometry
    )
