"""Untrusted attribute and extra-param values: every parse failure is a
PlanError naming the control, the attribute and the value, never a crash."""

from __future__ import annotations

import pytest

from backend.planner import PlanError, plan_config
from backend.planner.config import MAX_WHOLE_NUMBER_DIGITS, whole_number
from tests.backend.planner.helpers import view


def rect(attrs: str = "") -> str:
    return view(
        f'<RectangleLabels name="label" toName="image" {attrs}>'
        '<Label value="Car"/></RectangleLabels>'
    )


def test_whole_number_takes_ascii_digits_only() -> None:
    assert whole_number(" 1400 ") == 1400
    assert whole_number("9" * MAX_WHOLE_NUMBER_DIGITS) == 999_999_999
    # "²".isdigit() is True yet int("²") raises; Arabic-Indic digits int() takes
    for text in ["²", "١٤٠٠", "+1400", "-5", "1_000", "1e3", "", "9" * 5000]:
        assert whole_number(text) is None, text


WHOLE_NUMBER_ATTRS = [
    ("rex_max_instances", "must be a whole number of at least 1"),
    ("rex_tile_size", "must be a whole number of pixels, at least 112"),
]
BAD_WHOLE_NUMBERS = ["²", "١٤٠٠", "9" * 5000, "9" * (MAX_WHOLE_NUMBER_DIGITS + 1)]


@pytest.mark.parametrize(("name", "rule"), WHOLE_NUMBER_ATTRS)
@pytest.mark.parametrize("text", BAD_WHOLE_NUMBERS)
def test_whole_number_attributes_refuse_odd_digits(
    name: str, rule: str, text: str
) -> None:
    for config, params in [(rect(f'{name}="{text}"'), None), (rect(), {name: text})]:
        with pytest.raises(PlanError, match=rule) as info:
            plan_config(config, params)
        message = str(info.value)
        assert f"RectangleLabels 'label': {name}='{text[:8]}" in message


def test_whole_number_attributes_take_plain_digits() -> None:
    plan = plan_config(rect('rex_max_instances=" 12 " rex_tile_size="448"'))
    assert plan.control("label").call.max_instances == 12
    assert plan.control("label").call.tile == {"size": 448}


SHARE_ATTRS = [
    ("rex_tile_overlap", "must be a share of the tile from 0 to 0.9"),
    ("model_score_threshold", "must be a number from 0 to 1"),
]


@pytest.mark.parametrize(("name", "rule"), SHARE_ATTRS)
@pytest.mark.parametrize("text", ["nan", "inf", "٠.٣", "0.3.1", "9" * 5000])
def test_share_attributes_refuse_non_numbers(name: str, rule: str, text: str) -> None:
    with pytest.raises(PlanError, match=rule) as info:
        plan_config(rect(f'{name}="{text}"'))
    assert f"RectangleLabels 'label': {name}=" in str(info.value)


def test_minus_zero_overlap_reads_as_zero() -> None:
    tile = plan_config(rect('rex_tile_overlap="-0"')).control("label").call.tile
    assert tile == {"overlap": 0.0}
    assert str(tile["overlap"]) == "0.0"


NOT_FLAGS = [
    "rex_tile",
    "rex_tile_size",
    "rex_tile_overlap",
    "rex_max_instances",
    "rex_categories",
    "model_score_threshold",
]


@pytest.mark.parametrize("name", NOT_FLAGS)
@pytest.mark.parametrize("value", [True, False, [1400], {"a": 1}])
def test_extra_params_that_are_not_text_or_numbers_are_refused(
    name: str, value: object
) -> None:
    with pytest.raises(PlanError) as info:
        plan_config(rect(), {name: value})
    assert str(info.value) == (
        f"RectangleLabels 'label': extra_params {name}={value!r} must be text "
        "or a number"
    )


def test_flags_take_booleans_from_extra_params_but_not_lists() -> None:
    config = view(
        '<PolygonLabels name="poly" toName="image"><Label value="Car"/></PolygonLabels>'
    )
    assert plan_config(config, {"rex_sam": False}).control("poly").call.masks == "none"
    for name in ["rex_sam", "rex_skip"]:
        with pytest.raises(PlanError) as info:
            plan_config(config, {name: ["yes"]})
        assert str(info.value) == (
            f"PolygonLabels 'poly': extra_params {name}=['yes'] must be true or false"
        )


def test_numbers_in_extra_params_still_work() -> None:
    call = (
        plan_config(
            rect(),
            {"rex_tile_size": 896, "rex_tile_overlap": 0.3, "rex_max_instances": 5},
        )
        .control("label")
        .call
    )
    assert call.tile == {"size": 896, "overlap": 0.3}
    assert call.max_instances == 5
