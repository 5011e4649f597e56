import pytest

from worker.engines.base import GenerationResult, SamplingSettings


def test_defaults_are_upstreams():
    s = SamplingSettings()
    assert (
        s.max_new_tokens,
        s.temperature,
        s.top_p,
        s.top_k,
        s.repetition_penalty,
    ) == (
        4096,
        0.0,
        0.8,
        1,
        1.05,
    )


def test_overrides_validate_names_and_values():
    s = SamplingSettings().with_overrides({"max_new_tokens": 64})
    assert s.max_new_tokens == 64 and s.top_k == 1
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingSettings().with_overrides({"max_tokens": 5})
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings().with_overrides({"top_p": 0})


def test_truncated_follows_finish_reason():
    def result(reason):
        return GenerationResult("", [], [], None, reason, 0, 0)

    assert not result("stop").truncated
    assert result("length").truncated and result("runaway").truncated
