import json

import pytest

from converters.tasks import BOX_TASKS, OCR_TASKS, POINT_TASKS, POLYGON_TASKS, Task


def test_tasks_serialise_as_their_values():
    assert (
        json.dumps([Task.DETECTION, Task.OCR_POLYGON]) == '["detection", "ocr_polygon"]'
    )


def test_from_value_is_case_insensitive_and_names_choices():
    assert Task.from_value(" Detection ") is Task.DETECTION
    assert Task.from_value(Task.POINTING) is Task.POINTING
    with pytest.raises(ValueError, match="gui_pointing"):
        Task.from_value("segment")


def test_every_non_keypoint_task_has_exactly_one_item_kind():
    groups = [BOX_TASKS, POINT_TASKS, POLYGON_TASKS]
    for task in Task:
        memberships = sum(task in g for g in groups)
        assert memberships == (0 if task is Task.KEYPOINT else 1), task
    assert {t for t in Task if t.is_ocr} == OCR_TASKS
