"""Model readiness: the background loader, and workers' state published in Redis."""

from __future__ import annotations

import pytest

from common.model_state import (
    FAILED,
    LOADING,
    READY,
    LoadReporter,
    ModelLoader,
    ModelNotReady,
    read_states,
    summarize_workers,
)
from tests.backend.jobfuncs import GatedLoad
from tests.backend.redis_helpers import redis_or_skip


def test_a_load_runs_once_in_the_background_and_waiters_get_the_model(caplog):
    load = GatedLoad()
    loader = ModelLoader(load, what="test model")
    with caplog.at_level("INFO", logger="common.model_state"):
        assert loader.start().state == LOADING
        assert loader.start().state == LOADING  # no second load meanwhile
        with pytest.raises(ModelNotReady, match="model still loading"):
            loader.wait(0.05)
        load.release()
        assert loader.wait(30) == "the model"
    state = loader.state()
    assert state.state == READY and state.seconds is not None
    assert load.calls == 1
    loader.start()  # ready: nothing to do
    assert load.calls == 1
    messages = [r.getMessage() for r in caplog.records]
    assert "test model: loading in the background" in messages
    assert any(m.startswith("test model: ready (loaded in ") for m in messages)


def test_a_failed_load_says_why_and_is_retried_only_after_a_while(caplog):
    load = GatedLoad(error=OSError("no such model: nowhere/rex"))
    loader = ModelLoader(load, retry_after=3600)
    load.release()
    with pytest.raises(ModelNotReady) as caught:
        loader.wait(30)
    assert str(caught.value) == (
        "model failed to load: OSError: no such model: nowhere/rex"
    )
    assert loader.state().to_dict()["reason"] == "OSError: no such model: nowhere/rex"
    assert loader.start().state == FAILED and load.calls == 1  # too early to retry
    assert any("failed to load after" in r.getMessage() for r in caplog.records)

    load.error = None
    loader.retry_after = 0  # the retry interval has passed
    assert loader.start().state == LOADING
    assert loader.wait(30) == "the model"
    assert load.calls == 2


def test_workers_publish_loading_then_failed_with_the_reason():
    connection = redis_or_skip()
    with LoadReporter(connection, "w-ok", interval=0.05):
        (published,) = read_states(connection)
        assert published["name"] == "w-ok" and published["state"] == LOADING
    assert read_states(connection) == []  # loaded: RQ's registration says ready

    with pytest.raises(RuntimeError), LoadReporter(connection, "w-bad"):
        raise RuntimeError("CUDA out of memory")
    (published,) = read_states(connection)
    assert published["state"] == FAILED
    assert published["reason"] == "RuntimeError: CUDA out of memory"


def test_the_pool_summary_prefers_ready_then_loading_then_failed():
    failed = {"state": FAILED, "reason": "old", "since": 1.0}
    newer = {"state": FAILED, "reason": "new", "since": 2.0}
    loading = {"state": LOADING, "since": 3.0}
    assert summarize_workers(1, [loading, failed])["state"] == READY
    assert summarize_workers(0, [failed, loading])["state"] == LOADING
    summary = summarize_workers(0, [newer, failed])
    assert summary["state"] == FAILED and summary["reason"] == "new"
    assert summary["failed"] == 2
    assert summarize_workers(0, [])["state"] == "no_workers"
