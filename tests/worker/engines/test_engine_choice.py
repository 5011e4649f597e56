"""REXLABEL_ENGINE=auto: which engine it picks, and that the worker gets it."""

import pytest

from common.settings import setting
from worker.engines import registry
from worker.engines.registry import (
    ENGINE_CHOICES,
    choose_engine,
    create_engine,
    missing_packages,
    resolve_engine,
)

GPU_AND_VLLM = dict(
    device="auto", cuda_visible=True, vllm_installed=True, whole_weights=True
)


def test_auto_is_the_default_and_every_choice_is_known():
    engine = setting("REXLABEL_ENGINE")
    assert engine.default == "auto"
    assert engine.choices == ENGINE_CHOICES


@pytest.mark.parametrize("device", ["auto", "", "cuda", "cuda:0"])
def test_auto_picks_vllm_on_a_gpu_with_vllm_installed(device):
    engine, why = choose_engine(**{**GPU_AND_VLLM, "device": device})
    assert engine == "vllm" and "GPU" in why


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cuda_visible": False}, "no GPU"),
        ({"vllm_installed": False}, "not installed"),
        ({"whole_weights": False}, "LoRA adapter"),
        ({"device": "cuda:1"}, "REXLABEL_DEVICE=cuda:1"),
        ({"device": "cpu"}, "REXLABEL_DEVICE=cpu"),
    ],
)
def test_auto_picks_transformers_otherwise(change, reason):
    engine, why = choose_engine(**{**GPU_AND_VLLM, **change})
    assert engine == "transformers" and reason in why


def test_auto_needs_what_its_fallback_needs():
    assert missing_packages("auto") == missing_packages("transformers")


def test_resolve_reads_this_machine(monkeypatch, tiny_model_dir):
    model = str(tiny_model_dir)
    assert resolve_engine("openai", model, "auto") == "openai"  # named: kept
    monkeypatch.setattr(registry, "cuda_visible", lambda: True)
    monkeypatch.setattr(
        registry.importlib.util,
        "find_spec",
        lambda name, *a: object() if name == "vllm" else None,
    )
    assert resolve_engine("auto", model, "auto") == "vllm"


def test_auto_builds_the_transformers_engine_on_this_cpu(tiny_model_dir, caplog):
    with caplog.at_level("INFO", logger="worker.engines.registry"):
        engine = create_engine("auto", str(tiny_model_dir), "auto")
    try:
        assert engine.name == "transformers"
        assert "auto: transformers engine (no GPU is visible)" in caplog.text
    finally:
        engine.close()
