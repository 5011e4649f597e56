"""The plan of a task: its image jobs and task ids."""

from __future__ import annotations

import pytest

from backend.planner import PlanError, checked_task_id, plan_config, task_id_of
from tests.backend.planner.helpers import RECT, view


def test_image_jobs_name_a_missing_url_and_handle_two_images() -> None:
    plan = plan_config(view(RECT))
    with pytest.raises(PlanError, match=r"data\['image'\]"):
        plan.image_jobs({"id": 1, "data": {"img": "x.jpg"}})
    with pytest.raises(PlanError, match="no 'data'"):
        plan.image_jobs({"id": 1})
    two = (
        '<View><Image name="a" value="$left"/><Image name="b" value="$right"/>'
        '<RectangleLabels name="la" toName="a"><Label value="Car"/></RectangleLabels>'
        '<RectangleLabels name="lb" toName="b"><Label value="Car"/></RectangleLabels>'
        "</View>"
    )
    jobs = plan_config(two).image_jobs(
        {"id": 9, "data": {"left": "l.jpg", "right": "r.jpg"}}
    )
    assert [(j.id, j.image, [c.key for c in j.calls]) for j in jobs] == [
        ("9/a", "l.jpg", ["la"]),
        ("9/b", "r.jpg", ["lb"]),
    ]


@pytest.mark.parametrize("bad", [True, False, "1", 1.5, [1], {"id": 1}])
def test_a_task_id_must_be_an_integer(bad) -> None:
    task = {"id": bad, "data": {"image": "/data/upload/1/a.png"}}
    assert task_id_of(task) is None
    with pytest.raises(PlanError, match=r"task id .* is not an integer"):
        checked_task_id(task)
    plan = plan_config(
        '<View><Image name="image" value="$image"/>'
        '<RectangleLabels name="label" toName="image"><Label value="car"/>'
        "</RectangleLabels></View>"
    )
    with pytest.raises(PlanError, match="is not an integer"):
        plan.image_jobs(task)
    assert checked_task_id({"id": 7}) == 7 and checked_task_id({}) is None
