"""Hot reload: a serving runtime whose REXLABEL_MODEL is a project's models
directory follows its ``current`` pointer before each chunk. Two copies of the
tiny random model are two runs; they load for real on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from common.model_store import publish, write_card
from worker import jobs
from worker.engines.registry import create_engine


def make_run(models_dir: Path, name: str, model_dir: Path) -> Path:
    """A finished run: the tiny model's files (linked) and a full-model card."""
    run = models_dir / name
    run.mkdir(parents=True)
    for item in Path(model_dir).iterdir():
        (run / item.name).symlink_to(item)
    write_card(run, {"method": "full", "weights_sha256": f"sha-{name}"})
    return run


@pytest.fixture
def models_dir(tmp_path, tiny_model_dir):
    models = tmp_path / "project-7"
    make_run(models, "run-a", tiny_model_dir)
    make_run(models, "run-b", tiny_model_dir)
    publish(models, "run-a")
    return models


@pytest.fixture
def runtime(models_dir, monkeypatch):
    """The runtime ``rexlabel worker`` loads from the settings, on run-a; its
    chunks record which model ran them."""
    monkeypatch.setenv("REXLABEL_MODEL", str(models_dir))
    monkeypatch.setenv("REXLABEL_ENGINE", "transformers")
    monkeypatch.setenv("REXLABEL_DEVICE", "cpu")
    monkeypatch.setenv("SAM_CHECKPOINT", "")
    previous = jobs.install_runtime(None)
    runtime = jobs.load_runtime()
    ran: list[str] = []
    runtime.process = lambda rt, images, generation: ran.append(rt.model_id) or []
    runtime.ran = ran
    loads: list[str] = []
    load = runtime.load_engine
    runtime.load_engine = lambda model: loads.append(model) or load(model)
    runtime.loads = loads
    yield runtime
    jobs.install_runtime(previous)
    runtime.close()


def test_the_serving_model_is_the_run_the_pointer_names(runtime, models_dir):
    assert runtime.models_dir == str(models_dir)
    assert runtime.model_id == str(models_dir / "run-a")
    assert jobs.is_models_dir(str(models_dir))
    assert not jobs.is_models_dir(str(models_dir / "run-a"))


def test_auto_chooses_once_and_a_reload_keeps_the_engine(models_dir, monkeypatch):
    """REXLABEL_ENGINE=auto picks at start-up; a moved pointer reloads with
    the engine it picked, never another kind in the same process."""
    from worker.engines import registry

    monkeypatch.setenv("REXLABEL_MODEL", str(models_dir))
    monkeypatch.setenv("REXLABEL_ENGINE", "auto")
    monkeypatch.setenv("REXLABEL_DEVICE", "cpu")
    monkeypatch.setenv("SAM_CHECKPOINT", "")
    previous = jobs.install_runtime(None)
    try:
        runtime = jobs.load_runtime()
        assert runtime.engine.name == "transformers"  # no GPU here
        asked: list[str] = []
        real = registry.resolve_engine
        monkeypatch.setattr(
            registry,
            "resolve_engine",
            lambda name, *a: asked.append(name) or real(name, *a),
        )
        publish(models_dir, "run-b")
        runtime.run([], {})
        assert asked == ["transformers"]  # not "auto" again
        assert runtime.model_id == str(models_dir / "run-b")
    finally:
        jobs.install_runtime(previous)
        runtime.close()


def test_a_moved_pointer_loads_the_new_run_before_the_chunk(
    runtime, models_dir, caplog
):
    old_engine = runtime.engine
    runtime.run([], {})
    assert runtime.loads == []  # unchanged pointer: nothing loaded
    publish(models_dir, "run-b")
    with caplog.at_level(logging.INFO, logger="worker.jobs"):
        runtime.run([], {})
    assert runtime.ran == [str(models_dir / "run-a"), str(models_dir / "run-b")]
    assert runtime.loads == [str(models_dir / "run-b")]
    assert runtime.engine is not old_engine and old_engine.model is None  # closed
    assert f"{models_dir / 'run-a'} -> {models_dir / 'run-b'}" in caplog.text
    runtime.run([], {})
    assert runtime.loads == [str(models_dir / "run-b")]  # loaded once


def test_a_run_that_fails_to_load_leaves_the_old_model_serving(
    runtime, models_dir, tiny_model_dir, monkeypatch, caplog
):
    broken = models_dir / "run-broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    write_card(broken, {"method": "full"})
    publish(models_dir, "run-broken")
    with caplog.at_level(logging.ERROR, logger="worker.jobs"):
        runtime.run([], {})
    assert runtime.model_id == str(models_dir / "run-a")  # loaded back
    assert runtime.ran == [str(models_dir / "run-a")]
    assert runtime.loads == [str(broken), str(models_dir / "run-a")]
    assert f"cannot load {broken}" in caplog.text
    assert f"keeping {models_dir / 'run-a'}, next try in 300 s" in caplog.text
    runtime.run([], {})
    assert len(runtime.loads) == 2  # not retried before RELOAD_RETRY_S
    monkeypatch.setattr(jobs, "RELOAD_RETRY_S", 0.0)
    runtime._retry_at.clear()  # as if the interval had passed
    publish(models_dir, "run-b")  # a fixed run
    runtime.run([], {})
    assert runtime.model_id == str(models_dir / "run-b")


def test_a_bad_card_is_refused_without_unloading(runtime, models_dir, caplog):
    bad = models_dir / "run-bad-card"
    bad.mkdir()
    write_card(bad, {"method": "lora", "base": str(bad)})  # its own base: a loop
    publish(models_dir, "run-bad-card")
    engine = runtime.engine
    with caplog.at_level(logging.ERROR, logger="worker.jobs"):
        runtime.run([], {})
    assert runtime.engine is engine and runtime.loads == []
    assert "bases loop" in caplog.text


def test_an_unreadable_pointer_is_logged_once_and_serving_goes_on(
    runtime, models_dir, caplog
):
    (models_dir / "current").write_text("../../etc\n")
    with caplog.at_level(logging.ERROR, logger="worker.jobs"):
        runtime.run([], {})
        runtime.run([], {})
    assert runtime.ran == [str(models_dir / "run-a")] * 2
    assert caplog.text.count("model pointer unusable") == 1


def test_create_engine_follows_the_pointer(models_dir):
    engine = create_engine("transformers", str(models_dir), "cpu")
    try:
        assert engine.model_id == str(models_dir / "run-a")
    finally:
        engine.close()


def test_an_engine_of_whole_weights_keeps_its_model_for_an_adapter_run(
    runtime, models_dir, tmp_path, caplog
):
    """A LoRA run published to a vllm (or openai) worker: refused before
    anything is unloaded, and not retried until the pointer moves again."""
    adapter = models_dir / "run-lora"
    adapter.mkdir()
    write_card(
        adapter,
        {"method": "lora", "base": str(models_dir / "run-a"), "weights_sha256": "x"},
    )
    engine = runtime.engine
    engine.name = "vllm"  # what a vLLM engine calls itself
    publish(models_dir, "run-lora")
    with caplog.at_level(logging.ERROR, logger="worker.jobs"):
        runtime.run([], {})
        runtime.run([], {})
    assert runtime.engine is engine and runtime.loads == []  # never unloaded
    assert runtime.ran == [str(models_dir / "run-a")] * 2
    assert caplog.text.count("it is a LoRA adapter") == 1
    assert "merge" in caplog.text
