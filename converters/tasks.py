"""The Rex-Omni tasks: the one list every part of rexlabel agrees on."""

from __future__ import annotations

from enum import Enum


class Task(str, Enum):
    """A Rex-Omni task. A ``str`` Enum, so it serialises as its value in JSON."""

    DETECTION = "detection"
    POINTING = "pointing"
    VISUAL_PROMPTING = "visual_prompting"
    KEYPOINT = "keypoint"
    OCR_BOX = "ocr_box"
    OCR_POLYGON = "ocr_polygon"
    GUI_GROUNDING = "gui_grounding"
    GUI_POINTING = "gui_pointing"

    @classmethod
    def from_value(cls, value: Task | str) -> Task:
        """A Task from itself or its name in any case; ValueError names the choices."""
        if isinstance(value, Task):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            choices = ", ".join(t.value for t in cls)
            raise ValueError(
                f"Unknown task {value!r}; expected one of: {choices}"
            ) from None

    @property
    def is_ocr(self) -> bool:
        return self in (Task.OCR_BOX, Task.OCR_POLYGON)


OCR_TASKS = frozenset({Task.OCR_BOX, Task.OCR_POLYGON})
"""Tasks whose phrase is recognised text rather than a category name."""

BOX_TASKS = frozenset(
    {Task.DETECTION, Task.VISUAL_PROMPTING, Task.GUI_GROUNDING, Task.OCR_BOX}
)
"""Tasks whose items are boxes (4 coordinate tokens)."""

POINT_TASKS = frozenset({Task.POINTING, Task.GUI_POINTING})
"""Tasks whose items are points (2 coordinate tokens)."""

POLYGON_TASKS = frozenset({Task.OCR_POLYGON})
"""Tasks whose items are polygons (an even count of at least 6 tokens)."""
