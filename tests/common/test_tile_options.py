"""common.tile_options: the tiling a call asks for, checked, with the settings'
defaults; and how it travels in the job contract."""

from __future__ import annotations

import pytest

from common import settings
from common.jobspec import CallResult, JobSpecError, ModelCall
from common.settings import SettingsError
from common.tile_options import CALL_FIELDS, TileOptions
from converters.tasks import Task


def test_defaults_are_the_settings_defaults():
    options = TileOptions()
    assert options == TileOptions.from_settings({})
    assert (options.mode, options.size, options.overlap) == ("auto", 1400, 0.2)
    assert options.whole_image is True
    assert (options.min_shrink, options.max_tiles) == (3.0, 64)
    assert options.size**2 <= settings.setting("REXLABEL_MAX_PIXELS").default
    assert (options.size + 28) ** 2 > settings.setting("REXLABEL_MAX_PIXELS").default


def test_settings_are_read_and_checked():
    options = TileOptions.from_settings(
        {
            "REXLABEL_TILE": "on",
            "REXLABEL_TILE_SIZE": "448",
            "REXLABEL_TILE_OVERLAP": "0.25",
            "REXLABEL_TILE_WHOLE_IMAGE": "false",
            "REXLABEL_TILE_AUTO_SHRINK": "2",
            "REXLABEL_TILE_MAX_TILES": "9",
        }
    )
    assert options == TileOptions("on", 448, 0.25, False, 2.0, 9)
    for name, value in (
        ("REXLABEL_TILE", "sometimes"),
        ("REXLABEL_TILE_SIZE", "100"),
        ("REXLABEL_TILE_OVERLAP", "0.95"),
        ("REXLABEL_TILE_AUTO_SHRINK", "0.5"),
        ("REXLABEL_TILE_MAX_TILES", "0"),
    ):
        with pytest.raises(SettingsError, match=name):
            TileOptions.from_settings({name: value})


def test_a_call_overrides_only_its_own_fields():
    base = TileOptions(max_tiles=9, min_shrink=2.0)
    options = base.with_overrides({"mode": "on", "size": 224, "whole_image": False})
    assert options == TileOptions("on", 224, 0.2, False, 2.0, 9)
    assert base.with_overrides({}) is base
    with pytest.raises(ValueError, match=r"unknown tile field\(s\) \['max_tiles'\]"):
        base.with_overrides({"max_tiles": 1000})
    assert set(CALL_FIELDS) == {"mode", "size", "overlap", "whole_image"}


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("mode", "yes", "one of auto, on, off"),
        ("size", 111, "at least 112"),
        ("size", 224.0, "whole number"),
        ("size", True, "whole number"),
        ("overlap", -0.1, "from 0 to 0.9"),
        ("overlap", 0.95, "from 0 to 0.9"),
        ("overlap", float("nan"), "from 0 to 0.9"),
        ("whole_image", "yes", "true or false"),
    ],
)
def test_bad_values_are_named(field, value, rule):
    with pytest.raises(ValueError, match=f"tile.{field} must be .*{rule}"):
        TileOptions().with_overrides({field: value})


def test_a_call_carries_its_tiling_only_when_it_has_one():
    plain = ModelCall(task="detection", categories=["car"])
    assert "tile" not in plain.to_dict()  # read alike by a worker before tiling
    tiled = ModelCall(task="detection", categories=["car"], tile={"mode": "on"})
    assert tiled.to_dict()["tile"] == {"mode": "on"}
    assert ModelCall.from_dict(tiled.to_dict()) == tiled
    with pytest.raises(JobSpecError, match=r"call: tile.size must be"):
        ModelCall.from_dict({"task": "detection", "tile": {"size": 8}})
    with pytest.raises(JobSpecError, match="tile must be an object"):
        ModelCall(task="detection", tile="on")


def test_a_result_names_its_tiles():
    result = CallResult(
        key="k", task=Task.DETECTION, predictions=[], tiles=[[0, 0, 112, 112]]
    )
    again = CallResult.from_dict(result.to_dict())
    assert again.tiles == [[0, 0, 112, 112]]
    assert CallResult.from_dict({"task": "detection"}).tiles == []
