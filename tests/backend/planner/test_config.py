"""Control attributes and project-wide defaults read from the config."""

from __future__ import annotations

import pytest

from backend.planner import PlanError, plan_config
from converters.tasks import Task
from tests.backend.planner.helpers import RECT, view


def test_attributes_override_the_plan() -> None:
    plan = plan_config(
        view(
            '<RectangleLabels name="label" toName="image" model_score_threshold="0.35" '
            'rex_max_instances="12" rex_categories="truck" rex_task="gui_grounding">'
            '<Label value="Car" predicted_values="car,truck"/></RectangleLabels>'
        )
    )
    call = plan.controls[0].call
    assert call.task is Task.GUI_GROUNDING
    assert call.categories == ["truck"]
    assert call.score_threshold == 0.35
    assert call.max_instances == 12


def test_extra_params_give_project_defaults_attributes_win() -> None:
    config = view(
        RECT,
        '<PolygonLabels name="poly" toName="image" model_score_threshold="0.9">'
        '<Label value="Car"/></PolygonLabels>',
    )
    plan = plan_config(
        config,
        {"model_score_threshold": 0.2, "generation": {"max_new_tokens": 64}},
    )
    assert plan.control("label").call.score_threshold == 0.2
    assert plan.control("poly").call.score_threshold == 0.9
    assert plan.control("label").call.generation == {"max_new_tokens": 64}


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ('model_score_threshold="1.5"', "model_score_threshold"),
        ('model_score_threshold="high"', "model_score_threshold"),
        ('rex_max_instances="0"', "rex_max_instances"),
        ('rex_task="segmentation"', "rex_task"),
        ('rex_task="pointing"', "cannot be shown as rectangle"),
        ('rex_task="visual_prompting"', "drawn box"),
        ('rex_categories="zebra"', "zebra"),
        ('rex_tile="sometimes"', "rex_tile='sometimes' must be one of auto, on, off"),
        ('rex_tile_size="64"', "rex_tile_size='64' must be a whole number"),
        ('rex_tile_size="500.5"', "rex_tile_size='500.5' must be a whole number"),
        ('rex_tile_overlap="0.95"', "rex_tile_overlap='0.95' must be a share"),
        ('rex_tile_overlap="lots"', "rex_tile_overlap='lots' must be a share"),
    ],
)
def test_bad_attributes_name_the_tag(attr: str, message: str) -> None:
    config = view(
        f'<RectangleLabels name="label" toName="image" {attr}>'
        '<Label value="Car"/></RectangleLabels>'
    )
    with pytest.raises(PlanError, match=message) as info:
        plan_config(config)
    assert "RectangleLabels 'label'" in str(info.value)


def test_rex_sam_false() -> None:
    plan = plan_config(
        view(
            '<PolygonLabels name="poly" toName="image" rex_sam="false">'
            '<Label value="Car"/></PolygonLabels>'
        )
    )
    assert plan.controls[0].call.masks == "none"
    with pytest.raises(PlanError, match=r"BrushLabels 'brush'.*SAM"):
        plan_config(
            view(
                '<BrushLabels name="brush" toName="image" rex_sam="false">'
                '<Label value="Car"/></BrushLabels>'
            )
        )
    with pytest.raises(PlanError, match="rex_sam='maybe'"):
        plan_config(
            view(
                '<PolygonLabels name="poly" toName="image" rex_sam="maybe">'
                '<Label value="Car"/></PolygonLabels>'
            )
        )


def test_tiling_attributes_and_extra_params() -> None:
    config = view(
        '<RectangleLabels name="label" toName="image" rex_tile="ON" '
        'rex_tile_size="448"><Label value="Car"/></RectangleLabels>',
        '<KeyPointLabels name="kp" toName="image"><Label value="nose"/>'
        "</KeyPointLabels>",
    )
    plan = plan_config(config, {"rex_tile_overlap": 0.3, "rex_tile_size": 896})
    assert plan.control("label").call.tile == {
        "mode": "on",
        "size": 448,
        "overlap": 0.3,
    }
    # keypoints get the project's tiling too; the worker runs them whole
    assert plan.control("kp").call.tile == {"size": 896, "overlap": 0.3}
    assert plan_config(view(RECT)).control("label").call.tile == {}
