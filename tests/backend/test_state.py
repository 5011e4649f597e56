"""Per-project state in memory, SQLite and a real Redis."""

from __future__ import annotations

import pytest

from backend.state import (
    MemoryStore,
    ProjectState,
    RedisStore,
    SqliteStore,
    StateError,
    make_state,
    open_store,
    project_id,
)
from tests.backend.redis_helpers import redis_or_skip


def test_project_id_from_label_studio_key() -> None:
    assert project_id("1.1795697856") == "1"
    assert project_id(12) == "12"
    assert project_id("7") == "7"
    for bad in (None, "", "abc.123", True, "-1.5"):
        with pytest.raises(StateError, match="project"):
            project_id(bad)


def test_make_state_validates_extra_params() -> None:
    state = make_state("3.17", None, hostname="http://ls", label_config="<View/>")
    assert state.project == "3"
    assert state.extra_params == {}
    assert make_state("3.17", '{"a": 1}').extra_params == {"a": 1}
    assert make_state("3.17", "").extra_params == {}
    with pytest.raises(StateError, match="extra_params"):
        make_state("3.17", "{not json")
    with pytest.raises(StateError, match="extra_params"):
        make_state("3.17", [1, 2])


def test_state_json_round_trip_and_bad_data() -> None:
    state = make_state("5.1", {"prelabel_on_import": True}, hostname="h")
    assert ProjectState.from_json(state.to_json()) == state
    with pytest.raises(StateError, match="unreadable"):
        ProjectState.from_json("[]")


def _exercise(store) -> None:
    assert store.get("9.123") is None
    assert store.extra_params("9.123") == {}
    store.put(make_state("9.123", {"model_score_threshold": 0.4}, label_config="<V/>"))
    # Any key of the same project id finds it.
    assert store.extra_params("9.999") == {"model_score_threshold": 0.4}
    assert store.get(9).label_config == "<V/>"
    store.put(make_state("9.123", {"x": 1}))
    assert store.extra_params(9) == {"x": 1}


def test_memory_store() -> None:
    _exercise(MemoryStore())


def test_sqlite_store_is_shared_between_instances(tmp_path) -> None:
    path = str(tmp_path / "state.sqlite")
    _exercise(SqliteStore(path))
    assert SqliteStore(path).extra_params(9) == {"x": 1}


def test_redis_store() -> None:
    connection = redis_or_skip()
    store = RedisStore(connection, prefix="rexlabel-test:project:")
    _exercise(store)
    assert connection.exists("rexlabel-test:project:9")
    assert RedisStore(connection, prefix="rexlabel-test:project:").extra_params(9) == {
        "x": 1
    }


def test_open_store_picks_the_backend(tmp_path) -> None:
    assert isinstance(open_store(), MemoryStore)
    assert isinstance(open_store(path=str(tmp_path / "s.db")), SqliteStore)
    connection = redis_or_skip()
    assert isinstance(open_store(connection), RedisStore)
