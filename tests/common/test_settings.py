import pytest

from common import settings
from common.settings import SETTINGS, SettingsError


def test_defaults_when_unset():
    values = settings.read_all({})
    assert values["REXLABEL_MODEL"] == "IDEA-Research/Rex-Omni"
    assert values["PORT"] == 9090
    assert values["REDIS_URL"] == ""


def test_aliases_are_read_when_the_main_name_is_unset():
    env = {"LABEL_STUDIO_HOST": "http://ls:8080", "LABEL_STUDIO_ACCESS_TOKEN": "t"}
    assert settings.get("LABEL_STUDIO_URL", env) == "http://ls:8080"
    assert settings.get("LABEL_STUDIO_API_KEY", env) == "t"
    env["LABEL_STUDIO_URL"] = "http://main:8080"
    assert settings.get("LABEL_STUDIO_URL", env) == "http://main:8080"


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"PORT": "ninety"}, "PORT"),
        ({"PORT": "0"}, "PORT"),
        ({"REXLABEL_ENGINE": "onnx"}, "REXLABEL_ENGINE"),
        ({"REXLABEL_MAX_NEW_TOKENS": "-3"}, "REXLABEL_MAX_NEW_TOKENS"),
    ],
)
def test_bad_values_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        settings.read_all(env)


FLOAT_SETTINGS = [s.name for s in SETTINGS if s.type is float]


@pytest.mark.parametrize("name", FLOAT_SETTINGS)
@pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "1e999", " NaN "])
def test_float_settings_refuse_non_finite_values(name, raw):
    # nan passes every minimum/maximum comparison, inf every minimum
    with pytest.raises(SettingsError, match=f"{name}=.*finite number"):
        settings.read_all({name: raw})


def test_float_settings_cover_the_tiling_ones():
    assert {"REXLABEL_TILE_OVERLAP", "REXLABEL_TILE_AUTO_SHRINK"} <= set(FLOAT_SETTINGS)


def test_all_bad_values_are_reported_together():
    with pytest.raises(SettingsError) as info:
        settings.read_all({"PORT": "x", "LOG_FORMAT": "xml"})
    assert "PORT" in str(info.value) and "LOG_FORMAT" in str(info.value)


def test_secrets_are_masked_and_empty_ones_stay_empty():
    values = settings.read_all({"LABEL_STUDIO_API_KEY": "abc", "BASIC_AUTH_PASS": ""})
    shown = settings.masked(values)
    assert shown["LABEL_STUDIO_API_KEY"] == "***"
    assert shown["BASIC_AUTH_PASS"] == ""
    assert shown["REXLABEL_MODEL"] == values["REXLABEL_MODEL"]


def test_every_setting_has_a_reason_and_a_default_of_its_type():
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for s in SETTINGS:
        assert s.reason.strip(), s.name
        assert isinstance(s.default, s.type), s.name


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"LABEL_STUDIO_URL": "http://127.0.0.1:9\\@ls.example"}, "backslash"),
        ({"LABEL_STUDIO_HOST": "http://user@ls.example"}, "user"),
        ({"REXLABEL_ALLOWED_HOSTS": "cdn.example, bad host:x"}, "'bad host:x'"),
    ],
)
def test_unsafe_urls_and_host_entries_stop_start_up(environ, named):
    """Checked when settings are read (every entrypoint reads all first), not
    when the first image loads."""
    with pytest.raises(SettingsError) as caught:
        settings.read_all(environ)
    assert named in str(caught.value)
    assert settings.read_all({"LABEL_STUDIO_URL": "http://ls.example:8080"})
