"""model_version changes exactly when predictions would."""

from __future__ import annotations

import re

from backend import model_version as mv

CONFIG = '<View><Image name="i" value="$i"/></View>'
ENV = {"REXLABEL_MODEL": "/models/rex", "REXLABEL_ENGINE": "transformers"}


def test_same_inputs_same_version_and_readable_shape() -> None:
    a = mv.model_version(CONFIG, {"x": 1}, ENV)
    assert a == mv.model_version(CONFIG, {"x": 1}, dict(ENV))
    assert re.fullmatch(r"rexlabel-[\w.+-]+-[0-9a-f]{12}", a)
    # Surrounding whitespace of the config does not matter.
    assert a == mv.model_version(f"  {CONFIG}\n", {"x": 1}, ENV)


def test_every_prediction_changing_input_changes_it() -> None:
    base = mv.model_version(CONFIG, {}, ENV)
    changed = {
        mv.model_version(CONFIG, {}, {**ENV, "REXLABEL_MODEL": "/models/other"}),
        mv.model_version(CONFIG, {}, {**ENV, "REXLABEL_ENGINE": "vllm"}),
        mv.model_version(CONFIG, {}, {**ENV, "REXLABEL_MAX_NEW_TOKENS": "128"}),
        mv.model_version(CONFIG, {}, {**ENV, "SAM_CHECKPOINT": "/sam_vit_b.pth"}),
        mv.model_version(CONFIG.replace("$i", "$img"), {}, ENV),
        mv.model_version(CONFIG, {"model_score_threshold": 0.5}, ENV),
        mv.model_version(CONFIG, {"model_score_thresholds": {"Car": 0.5}}, ENV),
        mv.model_version(CONFIG, {"model_score_thresholds": {"Car": 0.6}}, ENV),
    }
    assert base not in changed
    assert len(changed) == 8


def test_settings_that_do_not_change_predictions_do_not_change_it() -> None:
    base = mv.model_version(CONFIG, {}, ENV)
    assert base == mv.model_version(CONFIG, {}, {**ENV, "BASIC_AUTH_USER": "ls"})
    assert base == mv.model_version(CONFIG, {}, {**ENV, "PORT": "9999"})


def test_prompt_templates_are_part_of_it(monkeypatch) -> None:
    from converters import prompts

    base = mv.model_version(CONFIG, {}, ENV)
    changed = dict(prompts.PROMPT_TEMPLATES)
    first = next(iter(changed))
    changed[first] = changed[first] + " Please."
    monkeypatch.setattr(prompts, "PROMPT_TEMPLATES", changed)
    mv.prompts_fingerprint.cache_clear()
    try:
        assert mv.model_version(CONFIG, {}, ENV) != base
    finally:
        monkeypatch.undo()
        mv.prompts_fingerprint.cache_clear()
    assert mv.model_version(CONFIG, {}, ENV) == base


def test_engine_settings_change_it_and_blank_system_prompt_is_upstreams() -> None:
    from converters.prompts import SYSTEM_PROMPT

    base = mv.model_version(CONFIG, {}, ENV)
    changed = {
        mv.model_version(CONFIG, {}, {**ENV, "REXLABEL_MIN_PIXELS": "3136"}),
        mv.model_version(CONFIG, {}, {**ENV, "REXLABEL_MAX_PIXELS": "1003520"}),
        mv.model_version(CONFIG, {}, {**ENV, "REXLABEL_SYSTEM_PROMPT": "Be terse"}),
        mv.model_version(CONFIG, {}, {**ENV, "REXLABEL_QUANTIZATION": "awq"}),
    }
    assert base not in changed and len(changed) == 4
    # upstream's values, spelt out or left empty, are the defaults: same version
    same = {**ENV, "REXLABEL_SYSTEM_PROMPT": SYSTEM_PROMPT}
    assert mv.model_version(CONFIG, {}, same) == base
    for name, value in (
        ("REXLABEL_SYSTEM_PROMPT", ""),
        ("REXLABEL_QUANTIZATION", "none"),
    ):
        assert mv.model_version(CONFIG, {}, {**ENV, name: value}) == base
